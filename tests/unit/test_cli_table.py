"""Every command the parser knows is in ``gateway.cli.COMMANDS``, naming a function that exists."""

from __future__ import annotations

import argparse

from gateway.cli import COMMANDS, _command, build_parser


def _parser_commands() -> set[str]:
    [commands] = [
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    return set(commands.choices)


def test_the_parser_and_the_table_name_the_same_commands() -> None:
    assert _parser_commands() == set(COMMANDS)


def test_each_command_resolves_to_a_function() -> None:
    assert all(callable(_command(name)) for name in COMMANDS)
    assert _command("no-such-command") is None

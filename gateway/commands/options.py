"""Options shared by several commands' parsers.

Imported by the parser for every command, so it imports nothing beyond ``argparse``.
"""

from __future__ import annotations

import argparse

ISO_INSTANT_EXAMPLE = "2026-07-01T22:00:00Z"
"""An ISO 8601 instant with a zone, for the help and the errors of options that take one."""


def add_config(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """The ``--config FILE`` option: required unless a ``default`` is given."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        required=default is None,
        help="the gateway's TOML configuration (config/example.toml documents every key)",
    )

"""What the example jobs share: their test-only gates and their argument types.

A gate holds a job in a named state until a file exists, so that a test can strike there
(``gateway/agent/example_job.py``, ``gateway/training/example_torch.py``): after a given step
(``--step-gate``, ``--hold-at-step``), on SIGTERM before the checkpoint is written
(``--checkpoint-gate``), after a checkpoint is loaded before the resume is confirmed
(``--resume-gate``). A real job has none. Standard library only: the numpy example imports it
without torch.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

GATE_POLL_S = 0.01
"""How often a job waiting at a gate looks for its file [s]."""


def number(kind: type[int] | type[float], least: float) -> Callable[[str], int | float]:
    """An argparse type: ``kind`` of the text, at least ``least``."""

    def parse(text: str) -> int | float:
        value = kind(text)
        if not value >= least:
            raise argparse.ArgumentTypeError(f"must be >= {least:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """The test-only gates' options."""
    gates = parser.add_argument_group(
        "test-only gates", "hold the job in a named state until a file exists (none by default)"
    )
    gates.add_argument(
        "--step-gate",
        type=Path,
        metavar="PATH",
        help="after --hold-at-step steps, wait until PATH exists (SIGTERM still checkpoints)",
    )
    gates.add_argument(
        "--hold-at-step",
        type=number(int, 0),
        metavar="K",
        help="the step the --step-gate holds at (default: all steps but the last)",
    )
    gates.add_argument(
        "--checkpoint-gate",
        type=Path,
        metavar="PATH",
        help="on SIGTERM, wait until PATH exists before writing the checkpoint",
    )
    gates.add_argument(
        "--resume-gate",
        type=Path,
        metavar="PATH",
        help="after loading a --resume checkpoint, wait until PATH exists before confirming it",
    )


def check_hold_at_step(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 (argparse's error) unless ``--hold-at-step`` is below ``--steps``."""
    if args.hold_at_step is not None and not args.hold_at_step < args.steps:
        steps, hold_at = args.steps, args.hold_at_step
        parser.error(f"--hold-at-step must be below --steps ({steps}), got {hold_at}")


def hold(
    gate: Path | None,
    stopped: Callable[[], bool] | None,
    holding: str,
    log: logging.Logger,
) -> None:
    """Wait until ``gate`` exists (at once without a gate), or until ``stopped()`` (a signal
    came; never, when ``stopped`` is None); log ``holding`` once if the job has to wait."""
    announced = False
    while gate is not None and not gate.exists():
        if stopped is not None and stopped():
            return
        if not announced:
            log.info("%s until %s exists", holding, gate)
            announced = True
        time.sleep(GATE_POLL_S)

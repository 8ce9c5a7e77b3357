"""Checks of the directories that commands write their files into."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import InputError
from gateway.startup import writable_dir_problem


def check_out_dir(out: str) -> None:
    """InputError naming ``--out`` when it is not (and cannot become) a writable directory."""
    if (problem := writable_dir_problem(Path(out))) is not None:
        raise InputError(f"--out {out}: {problem}")

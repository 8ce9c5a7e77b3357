"""``dr-gateway figures``: the seed paper's findings as PNG figures, each with its CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.commands.paths import check_out_dir
from gateway.errors import GatewayError
from gateway.evaluation.figures import write_paper_figures


def run(args: argparse.Namespace) -> int:
    """Write the figures into ``--out`` and print each file's path; the exit code."""
    evaluation = Path(args.evaluation) if args.evaluation else None
    check_out_dir(args.out)
    try:
        written = write_paper_figures(Path(args.out), evaluation)
    except OSError as exc:
        raise GatewayError(f"figures: cannot write to {args.out}: {exc}") from exc
    for path in written:
        print(path)
    return 0

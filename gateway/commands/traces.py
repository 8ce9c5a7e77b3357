"""``dr-gateway traces build``: the evaluation's renewable traces, site files and MOER trace."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.commands.paths import check_out_dir
from gateway.errors import GatewayError
from gateway.evaluation.trace_build import build


def run(args: argparse.Namespace) -> int:
    """Build the traces into ``--out`` and print each file written; the exit code."""
    check_out_dir(args.out)
    try:
        written = build(args.scenario, Path(args.out))
    except OSError as exc:
        raise GatewayError(f"traces build: cannot write to {args.out}: {exc}") from exc
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1000:.1f} kB)")
    return 0

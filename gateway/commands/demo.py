"""``dr-gateway demo`` and ``dr-gateway campaign``: the daemon against simulated partners.

The simulated utility (VTN), site controllers and renewable traces live in ``simulators/``;
these two commands are the only place in ``gateway/`` that imports them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.errors import InputError
from simulators.campaign import main_campaign
from simulators.demo import run_demo


def run(args: argparse.Namespace) -> int:
    """Run ``dr-gateway demo`` as parsed into ``args``; the exit code."""
    return run_demo(
        Path(args.config),
        Path(args.scenario),
        hours=args.hours,
        speed=args.speed,
        keep_db=args.keep_db,
    )


def run_campaign(args: argparse.Namespace) -> int:
    """Run ``dr-gateway campaign`` as parsed into ``args``; the exit code."""
    if args.json is not None and not Path(args.json).absolute().parent.is_dir():
        raise InputError(f"--json {args.json}: the directory does not exist")
    return main_campaign(
        Path(args.config),
        days=args.days,
        events=args.events,
        sites=args.sites,
        seed=args.seed,
        database=args.database,
        json_path=None if args.json is None else Path(args.json),
    )

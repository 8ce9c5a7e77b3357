"""``dr-gateway demo`` and ``dr-gateway campaign``: the daemon against simulated partners.

The simulated utility (VTN), site controllers and renewable traces live in ``simulators/``;
these two commands are the only place in ``gateway/`` that imports them. ``demo --slurm``
(:mod:`simulators.demo_slurm`) puts the daemon in front of real Slurm clusters and site agents
instead, with only the sun simulated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.errors import InputError

DEFAULTS = {
    False: ("config/demo.toml", "config/demo-scenario.toml"),
    True: ("config/demo-slurm.toml", "config/demo-slurm-scenario.toml"),
}
"""The configuration and scenario files of the demo, and of ``demo --slurm``."""
EXIT_NO_SLURM = 2


def run(args: argparse.Namespace) -> int:
    """Run ``dr-gateway demo`` (or ``demo --slurm``) as parsed into ``args``; the exit code.

    The simulators are imported only now, and ``--slurm`` says at once, before it imports
    them, when Slurm cannot run here."""
    config, scenario = DEFAULTS[bool(args.slurm)]
    config_path, scenario_path = Path(args.config or config), Path(args.scenario or scenario)
    if not args.slurm:
        from simulators.demo import run_demo

        return run_demo(
            config_path, scenario_path, hours=args.hours, speed=args.speed, keep_db=args.keep_db
        )
    from simulators.slurm_needs import slurm_problem

    if (problem := slurm_problem()) is not None:
        print(f"demo-slurm: {problem}", file=sys.stderr)
        return EXIT_NO_SLURM
    from simulators.demo_slurm import run_slurm_demo

    return run_slurm_demo(
        config_path, scenario_path, hours=args.hours, speed=args.speed, keep_db=args.keep_db
    )


def run_campaign(args: argparse.Namespace) -> int:
    """Run ``dr-gateway campaign`` as parsed into ``args``; the exit code."""
    from simulators.campaign import main_campaign

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

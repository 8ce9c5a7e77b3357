"""Soak: a week of a 100-site fleet under the campaign's events, invariants after every round.

Run: .venv/bin/python -m benchmarks.soak [--days 7] [--sites 100] [--events 50] [--busy N]
     [--step-s 900] [--database URL] [--json OUT]

The campaign engine (:mod:`simulators.campaign`) with a fleet synthesised from the bundled
traces (``simulators.campaign_fleet.load_fleet``: the six default sites, then copies with
shifted traces and scaled sizes). ``--busy N`` starts N busy-loop processes for the whole run
(and stops them) to load the CPU; the stepped clock keeps the results independent of it.

Checks and prints: invariant checks and breaks; nothing lost or duplicated (every job listed
at exactly one site at the end, or listed finished there and dropped since; no ledger interval
of a site twice); the answers to a version the VTN received again (changes of plan and
redistributions, rules 12 and 62); resident memory per simulated day and whether it stayed
flat (the last day within 10 % of the first, after the first day's warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
from pathlib import Path

from benchmarks.campaign import (
    add_campaign_options,
    config_of,
    fresh_database,
    quiet_logs,
)
from simulators.campaign import prepare_database, run_campaign, run_summary
from simulators.campaign_report import format_result, write_json

FLAT_GROWTH = 0.10
"""Memory counts as flat when the last day's RSS is within this share of the first's [-]."""


def _spin() -> None:
    while True:
        pass


def start_busy(count: int) -> list[multiprocessing.Process]:
    processes = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for process in processes:
        process.start()
    return processes


def stop_busy(processes: list[multiprocessing.Process]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)


def memory_verdict(rss_mb_by_day: list[float]) -> str:
    """``flat`` or ``growing``, with the figures [MB]."""
    if len(rss_mb_by_day) < 2:
        return f"too short to judge ({rss_mb_by_day})"
    first, last = rss_mb_by_day[0], rss_mb_by_day[-1]
    growth = (last - first) / first if first else 0.0
    verdict = "flat" if growth <= FLAT_GROWTH else "growing"
    return (
        f"{verdict}: {first:.0f} MB after day 1, {last:.0f} MB at the end ({100 * growth:+.1f} %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_campaign_options(parser, days=7.0, events=50, sites=100)
    parser.add_argument("--busy", type=int, default=0, metavar="N", help="busy-loop processes")
    args = parser.parse_args()
    quiet_logs()
    busy = start_busy(args.busy)
    try:
        with fresh_database(args.database) as url:
            config = config_of(args, url)
            prepare_database(url)
            print(
                f"soak: {config.days:g} days, {config.sites} sites, {config.events} events, "
                f"steps of {config.step_s:g} s, {args.busy} busy processes",
                flush=True,
            )
            result = asyncio.run(run_campaign(config, progress=lambda s: print(s, flush=True)))
    finally:
        stop_busy(busy)
    print(format_result(result), end="")
    summary = run_summary(result)
    stats = result.stats
    lost = result.jobs_not_at_one_site
    print(
        f"\nsoak: wall {summary['wall_s']:.0f} s; rounds {stats.rounds}, invariant checks "
        f"{stats.invariant_checks}, breaks {len(stats.violations)}"
    )
    print(
        f"  jobs {len(lost)} not at exactly one site of {stats.jobs_arrived - stats.jobs_rejected}"
    )
    print(f"  duplicate ledger intervals {result.ledger_duplicates}")
    print(
        f"  answers to a version sent again {result.repeated_answers} "
        "(changes of plan and redistributions, rules 12 and 62: not duplicates)"
    )
    print(f"  memory per day [MB]: {' '.join(f'{m:.0f}' for m in stats.rss_mb_by_day)}")
    print(f"  memory: {memory_verdict(stats.rss_mb_by_day)}")
    for violation in stats.violations[:10]:
        print(f"  invariant: {violation}")
    for job in lost[:10]:
        print(f"  misplaced: {job}")
    if args.json:
        write_json(result, Path(args.json))


if __name__ == "__main__":
    main()

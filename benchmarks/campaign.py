"""Benchmark: a blind campaign of 200+ randomised events over 30+ simulated days.

Run: .venv/bin/python -m benchmarks.campaign [--days 30] [--events 200] [--sites 6]
     [--seed 1] [--step-s 900] [--plan-interval-s 900] [--database URL] [--json OUT]

The engine of ``dr-gateway campaign`` (:mod:`simulators.campaign`): the real daemon
in-process, a real openleadr VTN and simulated site controllers on loopback, the bundled
renewable traces, a stepped clock (results do not depend on CPU speed; the wall time does).
The database is new: a temporary SQLite file by default; with ``--database
postgresql+psycopg://.../NAME`` a new database is created on that server and dropped at the
end. Prints the wall time, the campaign's figures and one line per event.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from simulators.campaign import CampaignConfig, prepare_database, run_campaign, run_summary
from simulators.campaign_report import format_result, write_json


@contextmanager
def fresh_database(url: str | None) -> Iterator[str]:
    """A new, empty database: a temporary SQLite file for None, else a database created on
    the PostgreSQL server of ``url`` (dropped afterwards) or the SQLite file named."""
    if url is None:
        with tempfile.TemporaryDirectory(prefix="campaign-") as folder:
            yield f"sqlite:///{Path(folder) / 'campaign.db'}"
        return
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        yield url
        return
    name = f"drgw_campaign_{uuid.uuid4().hex[:10]}"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def add_campaign_options(
    parser: argparse.ArgumentParser, days: float, events: int, sites: int
) -> None:
    parser.add_argument("--days", type=float, default=days, help=f"simulated days ({days:g})")
    parser.add_argument("--events", type=int, default=events, help=f"events ({events})")
    parser.add_argument("--sites", type=int, default=sites, help=f"sites ({sites})")
    parser.add_argument("--seed", type=int, default=1, help="seed (1)")
    parser.add_argument("--step-s", type=float, default=900.0, help="simulated s per step (900)")
    parser.add_argument(
        "--plan-interval-s", type=float, default=900.0, help="simulated s between plans (900)"
    )
    parser.add_argument("--database", metavar="URL", help="SQLite file or PostgreSQL server URL")
    parser.add_argument("--json", metavar="OUT", help="write the result as JSON")


def config_of(args: argparse.Namespace, database_url: str) -> CampaignConfig:
    return CampaignConfig(
        days=args.days,
        events=args.events,
        sites=args.sites,
        seed=args.seed,
        step_s=args.step_s,
        plan_interval_s=args.plan_interval_s,
        database_url=database_url,
    )


def quiet_logs() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("openleadr").setLevel(logging.ERROR)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_campaign_options(parser, days=30.0, events=200, sites=6)
    args = parser.parse_args()
    quiet_logs()
    with fresh_database(args.database) as url:
        config = config_of(args, url)
        prepare_database(url)
        backend = make_url(url).get_backend_name()
        print(
            f"campaign benchmark: {config.events} events, {config.days:g} days, "
            f"{config.sites} sites, steps of {config.step_s:g} s, {backend}",
            flush=True,
        )
        result = asyncio.run(run_campaign(config, progress=lambda line: print(line, flush=True)))
    print(format_result(result), end="")
    summary = run_summary(result)
    print(
        f"\nwall {summary['wall_s']:.0f} s for {summary['days']:g} simulated days "
        f"({summary['rounds']} rounds, {summary['wall_s'] / max(1, summary['rounds']):.3f} s "
        "per round, answer waits included)"
    )
    if args.json:
        write_json(result, Path(args.json))


if __name__ == "__main__":
    main()

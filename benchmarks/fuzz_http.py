"""Benchmark: schemathesis against the site agent, the simulated site controller and the
dashboard, at least ``--requests`` fuzzed requests each.

Run: PYTHONPATH=. .venv/bin/python -m benchmarks.fuzz_http [--requests N] [--seed S]
     [--examples-per-round N] [--servers agent,simulator,web] [--json]

Each server runs for real on loopback (an OS-assigned port): the agent as
``gateway.agent.server.start_agent_server`` serves it for ``dr-gateway site-agent`` (with a data
directory of its own, running the short example job when a fuzzed submission is accepted), the
simulator as ``simulators.site_controller.start_site_server``, the dashboard as the daemon's
``WebServer`` over a database holding sites, jobs, migrations and events. Requests are drawn from
the OpenAPI documents (``docs/site-api.openapi.yaml``, ``docs/web-api.openapi.yaml``) in
schemathesis' positive and negative modes, with the right token, none, a wrong one, a non-ASCII
one, a malformed header and (dashboard) cookie and query tokens (``simulators/http_fuzz.py``).

Prints, per server: requests sent, 5xx answers, answers the document does not allow (schema
violations), tracebacks and ERROR records in the process's log (at DEBUG level, so a traceback
logged at any level counts), wall time, and the answers by status. The acceptance of issue 12 is
0 5xx and 0 violations for each server.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from simulators.http_fuzz import (
    FuzzResult,
    LogWatch,
    ServerThread,
    Starter,
    fuzz,
    start_agent,
    start_simulator,
    start_web,
)

SERVERS = ("agent", "simulator", "web")


def _starter(server: str, work_dir: Path) -> Starter:
    if server == "agent":
        return start_agent(work_dir / "agent")
    if server == "simulator":
        return start_simulator()
    return start_web(work_dir / "web.db")


def run(server: str, requests_wanted: int, seed: int, examples_per_round: int) -> FuzzResult:
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{server}-") as work:
        watch = LogWatch()
        with watch.installed(), ServerThread(_starter(server, Path(work))) as running:
            return fuzz(
                server,
                running.url,
                requests_wanted=requests_wanted,
                seed=seed,
                examples_per_round=examples_per_round,
                log_watch=watch,
            )


def _as_json(result: FuzzResult) -> dict[str, object]:
    return {
        "server": result.server,
        "requests": result.requests,
        "server_errors": result.server_errors,
        "schema_violations": result.violations,
        "tracebacks": result.tracebacks,
        "error_records": result.errors_logged,
        "wall_s": round(result.wall_s, 3),
        "statuses": {str(status): n for status, n in sorted(result.statuses.items())},
        "problems": result.problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="at least this many per server")
    parser.add_argument("--seed", type=int, default=12, help="hypothesis seed")
    parser.add_argument(
        "--examples-per-round",
        type=int,
        default=25,
        help="cases drawn per operation and mode before the next round (a new seed)",
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        parser.error(f"--servers: unknown {sorted(unknown)}; expected some of {SERVERS}")
    logging.getLogger().setLevel(logging.DEBUG)
    results = []
    for server in servers:
        result = run(server, args.requests, args.seed, args.examples_per_round)
        results.append(result)
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(result.statuses.items()))
        print(
            f"{server:9s} requests {result.requests:5d}  5xx {result.server_errors}  "
            f"schema violations {result.violations}  tracebacks {result.tracebacks}  "
            f"error records {result.errors_logged}  wall {result.wall_s:6.1f} s  "
            f"statuses {statuses}",
            flush=True,
        )
        for problem in result.problems:
            print(f"    {problem}")
    if args.json:
        print(json.dumps([_as_json(r) for r in results], indent=2))
    failed = any(r.server_errors or r.violations for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

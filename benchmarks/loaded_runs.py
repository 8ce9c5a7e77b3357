"""Run a test layer several times in a row on a loaded machine: no test may count on quiet.

Starts ``--busy`` processes that each spin one CPU at full speed, then runs
``pytest -q -n WORKERS PATH`` ``--runs`` times in a row (a fresh pytest each time) and prints,
for each run, its wall time, the machine's load average and pytest's summary line; at the end
how many runs passed. The busy processes are stopped however the runs end. Exit status 0 when
every run passed, 1 otherwise.

    .venv/bin/python -m benchmarks.loaded_runs                       # tests/system, 5 runs, 2 busy
    .venv/bin/python -m benchmarks.loaded_runs --runs 1 tests/integration

Each run's full output is kept in ``--log-dir`` (default: a new temporary directory) as
``run-N.log``. PostgreSQL cases need ``DR_GATEWAY_TEST_PG_URL`` as for ``make test``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|error).*) in [\d.]+s")


def _spin() -> None:
    """Keep one CPU busy until terminated."""
    while True:
        pass


def _summary(output: str) -> str:
    """pytest's last summary line ("N passed, M failed ..."), or a note that there was none."""
    lines = [m.group(1) for m in map(SUMMARY.match, output.splitlines()) if m]
    return lines[-1] if lines else "no pytest summary (see the log)"


def run_layer(path: str, workers: int, log_path: Path) -> tuple[bool, float, str]:
    """One pytest run of ``path``; (passed, wall time [s], summary line)."""
    command = [sys.executable, "-m", "pytest", "-q", "-n", str(workers), "-p", "no:cacheprovider"]
    started = time.monotonic()
    with log_path.open("w") as log:
        code = subprocess.call([*command, path], stdout=log, stderr=subprocess.STDOUT)
    wall_s = time.monotonic() - started
    return code == 0, wall_s, _summary(log_path.read_text(errors="replace"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loaded_runs", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("path", nargs="?", default="tests/system", help="tests to run")
    parser.add_argument("--runs", type=int, default=5, help="runs in a row (default 5)")
    parser.add_argument("--busy", type=int, default=2, help="busy processes (default 2)")
    parser.add_argument("--workers", type=int, default=4, help="pytest-xdist workers (4)")
    parser.add_argument("--log-dir", type=Path, default=None, help="where run-N.log go")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.busy < 0 or args.workers < 1:
        parser.error("--runs and --workers must be at least 1, --busy at least 0")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="loaded-runs-"))
    log_dir.mkdir(parents=True, exist_ok=True)

    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for process in busy:
        process.start()
    print(f"{args.path}: {args.runs} runs, {args.busy} busy processes, -n {args.workers}; "
          f"logs in {log_dir}", flush=True)  # fmt: skip
    passed = 0
    try:
        for n in range(1, args.runs + 1):
            ok, wall_s, summary = run_layer(args.path, args.workers, log_dir / f"run-{n}.log")
            passed += ok
            load = os.getloadavg()[0]
            print(f"run {n}: {'passed' if ok else 'FAILED'}  wall {wall_s:7.1f} s  "
                  f"load {load:5.2f}  {summary}", flush=True)  # fmt: skip
    finally:
        for process in busy:
            process.terminate()
        for process in busy:
            process.join()
    print(f"{passed} of {args.runs} runs passed")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: ``dr-gateway`` on mutated configuration, sites, traces, jobs and carbon files.

Run: .venv/bin/python -m benchmarks.fuzz_files [--files-per-kind N] [--subprocesses N]
     [--seed S] [--dir DIR] [--json OUT]

Writes ``--files-per-kind`` seeded mutants (``simulators/file_mutations.py``: type swaps,
NaN, infinity, negative and huge numbers, removed, renamed and repeated keys and tables,
duplicate rows, deep nesting, byte flips, truncation, non-UTF-8, NUL, noise, gzip damage, the
file missing or a directory) of each shipped example input and runs the command that reads
it (``simulators/file_fuzz.py``):

- config: ``dr-gateway run --check --config FILE`` (config/example.toml)
- agent: ``dr-gateway site-agent --check --config FILE`` (config/site-agent.example.toml)
- sites, traces, jobs: ``dr-gateway evaluate --sites ... --traces ... --jobs ...`` with the
  bundled sites, two days of the bundled traces and three jobs, one of them mutated
- carbon: ``dr-gateway carbon load --config C FILE`` into a SQLite database

Every file runs in this process through ``gateway.cli.main``; then a seeded sample of
``--subprocesses`` of them runs again as real ``dr-gateway`` processes, to show their exit
codes and that their standard error holds no traceback. Prints per kind: files, exit 0,
exit 2, other exits, tracebacks (an exception escaping ``main``, or "Traceback" on standard
error), errors that name no file of the command line, and wall time. Acceptance (issue 12):
exit 0 or 2 only, no traceback, a file named in every error; the benchmark exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simulators.file_fuzz import (
    KINDS,
    Inputs,
    Kind,
    Outcome,
    command,
    mutant_files,
    run_main,
    write_inputs,
)

SUBPROCESS_TIMEOUT_S = 120.0
"""Hang guard of one ``dr-gateway`` process [s]; a run that reaches it counts as a failure."""


@dataclass
class Tally:
    """The outcomes of one kind of file."""

    files: int = 0
    exit_0: int = 0
    exit_2: int = 0
    other_exits: int = 0
    tracebacks: int = 0
    unnamed_errors: int = 0
    naming_the_mutant: int = 0
    """Errors that name the mutated file itself (the others name another file of the
    command line, e.g. the traces file when a mutated sites file renames a site)."""
    wall_s: float = 0.0
    examples: list[str] = field(default_factory=list)

    def add(self, what: str, outcome: Outcome, mutant: Path, files: Sequence[Path]) -> None:
        self.files += 1
        traceback = outcome.traceback is not None or "Traceback (most recent" in outcome.stderr
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("dr-gateway:")]
        problem = None
        if traceback:
            self.tracebacks += 1
            problem = (outcome.traceback or outcome.stderr).strip().splitlines()[-1]
        elif outcome.exit_code == 0:
            self.exit_0 += 1
        elif outcome.exit_code == 2:
            self.exit_2 += 1
            if len(errors) != 1 or not any(str(f) in errors[0] for f in files):
                self.unnamed_errors += 1
                problem = f"error names no file: {outcome.stderr.strip()[-300:]}"
            elif str(mutant) in errors[0]:
                self.naming_the_mutant += 1
        else:
            self.other_exits += 1
            problem = f"exit {outcome.exit_code}: {outcome.stderr.strip()[-300:]}"
        if problem is not None and len(self.examples) < 5:
            self.examples.append(f"{mutant.name} ({what}): {problem}")

    @property
    def accepted(self) -> bool:
        return not (self.other_exits or self.tracebacks or self.unnamed_errors)


def _files_of(inputs: Inputs, mutant: Path) -> list[Path]:
    return [mutant, inputs.sites, inputs.traces, inputs.jobs, inputs.carbon_config]


def _dr_gateway() -> list[str]:
    """The installed ``dr-gateway`` script beside this interpreter, else ``-m gateway.cli``."""
    script = Path(sys.executable).parent / "dr-gateway"
    if script.exists():
        return [str(script)]
    found = shutil.which("dr-gateway")
    return [found] if found else [sys.executable, "-m", "gateway.cli"]


def _run_process(argv: Sequence[str], cwd: Path) -> tuple[Outcome, float]:
    """The outcome of one ``dr-gateway`` process and its wall time [s]."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [*_dr_gateway(), *argv],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        outcome = Outcome(None, f"no exit within {SUBPROCESS_TIMEOUT_S:g} s")
    else:
        outcome = Outcome(done.returncode, done.stderr)
    return outcome, time.perf_counter() - started


def _table(title: str, tallies: dict[str, Tally]) -> str:
    header = (
        f"{title:<12} {'files':>6} {'exit 0':>7} {'exit 2':>7} {'other':>6} "
        f"{'tracebacks':>10} {'unnamed':>8} {'wall s':>7}"
    )
    rows = [header, "-" * len(header)]
    total = Tally()
    for kind, tally in tallies.items():
        rows.append(_row(kind, tally))
        for name in ("files", "exit_0", "exit_2", "other_exits", "tracebacks", "unnamed_errors"):
            setattr(total, name, getattr(total, name) + getattr(tally, name))
        total.wall_s += tally.wall_s
    rows.append(_row("TOTAL", total))
    return "\n".join(rows)


def _row(name: str, t: Tally) -> str:
    return (
        f"{name:<12} {t.files:>6} {t.exit_0:>7} {t.exit_2:>7} {t.other_exits:>6} "
        f"{t.tracebacks:>10} {t.unnamed_errors:>8} {t.wall_s:>7.1f}"
    )


def run(files_per_kind: int, subprocesses: int, seed: int, work_dir: Path) -> dict[str, object]:
    inputs = write_inputs(work_dir)
    os.chdir(work_dir)  # relative paths a mutant may name stay inside the work directory
    in_process: dict[str, Tally] = {}
    runs: list[tuple[Kind, str, Path]] = []
    for kind in KINDS:
        tally = in_process.setdefault(kind, Tally())
        started = time.perf_counter()
        for mutant, path in mutant_files(inputs, kind, seed, files_per_kind):
            tally.add(
                mutant.what, run_main(command(inputs, kind, path)), path, _files_of(inputs, path)
            )
            runs.append((kind, mutant.what, path))
        tally.wall_s = time.perf_counter() - started
    print(_table("in process", in_process), flush=True)

    sample = random.Random(seed).sample(runs, min(subprocesses, len(runs)))
    as_processes: dict[str, Tally] = {kind: Tally() for kind in KINDS}
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(
            pool.map(lambda run: _run_process(command(inputs, run[0], run[2]), work_dir), sample)
        )
    wall_s = time.perf_counter() - started
    for (kind, what, path), (outcome, process_s) in zip(sample, outcomes, strict=True):
        as_processes[kind].add(what, outcome, path, _files_of(inputs, path))
        as_processes[kind].wall_s += process_s
    print()
    print(_table("processes", as_processes))
    print(f"(wall s: each process's own, summed; two at a time, {wall_s:.1f} s elapsed)")

    accepted = all(t.accepted for t in [*in_process.values(), *as_processes.values()])
    named = sum(t.naming_the_mutant for t in in_process.values())
    errors = sum(t.exit_2 for t in in_process.values())
    print(
        f"\n{errors} errors in process, {named} of them naming the mutated file itself and the "
        "rest another file of the command line"
    )
    for kind, tally in [*in_process.items(), *as_processes.items()]:
        for example in tally.examples:
            print(f"  {kind}: {example}")
    print(f"acceptance (exit 0 or 2 only, no traceback, a file in every error): {accepted}")
    return {
        "seed": seed,
        "files_per_kind": files_per_kind,
        "in_process": {kind: asdict(t) for kind, t in in_process.items()},
        "processes": {kind: asdict(t) for kind, t in as_processes.items()},
        "accepted": accepted,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fuzz_files",
        description="dr-gateway on seeded mutants of every kind of input file (issue 12).",
    )
    parser.add_argument(
        "--files-per-kind",
        type=int,
        default=200,
        help=f"mutants of each of the {len(KINDS)} kinds ({', '.join(KINDS)}) (default 200)",
    )
    parser.add_argument(
        "--subprocesses",
        type=int,
        default=50,
        help="of them, how many also run as dr-gateway processes (default 50)",
    )
    parser.add_argument("--seed", type=int, default=12, help="seed of the mutants (default 12)")
    parser.add_argument("--dir", metavar="DIR", help="work directory (default: a temporary one)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.dir is not None:
        result = run(args.files_per_kind, args.subprocesses, args.seed, Path(args.dir).absolute())
    else:
        with tempfile.TemporaryDirectory(prefix="fuzz-files-") as directory:
            result = run(args.files_per_kind, args.subprocesses, args.seed, Path(directory))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if result["accepted"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run ``dr-gateway`` on mutated input files and judge the outcome.

:func:`write_inputs` writes a set of valid inputs (the shipped example configurations, the
bundled sites, a day of the bundled traces, a few jobs, a day of carbon intensity) into a work
directory; :func:`command` is the command line that reads one kind of them; :func:`run_main`
runs it in this process through :func:`gateway.cli.main` and :func:`judge` says whether
the outcome is acceptable: exit 0, or exit 2 with one line on standard error that names a
file of the command line, and never an exception escaping ``main``. The fuzz test and
``benchmarks/fuzz_files.py`` use them with :mod:`simulators.file_mutations`.

Commands that serve (``run``, ``site-agent``) run with ``--check``: everything up to and
including loading and checking the configuration, nothing served.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from simulators.file_mutations import Mutant, Syntax, mutants

ROOT = Path(__file__).resolve().parent.parent
Kind = Literal["config", "agent", "sites", "traces", "jobs", "carbon"]
KINDS: tuple[Kind, ...] = ("config", "agent", "sites", "traces", "jobs", "carbon")
SYNTAX: dict[Kind, Syntax] = {
    "config": "toml",
    "agent": "toml",
    "sites": "toml",
    "traces": "csv",
    "jobs": "csv",
    "carbon": "csv",
}
GZIPPED: tuple[Kind, ...] = ("traces", "jobs")
"""Kinds whose readers also take gzip (a name ending in ``.gz``): every other mutant is."""
TRACE_ROWS = 49
"""Hourly rows of the bundled traces the inputs keep: two days."""

_JOBS = """job_id,submit_at,gpus,power_kw,checkpoint_gb,work_gpu_h,site_id,migratable
resnet50-a,2001-01-01T01:00:00Z,1,0.58,1.0,30,tucson-az,true
gpt-406m-a,2001-01-01T01:30:00Z,2,1.28,4.88,40,,true
gpt-1.4b-a,2001-01-01T04:00:00+02:00,8,5.4,17.0,160,,false
"""


@dataclass(frozen=True)
class Inputs:
    """Valid input files of every kind, in ``work_dir``."""

    work_dir: Path
    config: Path
    agent: Path
    sites: Path
    traces: Path
    jobs: Path
    carbon: Path
    carbon_config: Path
    """The configuration ``carbon load`` runs with (its database in ``work_dir``)."""

    def path(self, kind: Kind) -> Path:
        path: Path = getattr(self, kind)
        return path


def write_inputs(work_dir: Path) -> Inputs:
    """Write the valid inputs into ``work_dir`` (created); relative paths in them (the
    agent's ``data_dir``, the example's database) are inside it."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config_dir = work_dir / "config"
    config_dir.mkdir(exist_ok=True)
    example = (ROOT / "config" / "example.toml").read_text(encoding="utf-8")
    database = (work_dir / "gateway.db").as_posix()
    config = config_dir / "example.toml"
    config.write_text(
        example.replace('url = "sqlite:///dr-gateway.db"', f'url = "sqlite:///{database}"'),
        encoding="utf-8",
    )
    agent = config_dir / "site-agent.toml"
    agent.write_bytes((ROOT / "config" / "site-agent.example.toml").read_bytes())
    sites = work_dir / "sites.toml"
    sites.write_bytes((ROOT / "data" / "traces" / "default-sites.toml").read_bytes())
    with gzip.open(ROOT / "data" / "traces" / "default-traces.csv.gz", "rt") as stream:
        rows = [next(stream) for _ in range(TRACE_ROWS + 1)]
    traces = work_dir / "traces.csv"
    traces.write_text("".join(rows), encoding="utf-8")
    jobs = work_dir / "jobs.csv"
    jobs.write_text(_JOBS, encoding="utf-8")
    carbon = work_dir / "carbon.csv"
    carbon.write_text(
        "start_at,end_at,g_co2_per_kwh,site_id\n"
        + "".join(
            f"2026-06-01T{h:02d}:00:00Z,2026-06-01T{h + 1:02d}:00:00Z,{300 + 5 * h},"
            f"{'site-a' if h % 2 else ''}\n"
            for h in range(23)
        ),
        encoding="utf-8",
    )
    carbon_config = work_dir / "carbon-gateway.toml"
    carbon_config.write_text(
        f'[database]\nurl = "sqlite:///{(work_dir / "carbon.db").as_posix()}"\n\n'
        '[[site]]\nid = "site-a"\ngpus_total = 4\nit_power_max_kw = 3.0\n'
        'wan_bandwidth_gbps = 10.0\ncontroller_url = "http://127.0.0.1:8470/"\n'
        'controller_token = "change-me-site-a-token"\n',
        encoding="utf-8",
    )
    return Inputs(work_dir, config, agent, sites, traces, jobs, carbon, carbon_config)


def command(inputs: Inputs, kind: Kind, path: Path) -> list[str]:
    """The ``dr-gateway`` arguments that read ``path`` as the input of ``kind``."""
    if kind == "config":
        return ["run", "--check", "--config", str(path)]
    if kind == "agent":
        return ["site-agent", "--check", "--config", str(path)]
    if kind == "carbon":
        return ["carbon", "load", "--config", str(inputs.carbon_config), str(path)]
    files = {"sites": inputs.sites, "traces": inputs.traces, "jobs": inputs.jobs}
    files[kind] = path
    return [
        "evaluate",
        "--sites",
        str(files["sites"]),
        "--traces",
        str(files["traces"]),
        "--jobs",
        str(files["jobs"]),
        "--policies",
        "static",
        "--step-min",
        "60",
    ]


def mutant_files(
    inputs: Inputs, kind: Kind, seed: int, count: int
) -> Iterator[tuple[Mutant, Path]]:
    """Write ``count`` seeded mutants of the valid input of ``kind`` into
    ``work_dir/mutants/KIND/`` (one at a time, as they are consumed) and yield each with its
    path; for :data:`GZIPPED` kinds every other one is gzipped."""
    original = inputs.path(kind)
    out_dir = inputs.work_dir / "mutants" / kind
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = mutants(SYNTAX[kind], original.read_bytes(), seed, count)
    packed = mutants(SYNTAX[kind], original.read_bytes(), seed, count, gz=True)
    for i, mutant in enumerate(plain):
        gz = kind in GZIPPED and i % 2 == 1
        chosen = next(packed) if gz else mutant
        path = out_dir / f"{i:05d}{original.suffix}{'.gz' if gz else ''}"
        yield chosen, chosen.write(path)


@dataclass(frozen=True)
class Outcome:
    """What one command did: its exit code (None when an exception escaped ``main``), its
    standard error, and the escaped exception's traceback."""

    exit_code: int | None
    stderr: str
    traceback: str | None = None


def run_main(argv: Sequence[str]) -> Outcome:
    """``gateway.cli.main(argv)`` in this process, standard output discarded and standard
    error (log lines included) captured."""
    from gateway.cli import main

    _route_logging_to_stderr()
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code: int | None = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:  # an escaped exception is the finding; record it
            return Outcome(None, err.getvalue(), traceback.format_exc())
    return Outcome(code, err.getvalue())


class _CurrentStderr(io.TextIOBase):
    """Writes to whatever ``sys.stderr`` is at the time (a redirected one included)."""

    def write(self, text: str) -> int:
        import sys

        stream: TextIO = sys.stderr
        return stream.write(text)


def _route_logging_to_stderr() -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_fuzz_route", False) for h in root.handlers):
        handler = logging.StreamHandler(_CurrentStderr())
        handler._fuzz_route = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


def judge(outcome: Outcome, files: Sequence[Path]) -> str | None:
    """Why ``outcome`` is not acceptable, or None: exit 0, or exit 2 whose error line names
    one of ``files``; never an escaped exception, another exit code or a traceback."""
    if outcome.traceback is not None:
        return "exception escaped: " + outcome.traceback.strip().splitlines()[-1]
    if "Traceback (most recent call last)" in outcome.stderr:
        return "traceback on standard error"
    if outcome.exit_code == 0:
        return None
    if outcome.exit_code != 2:
        return f"exit {outcome.exit_code}: {outcome.stderr.strip()[-300:]}"
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("dr-gateway: ")]
    if len(errors) != 1:
        return f"expected one error line, got {len(errors)}: {outcome.stderr.strip()[-300:]}"
    if not any(str(file) in errors[0] for file in files):
        return f"the error names no file: {errors[0]}"
    return None

"""Benchmark: the pause of a PyTorch job migrated mid-training between two Slurm clusters.

Run: PYTHONPATH=. .venv/bin/python -m benchmarks.slurm_migration [--width 1024] [--steps 150]
     [--bandwidth-gbps 1.0] [--runs 3] [--poll-s S] [--round-s 0.05]

Two real Slurm 22.05 clusters (``east`` and ``west``, one node of 2 GPUs each,
:mod:`simulators.slurm_cluster`) run under a temporary directory, each with a site agent in
front of it (``[slurm]``, served in this process on loopback, :mod:`simulators.slurm_sites`)
that reads its cluster every ``--poll-s`` (by default the agent's default) and throttles
checkpoint transfers to ``--bandwidth-gbps``. Each run submits a fresh PyTorch example job
(``gateway.training.example_torch``, ``--width`` hidden units, ``--steps`` steps) at east, lets
it train, and has the gateway's Dispatcher, on a SQLite database of its own, migrate it to west
(advanced every ``--round-s``, as the tests do); the job then trains to its end at west.

The pause runs from the checkpoint being begun (the source agent's checkpoint operation
``started_at``, just before ``scancel --batch --signal=TERM``) to the job training again at the
target (the mtime of the resumed marker, the ``{resumed_path}`` the job creates once it has
loaded its checkpoint). Every instant comes from a record of the thing itself:

- (1) checkpoint: signal delivery and the step in progress (to the start of the write: the
  job's log line, stamped to the millisecond, less its own "in S s"), the job's write, the
  job's exit and Slurm recording its end (slurmctld's log, to the millisecond), then the
  agent's next ``squeue`` reading and its hashing of the file (to the operation's ``done_at``,
  ``GET /v1/operations/...``);
- the gateway's gap to the transfer call (a Dispatcher round, HTTP calls, database commits);
- (2) transfer: the transfer operation's ``started_at`` to ``done_at``;
- the gateway's gap to the restore call;
- (3) submission and start: the restore operation's ``started_at`` to the job's process
  starting. The reservation's hold has been running since before the pause (Slurm started it
  when the gateway reserved; nothing queues): the restore verifies the checkpoint, waits for a
  fresh ``squeue`` reading, renames the hold and writes its start script (the script's mtime),
  and the hold's shell, which looks for it every 0.2 s, reads it and ``exec``s the job (the
  script's atime, which ``relatime`` sets at that first read);
- (4) load: the script read to the resumed marker: the interpreter, ``import torch``, the
  model's set-up and the checkpoint's load.

``squeue --json`` gives ``start_time`` and ``end_time`` in whole seconds only; they are printed
as a cross-check. Also printed: the gateway's recorded ``downtime_s``; the job alone, outside
Slurm, after the runs (its start to its resumed marker, its checkpoint written to its exit);
an interpreter that imports the job's modules, and one that also calls
``torch.use_deterministic_algorithms(True)`` as the job does (start to done, done to exit);
beside the parts, the feasibility model's expected times (``gateway.feasibility``:
``checkpoint_write_s``, ``transfer_s``, ``restore_s`` with the agent's default rates) for the
measured checkpoint size and the bandwidth; and the largest part.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.orm import Session, sessionmaker

from gateway.agent.config import AgentSettings, parse_agent_settings
from gateway.agent.slurm.runner import HOLD_POLL_S, hold_start_script
from gateway.agent.slurm.settings import SlurmSettings
from gateway.clock import SystemClock
from gateway.db import make_engine, make_session_factory, unit_of_work, upgrade
from gateway.feasibility import checkpoint_write_s, restore_s, transfer_s
from gateway.migration.dispatch import Dispatcher
from gateway.planner.snapshot import MigrationDecision
from gateway.sites.client import SiteControllerClient
from gateway.sites.records import JobSpec, Operation, OperationKind
from models import FINAL_STATES, Migration
from simulators.hang_guard import HANG_GUARD_S
from simulators.loopback_agents import SiteSize, seed_database
from simulators.slurm_cluster import SlurmCluster, slurm_available
from simulators.slurm_sites import SlurmSite, slurm_agent_data, slurm_sites, torch_command

TOKENS = {"east": "benchmark-token-east", "west": "benchmark-token-west"}
NODE_GPUS, NODE_CPUS, NODE_MEMORY_MB = 2, 4, 4096
IT_POWER_MAX_KW = 4.0
STEP_SLEEP_S = 0.02
"""Pause after each training step [s]: a step takes at least this long on any machine, so that
the job still trains when its checkpoint comes (the default 150 steps take 3 s at least; the
east leg, :data:`TRAIN_BEFORE_S` and the reservation, about 1-2 s)."""
TRAIN_BEFORE_S = 0.5
"""How long the job trains at east before the migration is planned [s]."""
BYTES_PER_PARAMETER = 12
"""The job's checkpoint per parameter: weights and AdamW's two moments in float32 (for the job
spec's ``checkpoint_gb``, which the gateway plans with; the measured size is what is reported)."""
POLL_S = 0.005
"""How often the benchmark looks for what it waits for [s]."""
_JOB_LOG = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) example_torch: "
_WRITTEN = re.compile(
    _JOB_LOG + r"SIGTERM: checkpoint at step (\d+) written to \S+ \((\d+) bytes in ([0-9.]+) s\)$",
    re.M,
)
_SLURM_LOG = r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})\] "


def parameters(width: int) -> int:
    """Parameters of the example job's MLP (32 features, 8 classes, LayerNorm) [-]."""
    return (32 * width + width) + 2 * width + (width * width + width) + (width * 8 + 8)


@dataclass(frozen=True)
class Marks:
    """One migration's instants (UTC, in the order they happen; None: not recorded) and what
    else the run says."""

    planned: datetime
    hold_started: datetime | None
    sigterm: datetime
    write_start: datetime
    written: datetime
    slurm_end: datetime | None
    checkpoint_done: datetime
    transfer_start: datetime
    transfer_done: datetime
    restore_start: datetime
    script_written: datetime
    script_read: datetime | None
    resumed: datetime
    restore_done: datetime
    size_bytes: int
    step: int
    gateway_downtime_s: float | None
    squeue_end_s: int
    """``end_time`` of the job's Slurm job at east in ``squeue --json`` [epoch s]."""
    squeue_start_s: int
    """``start_time`` of the job's Slurm job at west (the hold it took over) [epoch s]."""


Seconds = Callable[[Marks], float | None]


def span(start: str, end: str) -> Seconds:
    """The seconds from instant ``start`` to instant ``end`` of a run's marks."""

    def seconds(marks: Marks) -> float | None:
        a, b = getattr(marks, start), getattr(marks, end)
        return None if a is None or b is None else (b - a).total_seconds()

    return seconds


def squeue_since_sigterm(attribute: str) -> Seconds:
    """An ``squeue`` time (whole seconds) less the instant SIGTERM was sent [s]."""
    return lambda marks: getattr(marks, attribute) - marks.sigterm.timestamp()


@dataclass(frozen=True)
class Part:
    """A part of the pause, ``label``: ``seconds`` of a run, ``details`` that add up to it."""

    label: str
    seconds: Seconds
    details: tuple[tuple[str, Seconds], ...] = ()


PARTS = (
    Part(
        "(1) checkpoint: SIGTERM sent -> checkpoint op done",
        span("sigterm", "checkpoint_done"),
        (
            ("signal delivered, step in progress ends", span("sigterm", "write_start")),
            ("job writes the checkpoint (its own 'in S s')", span("write_start", "written")),
            ("job exits, Slurm records its end (slurmctld log)", span("written", "slurm_end")),
            ("agent's next squeue reading, hash: op done", span("slurm_end", "checkpoint_done")),
        ),
    ),
    Part("gateway: checkpoint done -> transfer call", span("checkpoint_done", "transfer_start")),
    Part("(2) transfer op", span("transfer_start", "transfer_done")),
    Part("gateway: transfer done -> restore call", span("transfer_done", "restore_start")),
    Part(
        "(3) submission and start: restore op -> process",
        span("restore_start", "script_read"),
        (
            (
                "agent verifies, reads squeue, hands hold its script",
                span("restore_start", "script_written"),
            ),
            (
                f"hold's shell reads the script (polls every {HOLD_POLL_S:g} s)",
                span("script_written", "script_read"),
            ),
        ),
    ),
    Part("(4) load: interpreter, torch, set-up, checkpoint", span("script_read", "resumed")),
)
"""The parts of the pause, one after the other."""
RESTORE = ("(3)+(4) restore: restore op -> training again", span("restore_start", "resumed"))
PAUSE = ("pause: SIGTERM sent -> training again", span("sigterm", "resumed"))
AROUND: tuple[tuple[str, Seconds], ...] = (
    ("before: planned -> SIGTERM (reserve, hold started)", span("planned", "sigterm")),
    ("  Slurm started the hold (slurmctld log) -> SIGTERM", span("hold_started", "sigterm")),
    ("after: training again -> restore op done", span("resumed", "restore_done")),
    ("gateway's recorded downtime_s", lambda marks: marks.gateway_downtime_s),
    ("squeue: east job end_time - SIGTERM (whole s)", squeue_since_sigterm("squeue_end_s")),
    ("squeue: west job start_time - SIGTERM (whole s)", squeue_since_sigterm("squeue_start_s")),
)
"""Instants around the pause, and the cross-checks."""


# ---- the world ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    width: int
    steps: int
    bandwidth_gbps: float
    runs: int
    poll_s: float
    round_s: float

    @property
    def site_size(self) -> SiteSize:
        return SiteSize(NODE_GPUS, IT_POWER_MAX_KW, self.bandwidth_gbps)

    @property
    def command(self) -> list[str]:
        return torch_command(steps=self.steps, width=self.width, step_sleep_s=STEP_SLEEP_S)


def agent_settings(
    root: Path, site_id: str, cluster: SlurmCluster, options: Options
) -> AgentSettings:
    data = slurm_agent_data(
        root,
        site_id,
        cluster,
        TOKENS,
        it_power_max_kw=IT_POWER_MAX_KW,
        wan_bandwidth_gbps=options.bandwidth_gbps,
        poll_s=options.poll_s,
    )
    return parse_agent_settings(data, f"benchmark agent {site_id}")


@asynccontextmanager
async def world(root: Path, options: Options) -> AsyncIterator[dict[str, SlurmSite]]:
    """Both clusters and their agents, by site id; everything stopped on the way out."""
    clusters: dict[str, SlurmCluster] = {}
    try:
        for name in TOKENS:
            clusters[name] = SlurmCluster.start(
                root / name, name, gpus=NODE_GPUS, cpus=NODE_CPUS, memory_mb=NODE_MEMORY_MB
            )
        settings = {s: (c, agent_settings(root, s, c, options)) for s, c in clusters.items()}
        async with slurm_sites(settings) as sites:
            yield sites
    finally:
        for cluster in clusters.values():
            cluster.stop()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition`` holds, at most :data:`HANG_GUARD_S`."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {HANG_GUARD_S:g} s")
        await asyncio.sleep(POLL_S)


# ---- one migration ------------------------------------------------------------------------


async def migrate(
    sessions: sessionmaker[Session],
    clients: dict[str, SiteControllerClient],
    job_id: str,
    round_s: float,
) -> str:
    """Migrate ``job_id`` from east to west with the Dispatcher, advanced every ``round_s``;
    the migration's id once it completed."""
    dispatcher = Dispatcher(sessions, clients, SystemClock())
    decision = MigrationDecision(job_id, "east", "west", "benchmark", 5.0, 1e-3)
    migration_id = dispatcher.create(decision)
    if migration_id is None:
        raise RuntimeError(f"the Dispatcher did not plan the migration of {job_id}")
    deadline = time.monotonic() + HANG_GUARD_S
    while (state := await dispatcher.advance(migration_id)) not in FINAL_STATES:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{migration_id} still {state} after {HANG_GUARD_S:g} s")
        await asyncio.sleep(round_s)
    if state != "completed":
        with unit_of_work(sessions) as session:
            migration = session.get(Migration, migration_id)
            error = None if migration is None else migration.error
        raise RuntimeError(f"{migration_id} {state}: {error} (a larger --steps may help)")
    return migration_id


def _local_time(text: str, form: str) -> datetime:
    """A log line's local time (to the millisecond) as UTC."""
    return datetime.strptime(text, form).astimezone(UTC)


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def slurmctld_logged(cluster: SlurmCluster, pattern: str) -> datetime | None:
    """When the cluster's slurmctld first logged a line matching ``pattern`` (its log file is
    ``SlurmctldLogFile`` of ``slurm.conf``; its lines are stamped to the millisecond)."""
    settings = dict(
        line.split("=", 1) for line in cluster.conf_path.read_text().splitlines() if "=" in line
    )
    log_file = Path(settings["SlurmctldLogFile"])
    found = re.search(_SLURM_LOG + pattern, log_file.read_text(errors="replace"), re.M)
    return None if found is None else _local_time(found[1], "%Y-%m-%dT%H:%M:%S.%f")


async def _operation(
    client: SiteControllerClient, migration_id: str, kind: OperationKind
) -> Operation:
    op = await client.operation(migration_id, kind)
    if op is None or op.state != "done":
        raise RuntimeError(f"{client.site_id}: the {kind} of {migration_id} is {op}")
    return op


async def marks_of(
    sites: dict[str, SlurmSite],
    clients: dict[str, SiteControllerClient],
    sessions: sessionmaker[Session],
    job_id: str,
    migration_id: str,
) -> Marks:
    """Every instant of a completed migration, from the records the agents, the job, the
    files and Slurm keep."""
    east, west = sites["east"], sites["west"]
    checkpoint = await _operation(clients["east"], migration_id, "checkpoint")
    transfer = await _operation(clients["east"], migration_id, "transfer")
    restore = await _operation(clients["west"], migration_id, "restore")
    written = _WRITTEN.search(east.log_text(job_id))
    if written is None:
        raise RuntimeError(f"no checkpoint line in the job's log at east:\n{east.log_text(job_id)}")
    written_at = _local_time(written[1], "%Y-%m-%d %H:%M:%S,%f")
    paths = west.agent.job_paths(job_id)
    script = os.stat(hold_start_script(paths, migration_id))
    [(east_id, east_job)] = east.slurm_jobs(job_id).items()
    [(west_id, west_job)] = west.slurm_jobs(job_id).items()
    with unit_of_work(sessions) as session:
        migration = session.get(Migration, migration_id)
        assert migration is not None
        planned, downtime_s = migration.planned_at, migration.downtime_s
    return Marks(
        planned=planned if planned.tzinfo else planned.replace(tzinfo=UTC),
        hold_started=slurmctld_logged(west.cluster, rf".*(?:Allocate|Started) JobId={west_id}\b"),
        sigterm=checkpoint.started_at,
        write_start=written_at - timedelta(seconds=float(written[4])),
        written=written_at,
        slurm_end=slurmctld_logged(east.cluster, rf"_job_complete: JobId={east_id} WEXITSTATUS"),
        checkpoint_done=checkpoint.done_at,
        transfer_start=transfer.started_at,
        transfer_done=transfer.done_at,
        restore_start=restore.started_at,
        script_written=_utc(script.st_mtime_ns),
        script_read=_utc(script.st_atime_ns) if script.st_atime_ns > script.st_mtime_ns else None,
        resumed=_utc(paths.resumed_marker.stat().st_mtime_ns),
        restore_done=restore.done_at,
        size_bytes=int(written[3]),
        step=int(written[2]),
        gateway_downtime_s=downtime_s,
        squeue_end_s=int(east_job["end_time"]),
        squeue_start_s=int(west_job["start_time"]),
    )


async def run_once(
    index: int,
    sites: dict[str, SlurmSite],
    clients: dict[str, SiteControllerClient],
    root: Path,
    options: Options,
) -> Marks:
    """Submit a fresh job at east, let it train, migrate it to west on a fresh database (a
    copy of ``root/template.db``) and wait until it has finished there; its marks. The
    checkpoint it resumed from is kept as ``root/resumed-from.pt``."""
    job_id = f"torch-{index}"
    checkpoint_gb = parameters(options.width) * BYTES_PER_PARAMETER / 1e9
    spec = JobSpec(job_id, 1, power_kw=0.6, checkpoint_gb=checkpoint_gb, work_remaining_gpu_h=1)
    east, west = sites["east"], sites["west"]
    await east.agent.submit(spec, tuple(options.command))
    await until(lambda: "started at step 0" in east.log_text(job_id), f"{job_id} to train")
    await asyncio.sleep(TRAIN_BEFORE_S)
    database = root / f"gateway-{index}.db"
    shutil.copyfile(root / "template.db", database)
    engine = make_engine(f"sqlite:///{database}")
    try:
        sessions = make_session_factory(engine)
        urls = {site_id: site.url for site_id, site in sites.items()}
        seed_database(sessions, urls, options.site_size, spec, "east")
        migration_id = await migrate(sessions, clients, job_id, options.round_s)
        marks = await marks_of(sites, clients, sessions, job_id, migration_id)
    finally:
        engine.dispose()
    [restored] = west.agent.job_paths(job_id).checkpoints_dir.iterdir()
    shutil.copyfile(restored, root / "resumed-from.pt")
    finished = f"{job_id} to finish at west"
    await until(lambda: west.agent.job_state(job_id) == "finished", finished)
    return marks


# ---- the same work outside Slurm ----------------------------------------------------------

IMPORTS = "import gateway.training.example_torch"
"""The job's imports (torch's among them)."""
DETERMINISTIC = f"{IMPORTS}; import torch; torch.use_deterministic_algorithms(True)"
"""The imports and the job's first call, which imports ``torch._inductor`` and ``torch._dynamo``."""


def python_alone(code: str) -> tuple[float, float]:
    """This interpreter started in a process of its own to run ``code``: the seconds from its
    start to the end of ``code``, and from there to its exit."""
    report = "import sys, time; sys.stdout.write(repr(time.time())); sys.stdout.flush()"
    argv = [sys.executable, "-c", f"{code}\n{report}"]
    started = time.time()
    done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=HANG_GUARD_S)
    exited = time.time()
    ran_until = float(done.stdout)
    return ran_until - started, exited - ran_until


def fastest(tries: Sequence[tuple[float, float]]) -> str:
    """The fastest of each of the two times of :func:`python_alone`, as text."""
    return f"{min(t[0] for t in tries):.3f} s, exit {min(t[1] for t in tries):.3f} s"


@dataclass(frozen=True)
class Alone:
    """The job's own times, run here outside Slurm [s]: from its start to its resumed marker
    (``resume_s``), and from its checkpoint written (its log line) to its exit (``exit_s``)."""

    resume_s: float
    exit_s: float


def _until_s(condition: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the job alone hangs: {process.args!r}")
        time.sleep(POLL_S)


def job_alone(options: Options, checkpoint: Path, work_dir: Path) -> Alone:
    """Start the job's command here with ``--resume CHECKPOINT``, then, once it has confirmed,
    SIGTERM it (it writes a checkpoint and exits): its :class:`Alone` times."""
    marker, out, log_path = work_dir / "resumed", work_dir / "output", work_dir / "alone.log"
    out.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    fill = {"{python}": sys.executable, "{output_dir}": str(out), "{resumed_path}": str(marker)}
    argv = [fill.get(arg, arg) for arg in options.command] + ["--resume", str(checkpoint)]
    started = time.time()
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        _until_s(lambda: marker.exists() or process.poll() is not None, process)
        process.terminate()
        _until_s(lambda: process.poll() is not None, process)
        exited = time.time()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    written = _WRITTEN.search(log_path.read_text())
    if process.returncode != 0 or not marker.exists() or written is None:
        raise RuntimeError(f"the job alone failed ({process.returncode}): {log_path.read_text()}")
    written_at = _local_time(written[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return Alone(marker.stat().st_mtime - started, exited - written_at)


# ---- the report ---------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _row(label: str, values: Sequence[float | None], model_s: float | None = None) -> str:
    cells = [*values, _median(values), model_s]
    return f"{label:<58}" + "".join(f"{'-' if v is None else f'{v:.3f}':>8}" for v in cells)


def report(runs: list[Marks], options: Options, settings: AgentSettings) -> float:
    """Print the table; the model's expected pause [s]."""
    size_gb = statistics.median(m.size_bytes for m in runs) / 1e9
    model = [
        float(checkpoint_write_s(size_gb, settings.checkpoint_write_gb_per_s)),
        None,
        float(transfer_s(size_gb, options.bandwidth_gbps, settings.efficiency)),
        None,
        None,
        None,
    ]
    model_restore_s = float(restore_s(size_gb, settings.restore_gb_per_s))
    model_pause_s = sum(v for v in model if v is not None) + model_restore_s
    head = "".join(f"{f'run {i}':>8}" for i in range(1, len(runs) + 1))
    print(f"{'[s]':<58}{head}{'median':>8}{'model':>8}")
    for part, model_s in zip(PARTS, model, strict=True):
        print(_row(part.label, [part.seconds(m) for m in runs], model_s))
        for label, seconds in part.details:
            print(_row(f"    {label}", [seconds(m) for m in runs]))
    print(_row(RESTORE[0], [RESTORE[1](m) for m in runs], model_restore_s))
    print(_row(PAUSE[0], [PAUSE[1](m) for m in runs], model_pause_s))
    for label, seconds in AROUND:
        print(_row(label, [seconds(m) for m in runs]))
    return model_pause_s


def largest(runs: list[Marks]) -> str:
    medians = {part.label: _median([part.seconds(m) for m in runs]) for part in PARTS}
    known = {label: value for label, value in medians.items() if value is not None}
    label = max(known, key=lambda label: known[label])
    pause = _median([PAUSE[1](m) for m in runs]) or float("nan")
    return f"{label}: median {known[label]:.3f} s of {pause:.3f} s ({known[label] / pause:.0%})"


async def run(options: Options) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="slurm-migration-") as directory:
        root = Path(directory)
        upgrade(f"sqlite:///{root / 'template.db'}")
        runs: list[Marks] = []
        async with world(root, options) as sites, aiohttp.ClientSession() as http:
            clients = {
                site_id: SiteControllerClient(site_id, site.url, TOKENS[site_id], http)
                for site_id, site in sites.items()
            }
            for index in range(1, options.runs + 1):
                runs.append(await run_once(index, sites, clients, root, options))
                print(f"run {index}: pause {PAUSE[1](runs[-1]):.3f} s", flush=True)
            settings = sites["east"].agent.settings
        tries = [job_alone(options, root / "resumed-from.pt", root) for _ in range(2)]
        imports = fastest([python_alone(IMPORTS) for _ in range(2)])
        deterministic = fastest([python_alone(DETERMINISTIC) for _ in range(2)])
    size_mb = statistics.median(m.size_bytes for m in runs) / 1e6
    print(
        f"PyTorch example job, width {options.width}, {options.steps} steps: checkpoint "
        f"{size_mb:.2f} MB, taken at steps {', '.join(str(m.step) for m in runs)}; east -> "
        f"west between two Slurm 22.05 clusters, agents reading squeue every "
        f"{options.poll_s:g} s, transfers throttled to {options.bandwidth_gbps:g} Gbit/s, "
        f"Dispatcher rounds every {options.round_s:g} s, SQLite; "
        f"{len(runs)} runs in {time.monotonic() - started:.0f} s"
    )
    model_pause_s = report(runs, options, settings)
    print(
        f"the job alone, outside Slurm (fastest of two each): start to resumed marker "
        f"{min(t.resume_s for t in tries):.3f} s; checkpoint written to exit "
        f"{min(t.exit_s for t in tries):.3f} s. An interpreter importing the job's modules: "
        f"{imports}; also calling torch.use_deterministic_algorithms(True) (which imports "
        f"torch._inductor and torch._dynamo): {deterministic}"
    )
    print(
        f"model: checkpoint_write_s + transfer_s + restore_s = {model_pause_s:.3f} s for the "
        f"measured size (write {settings.checkpoint_write_gb_per_s:g} GB/s, efficiency "
        f"{settings.efficiency:g}, restore {settings.restore_gb_per_s:g} GB/s)"
    )
    print(f"largest part: {largest(runs)}")


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=_positive(int), default=1024, help="hidden units (1024)")
    parser.add_argument("--steps", type=_positive(int), default=150, help="training steps (150)")
    parser.add_argument(
        "--bandwidth-gbps",
        type=_positive(float),
        default=1.0,
        help="WAN rate the agents throttle transfers to [Gbit/s] (1.0)",
    )
    parser.add_argument(
        "--runs", type=_positive(int), default=3, help="migrations, each of a fresh job (3)"
    )
    default_poll_s = SlurmSettings.model_fields["poll_s"].default
    parser.add_argument(
        "--poll-s",
        type=_positive(float),
        default=default_poll_s,
        help=f"how often the agents read squeue [s] (the agent's default, {default_poll_s:g})",
    )
    parser.add_argument(
        "--round-s",
        type=_positive(float),
        default=0.05,
        help="pause between two Dispatcher rounds [s] (0.05)",
    )
    args = parser.parse_args(argv)
    problem = slurm_available()
    if problem is not None:
        print(f"Slurm cannot run here: {problem}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.WARNING)
    options = Options(
        args.width, args.steps, args.bandwidth_gbps, args.runs, args.poll_s, args.round_s
    )
    asyncio.run(run(options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

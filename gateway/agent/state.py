"""What the site agent remembers, and its file ``DATA_DIR/agent-state.json``.

The agent writes the whole state atomically after every change, so that an agent that was
stopped or killed comes back knowing its jobs (and where their checkpoints are), reservations,
operations and the idempotency keys it has seen. The file holds other agents' bearer tokens
(for transfers in flight) and is created readable by its owner only.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.agent.jobs import CheckpointFile, JobPaths
from gateway.errors import GatewayError, SiteControllerError
from gateway.sites.fields import FieldError, Fields
from gateway.sites.records import (
    GPU_HOLDING_STATES,
    JOB_STATES,
    RESERVATION_STATES,
    JobSpec,
    JobState,
    JobStatus,
    Operation,
    format_at,
    job_spec_from_fields,
    job_spec_to_wire,
    operation_to_wire,
    parse_operation,
    reservation_from_fields,
)

# Re-exported: the agent's other modules import these two from here.
from gateway.sites.records import OperationKey as OperationKey
from gateway.sites.records import Reservation as Reservation

STATE_FILE = "agent-state.json"
LOCK_FILE = "agent.lock"
_VERSION = 1


class AgentStateError(GatewayError):
    """The agent's state file is unreadable or damaged; the message names the file."""


@dataclass
class AgentJob:
    """A job at this site (mutable agent state, not a record).

    work_remaining_gpu_h: remaining work as of ``progressed_at`` [GPU h]; checkpoint: the
    latest complete checkpoint here; checkpoint_sequence: numbers the checkpoint files;
    checkpoint_migration_id: the checkpoint operation that owns the job's current stop;
    restarts: unexpected exits so far; pgid: the process group of its running process;
    slurm_job_id: the Slurm batch job of its run, under a Slurm cluster.
    """

    spec: JobSpec
    command: tuple[str, ...] | None
    state: JobState
    work_remaining_gpu_h: float
    progressed_at: datetime
    checkpoint: CheckpointFile | None = None
    checkpoint_sequence: int = 0
    checkpoint_migration_id: str | None = None
    restarts: int = 0
    pgid: int | None = None
    slurm_job_id: int | None = None

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def holds_gpus(self) -> bool:
        """Running, checkpointing or restoring: its GPUs are taken."""
        return self.state in GPU_HOLDING_STATES

    def progress(self, now: datetime) -> None:
        """Count down a running job's remaining work up to ``now``."""
        elapsed_h = (now - self.progressed_at).total_seconds() / 3600.0
        if self.state == "running" and elapsed_h > 0:
            self.work_remaining_gpu_h = max(
                0.0, self.work_remaining_gpu_h - self.spec.gpus * elapsed_h
            )
        self.progressed_at = max(self.progressed_at, now)

    def set_state(self, state: JobState, now: datetime) -> None:
        self.progress(now)
        self.state = state
        if state == "finished":
            self.work_remaining_gpu_h = 0.0

    def status(self, now: datetime) -> JobStatus:
        """The job as ``GET /v1/status`` lists it."""
        self.progress(now)
        return JobStatus.of(self.spec, self.state, self.work_remaining_gpu_h)


@dataclass(frozen=True)
class Manifest:
    """How to run a job whose checkpoint another agent sends for a migration."""

    job_id: str
    command: tuple[str, ...]
    source_site_id: str


@dataclass
class AgentState:
    jobs: dict[str, AgentJob] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    operations: dict[OperationKey, Operation] = field(default_factory=dict)
    operation_args: dict[OperationKey, Any] = field(default_factory=dict)
    """The JSON form of the arguments that started each operation (idempotency)."""
    transfer_tokens: dict[str, str] = field(default_factory=dict)
    """The target's bearer token of each transfer, by migration id (to resume it)."""
    manifests: dict[str, Manifest] = field(default_factory=dict)
    released_unknown: set[str] = field(default_factory=set)
    resumed: set[tuple[str, str]] = field(default_factory=set)
    released_jobs: set[tuple[str, str]] = field(default_factory=set)
    levers: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Each lever id used (pause, unpause) with its kind and job (idempotency)."""
    holds: dict[str, int] = field(default_factory=dict)
    """The runner's hold behind each reservation still held, by migration id (a Slurm job
    that keeps the GPUs for the restore)."""


# ---- JSON ------------------------------------------------------------------------------


def _spec_to_json(spec: JobSpec) -> dict[str, Any]:
    return {"job_id": spec.job_id, **job_spec_to_wire(spec)}


def _spec_from(fields: Fields) -> JobSpec:
    return job_spec_from_fields(fields.text("job_id"), fields, bounded=False)


def _checkpoint_to_json(checkpoint: CheckpointFile | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    return {
        "path": str(checkpoint.path),
        "size_bytes": checkpoint.size_bytes,
        "sha256": checkpoint.sha256,
    }


def _checkpoint_from(fields: Fields | None) -> CheckpointFile | None:
    if fields is None:
        return None
    return CheckpointFile(
        Path(fields.text("path")), fields.integer("size_bytes", minimum=0), fields.text("sha256")
    )


def _job_to_json(job: AgentJob) -> dict[str, Any]:
    return {
        "spec": _spec_to_json(job.spec),
        "command": None if job.command is None else list(job.command),
        "state": job.state,
        "work_remaining_gpu_h": job.work_remaining_gpu_h,
        "progressed_at": format_at(job.progressed_at),
        "checkpoint": _checkpoint_to_json(job.checkpoint),
        "checkpoint_sequence": job.checkpoint_sequence,
        "checkpoint_migration_id": job.checkpoint_migration_id,
        "restarts": job.restarts,
        "pgid": job.pgid,
        "slurm_job_id": job.slurm_job_id,
    }


def _job_from(fields: Fields) -> AgentJob:
    return AgentJob(
        spec=_spec_from(fields.obj("spec")),
        command=fields.text_list("command") if fields.has("command") else None,
        state=fields.choice("state", JOB_STATES),
        work_remaining_gpu_h=fields.number("work_remaining_gpu_h", minimum=0.0),
        progressed_at=fields.timestamp("progressed_at"),
        checkpoint=_checkpoint_from(fields.optional_obj("checkpoint")),
        checkpoint_sequence=fields.integer("checkpoint_sequence", minimum=0),
        checkpoint_migration_id=fields.optional_text("checkpoint_migration_id"),
        restarts=fields.integer("restarts", minimum=0),
        pgid=fields.optional_integer("pgid"),
        slurm_job_id=fields.optional_integer("slurm_job_id"),
    )


def state_to_json(state: AgentState) -> dict[str, Any]:
    return {
        "version": _VERSION,
        "jobs": [_job_to_json(job) for job in state.jobs.values()],
        "reservations": [asdict(r) for r in state.reservations.values()],
        "operations": [
            {"operation": operation_to_wire(op), "args": state.operation_args[key]}
            for key, op in state.operations.items()
        ],
        "transfer_tokens": dict(state.transfer_tokens),
        "manifests": [
            {
                "migration_id": migration_id,
                "job_id": m.job_id,
                "command": list(m.command),
                "source_site_id": m.source_site_id,
            }
            for migration_id, m in state.manifests.items()
        ],
        "released_unknown": sorted(state.released_unknown),
        "resumed": sorted([m, j] for m, j in state.resumed),
        "released_jobs": sorted([m, j] for m, j in state.released_jobs),
        "holds": dict(state.holds),
        "levers": {lever_id: list(use) for lever_id, use in state.levers.items()},
    }


def _pairs(fields: Fields, key: str) -> set[tuple[str, str]]:
    """A list of [migration id, job id] pairs."""
    pairs = set()
    for name, item in fields.items(key):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(v, str) for v in item)
        ):
            raise FieldError(name, "expected two strings")
        pairs.add((item[0], item[1]))
    return pairs


def state_from_json(document: Any) -> AgentState:
    """Raises FieldError naming the first bad field."""
    fields = Fields(document)
    if fields.integer("version") != _VERSION:
        raise FieldError("version", f"expected {_VERSION}")
    state = AgentState()
    for item in fields.obj_list("jobs"):
        job = _job_from(item)
        state.jobs[job.job_id] = job
    for item in fields.obj_list("reservations"):
        reservation = reservation_from_fields(item, item.choice("state", RESERVATION_STATES))
        state.reservations[reservation.migration_id] = reservation
    for raw in document["operations"]:
        op = parse_operation(raw["operation"])
        key = (op.migration_id, op.kind)
        state.operations[key] = op
        state.operation_args[key] = raw["args"]
    tokens = document["transfer_tokens"]
    if not isinstance(tokens, dict) or not all(isinstance(v, str) for v in tokens.values()):
        raise FieldError("transfer_tokens", "expected an object of strings")
    state.transfer_tokens = dict(tokens)
    for item in fields.obj_list("manifests"):
        state.manifests[item.text("migration_id")] = Manifest(
            job_id=item.text("job_id"),
            command=item.text_list("command"),
            source_site_id=item.text("source_site_id"),
        )
    state.released_unknown = set(fields.text_list("released_unknown"))
    state.resumed = _pairs(fields, "resumed")
    state.released_jobs = _pairs(fields, "released_jobs")
    holds = document.get("holds", {})
    if not isinstance(holds, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in holds.values()
    ):
        raise FieldError("holds", "expected an object of integers")
    state.holds = dict(holds)
    levers = document.get("levers", {})
    if not isinstance(levers, dict) or not all(
        isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
        for v in levers.values()
    ):
        raise FieldError("levers", "expected an object of [kind, job id] pairs")
    state.levers = {lever_id: (use[0], use[1]) for lever_id, use in levers.items()}
    return state


# ---- the file ----------------------------------------------------------------------------


def lock_data_dir(data_dir: Path) -> TextIO:
    """Hold ``DATA_DIR/agent.lock`` so that no second agent runs on the same state (two would
    run the same jobs); released when the returned file is closed or the process ends."""
    path = data_dir / LOCK_FILE
    stream = path.open("a", encoding="utf-8")
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        stream.close()
        raise AgentStateError(
            f"{data_dir}: another site agent is running with this data_dir"
        ) from exc
    return stream


def save_state(state: AgentState, data_dir: Path) -> None:
    """Write the state atomically (temporary file, fsync, rename), readable by its owner only."""
    path = data_dir / STATE_FILE
    temporary = path.with_name(path.name + ".tmp")
    text = json.dumps(state_to_json(state), indent=1, sort_keys=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)


def load_state(data_dir: Path) -> AgentState | None:
    """The saved state, or None when the agent has never run with this ``data_dir``."""
    path = data_dir / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AgentStateError(f"{path}: cannot read the agent's state: {exc.strerror}") from exc
    try:
        state = state_from_json(json.loads(text))
    except (ValueError, KeyError, TypeError, SiteControllerError) as exc:
        raise AgentStateError(
            f"{path}: damaged agent state ({exc}); move it away to start afresh "
            "(the agent then forgets its jobs and operations)"
        ) from exc
    _anchor_checkpoints(state, data_dir)
    return state


def _anchor_checkpoints(state: AgentState, data_dir: Path) -> None:
    """Give relative checkpoint paths (saved by agents that kept ``data_dir`` relative, from
    a working directory unknown now) their place under ``data_dir``: the agent names them
    ``jobs/JOB_ID/checkpoints/NAME`` there."""
    for job in state.jobs.values():
        checkpoint = job.checkpoint
        if checkpoint is not None and not checkpoint.path.is_absolute():
            anchored = JobPaths.of(data_dir, job.job_id).checkpoints_dir / checkpoint.path.name
            job.checkpoint = replace(checkpoint, path=anchored)

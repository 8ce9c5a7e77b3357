"""Typed records of the site controller API (``docs/site-api.md``) and their JSON form.

This is the one place where site-controller JSON becomes typed objects and back: the
gateway's client parses answers with :func:`parse_status` and :func:`parse_operation`; the two
servers of the API (the simulator and the site agent) read request bodies with the
``*_from_fields`` functions (over :class:`~gateway.sites.fields.Fields`, which
:mod:`gateway.sites.serving` gives them) and write answers with the ``*_to_wire`` functions.
Nothing raw leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar, get_args

from gateway.errors import SiteControllerError
from gateway.sites.fields import FieldError, Fields

JobState = Literal["running", "checkpointing", "checkpointed", "restoring", "finished", "paused"]
OperationKind = Literal["checkpoint", "transfer", "restore"]
OperationState = Literal["in_progress", "done", "failed"]
ReservationState = Literal["reserved", "consumed", "released"]
OperationKey = tuple[str, OperationKind]
"""An operation's key: (migration id, kind)."""

JOB_STATES: tuple[JobState, ...] = get_args(JobState)
OPERATION_KINDS: tuple[OperationKind, ...] = get_args(OperationKind)
OPERATION_STATES: tuple[OperationState, ...] = get_args(OperationState)
RESERVATION_STATES: tuple[ReservationState, ...] = get_args(ReservationState)
GPU_HOLDING_STATES: tuple[JobState, ...] = ("running", "checkpointing", "restoring", "paused")
"""The states in which a job holds its GPUs at a site (``checkpointed`` and ``finished`` do not)."""

_Choice = TypeVar("_Choice", bound=str)

MAX_CHECKPOINT_GB = 1e6
"""Largest checkpoint a request may name [GB]; keeps every expected duration representable."""
MIN_BANDWIDTH_GBPS = 1e-3
"""Smallest WAN bandwidth a transfer request may name [Gbit/s]."""

JOB_SPEC_FIELDS = (
    "gpus",
    "power_kw",
    "checkpoint_gb",
    "work_remaining_gpu_h",
    "migratable",
    "flex_tier",
)
"""The fields of a ``JobSpec`` object (a restore's ``job``; a job submission adds more)."""
CHECKPOINT_FIELDS = ("size_gb", "sha256")
RESERVATION_FIELDS = ("migration_id", "job_id", "gpus", "power_kw")
TRANSFER_FIELDS = ("migration_id", "target_site_id", "target_url", "bandwidth_gbps", "target_token")
RESTORE_FIELDS = ("migration_id", "source_site_id", "checkpoint", "job")


def format_at(at: datetime) -> str:
    """An aware timestamp as ISO 8601 UTC with ``Z``."""
    if at.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class JobSpec:
    """What a site needs to run a job.

    gpus [-]; power_kw: IT draw while running [kW]; checkpoint_gb [GB];
    work_remaining_gpu_h [GPU h]; migratable; flex_tier (1 = most flexible) [-].
    """

    job_id: str
    gpus: int
    power_kw: float
    checkpoint_gb: float
    work_remaining_gpu_h: float
    migratable: bool = True
    flex_tier: int = 1

    def __post_init__(self) -> None:
        if not self.job_id:
            raise ValueError("job_id must not be empty")
        if self.gpus < 1:
            raise ValueError(f"job {self.job_id}: gpus must be >= 1, got {self.gpus}")
        if self.power_kw < 0:
            raise ValueError(f"job {self.job_id}: power_kw must be >= 0, got {self.power_kw}")
        if self.checkpoint_gb <= 0:
            raise ValueError(
                f"job {self.job_id}: checkpoint_gb must be > 0, got {self.checkpoint_gb}"
            )
        if self.work_remaining_gpu_h < 0:
            raise ValueError(
                f"job {self.job_id}: work_remaining_gpu_h must be >= 0, "
                f"got {self.work_remaining_gpu_h}"
            )


@dataclass(frozen=True)
class JobStatus:
    """A job as a site reports it; ``work_remaining_gpu_h`` [GPU h] is 0 once finished."""

    job_id: str
    gpus: int
    power_kw: float
    checkpoint_gb: float
    work_remaining_gpu_h: float
    migratable: bool
    flex_tier: int
    state: JobState

    @classmethod
    def of(
        cls, spec: JobSpec, state: JobState, work_remaining_gpu_h: float | None = None
    ) -> JobStatus:
        """A job as a site reports it; ``work_remaining_gpu_h`` [GPU h] defaults to the spec's."""
        return cls(
            job_id=spec.job_id,
            gpus=spec.gpus,
            power_kw=spec.power_kw,
            checkpoint_gb=spec.checkpoint_gb,
            work_remaining_gpu_h=(
                spec.work_remaining_gpu_h if work_remaining_gpu_h is None else work_remaining_gpu_h
            ),
            migratable=spec.migratable,
            flex_tier=spec.flex_tier,
            state=state,
        )

    def spec(self) -> JobSpec:
        """The job as it would be restored elsewhere now."""
        return JobSpec(
            job_id=self.job_id,
            gpus=self.gpus,
            power_kw=self.power_kw,
            checkpoint_gb=self.checkpoint_gb,
            work_remaining_gpu_h=self.work_remaining_gpu_h,
            migratable=self.migratable,
            flex_tier=self.flex_tier,
        )


@dataclass(frozen=True)
class SiteStatus:
    """One site's ``GET /v1/status``.

    it_power_kw: IT draw now [kW]; renewable_kw: renewable power now [kW];
    renewable_forecast_kw[i]: expected at ``at + i * forecast_step_s`` [kW]; forecast_step_s [s].
    """

    site_id: str
    at: datetime
    gpus_total: int
    gpus_free: int
    gpus_reserved: int
    it_power_kw: float
    renewable_kw: float
    forecast_step_s: float
    renewable_forecast_kw: tuple[float, ...]
    jobs: tuple[JobStatus, ...]

    def job(self, job_id: str) -> JobStatus | None:
        """The job of that id at this site, if listed."""
        return next((job for job in self.jobs if job.job_id == job_id), None)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on disk: size_gb [GB] and the sha256 of its bytes (hex)."""

    size_gb: float
    sha256: str


@dataclass(frozen=True)
class Operation:
    """A checkpoint, transfer or restore, keyed by (migration_id, kind).

    done_at: when it finished, or is expected to while in progress; expected_s: planned
    duration [s]; checkpoint: set once a checkpoint exists; error: why it failed.
    """

    migration_id: str
    kind: OperationKind
    job_id: str
    state: OperationState
    started_at: datetime
    done_at: datetime
    expected_s: float
    checkpoint: Checkpoint | None
    error: str | None

    @classmethod
    def started(
        cls,
        key: OperationKey,
        job_id: str,
        at: datetime,
        expected_s: float,
        checkpoint: Checkpoint | None,
    ) -> Operation:
        """An operation in progress since ``at``, expected to take ``expected_s`` [s]."""
        return cls(
            migration_id=key[0],
            kind=key[1],
            job_id=job_id,
            state="in_progress",
            started_at=at,
            done_at=at + timedelta(seconds=expected_s),
            expected_s=expected_s,
            checkpoint=checkpoint,
            error=None,
        )


@dataclass(frozen=True)
class Reservation:
    """GPUs [-] and power [kW] held at a target for one migration (``POST /v1/reservations``)."""

    migration_id: str
    job_id: str
    gpus: int
    power_kw: float
    state: ReservationState = "reserved"


@dataclass(frozen=True)
class TransferRequest:
    """``POST /v1/jobs/{job_id}/transfer``: bandwidth_gbps [Gbit/s]; target_token: the target's
    bearer token for an agent's upload, None when not given (or empty)."""

    migration_id: str
    target_site_id: str
    target_url: str
    bandwidth_gbps: float
    target_token: str | None


@dataclass(frozen=True)
class RestoreRequest:
    """``POST /v1/jobs/{job_id}/restore``: load ``checkpoint`` into the migration's reservation
    and run ``job`` from it."""

    migration_id: str
    source_site_id: str
    checkpoint: Checkpoint
    job: JobSpec


def job_spec_from_fields(job_id: str, fields: Fields, *, bounded: bool = True) -> JobSpec:
    """A ``JobSpec`` object, e.g. a restore's ``job`` (the job id comes from the path).

    ``bounded``: with a request's limits (``checkpoint_gb`` at most :data:`MAX_CHECKPOINT_GB`,
    ``flex_tier`` >= 0); a job a site reports, or one the site agent saved, is read without them.
    """
    return JobSpec(
        job_id=job_id,
        gpus=fields.integer("gpus", minimum=1),
        power_kw=fields.number("power_kw", minimum=0.0),
        checkpoint_gb=fields.number(
            "checkpoint_gb", positive=True, maximum=MAX_CHECKPOINT_GB if bounded else None
        ),
        work_remaining_gpu_h=fields.number("work_remaining_gpu_h", minimum=0.0),
        migratable=fields.flag("migratable"),
        flex_tier=fields.integer("flex_tier", minimum=0 if bounded else None),
    )


def checkpoint_from_fields(fields: Fields) -> Checkpoint:
    return Checkpoint(
        size_gb=fields.number("size_gb", positive=True, maximum=MAX_CHECKPOINT_GB),
        sha256=fields.text("sha256"),
    )


def reservation_from_fields(fields: Fields, state: ReservationState = "reserved") -> Reservation:
    """A reservation request's fields (:data:`RESERVATION_FIELDS`), held in ``state``."""
    return Reservation(
        migration_id=fields.identifier("migration_id"),
        job_id=fields.identifier("job_id"),
        gpus=fields.integer("gpus", minimum=1),
        power_kw=fields.number("power_kw", minimum=0.0),
        state=state,
    )


def transfer_request_from_fields(fields: Fields) -> TransferRequest:
    """A transfer request's fields (:data:`TRANSFER_FIELDS`)."""
    return TransferRequest(
        migration_id=fields.identifier("migration_id"),
        target_site_id=fields.text("target_site_id"),
        target_url=fields.http_url("target_url"),
        bandwidth_gbps=fields.number("bandwidth_gbps", minimum=MIN_BANDWIDTH_GBPS),
        target_token=fields.optional_text("target_token") or None,
    )


def restore_request_from_fields(job_id: str, fields: Fields) -> RestoreRequest:
    """A restore request's fields (:data:`RESTORE_FIELDS`); its ``checkpoint`` and ``job``
    objects may hold no other fields than theirs."""
    migration_id = fields.identifier("migration_id")
    source_site_id = fields.text("source_site_id")
    checkpoint_fields = fields.obj("checkpoint")
    checkpoint_fields.reject_unknown(CHECKPOINT_FIELDS)
    checkpoint = checkpoint_from_fields(checkpoint_fields)
    job_fields = fields.obj("job")
    job_fields.reject_unknown(JOB_SPEC_FIELDS)
    job = job_spec_from_fields(job_id, job_fields)
    return RestoreRequest(migration_id, source_site_id, checkpoint, job)


def _job_status_from_fields(fields: Fields) -> JobStatus:
    spec = job_spec_from_fields(fields.text("job_id"), fields, bounded=False)
    return JobStatus.of(spec, fields.choice("state", JOB_STATES))


def _operation_from_fields(fields: Fields) -> Operation:
    checkpoint = fields.optional_obj("checkpoint")
    return Operation(
        migration_id=fields.text("migration_id"),
        kind=fields.choice("kind", OPERATION_KINDS),
        job_id=fields.text("job_id"),
        state=fields.choice("state", OPERATION_STATES),
        started_at=fields.timestamp("started_at"),
        done_at=fields.timestamp("done_at"),
        expected_s=fields.number("expected_s", minimum=0.0),
        checkpoint=None if checkpoint is None else checkpoint_from_fields(checkpoint),
        error=fields.optional_text("error"),
    )


def _status_from_fields(fields: Fields) -> SiteStatus:
    return SiteStatus(
        site_id=fields.text("site_id"),
        at=fields.timestamp("at"),
        gpus_total=fields.integer("gpus_total", minimum=0),
        gpus_free=fields.integer("gpus_free", minimum=0),
        gpus_reserved=fields.integer("gpus_reserved", minimum=0),
        it_power_kw=fields.number("it_power_kw", minimum=0.0),
        renewable_kw=fields.number("renewable_kw", minimum=0.0),
        forecast_step_s=fields.number("forecast_step_s", positive=True),
        renewable_forecast_kw=fields.float_list("renewable_forecast_kw"),
        jobs=tuple(_job_status_from_fields(job) for job in fields.obj_list("jobs")),
    )


def _malformed(what: str, exc: FieldError) -> SiteControllerError:
    return SiteControllerError(f"malformed {what} from site controller: {exc}", transient=False)


def parse_status(document: object) -> SiteStatus:
    """A ``GET /v1/status`` answer; raises SiteControllerError(transient=False) if malformed."""
    try:
        return _status_from_fields(Fields(document))
    except FieldError as exc:
        raise _malformed("status", exc) from exc


def parse_operation(document: object) -> Operation:
    """An operation object; raises SiteControllerError(transient=False) if malformed."""
    try:
        return _operation_from_fields(Fields(document))
    except FieldError as exc:
        raise _malformed("operation", exc) from exc


def parse_job_status(document: object) -> JobStatus:
    """A job object; raises SiteControllerError(transient=False) if malformed."""
    try:
        return _job_status_from_fields(Fields(document))
    except FieldError as exc:
        raise _malformed("job", exc) from exc


def parse_state(document: object, key: str, choices: tuple[_Choice, ...]) -> _Choice:
    """The state field of a small answer such as ``{"migration_id", "state"}``."""
    try:
        return Fields(document).choice(key, choices)
    except FieldError as exc:
        raise _malformed("answer", exc) from exc


def job_spec_to_wire(spec: JobSpec) -> dict[str, Any]:
    """The ``job`` object of a restore request (without the job id, which is in the path)."""
    return {
        "gpus": spec.gpus,
        "power_kw": spec.power_kw,
        "checkpoint_gb": spec.checkpoint_gb,
        "work_remaining_gpu_h": spec.work_remaining_gpu_h,
        "migratable": spec.migratable,
        "flex_tier": spec.flex_tier,
    }


def checkpoint_to_wire(checkpoint: Checkpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    return {"size_gb": checkpoint.size_gb, "sha256": checkpoint.sha256}


def job_status_to_wire(job: JobStatus) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "gpus": job.gpus,
        "power_kw": job.power_kw,
        "checkpoint_gb": job.checkpoint_gb,
        "work_remaining_gpu_h": job.work_remaining_gpu_h,
        "migratable": job.migratable,
        "flex_tier": job.flex_tier,
        "state": job.state,
    }


def operation_to_wire(op: Operation) -> dict[str, Any]:
    return {
        "migration_id": op.migration_id,
        "kind": op.kind,
        "job_id": op.job_id,
        "state": op.state,
        "started_at": format_at(op.started_at),
        "done_at": format_at(op.done_at),
        "expected_s": op.expected_s,
        "checkpoint": checkpoint_to_wire(op.checkpoint),
        "error": op.error,
    }


def status_to_wire(status: SiteStatus) -> dict[str, Any]:
    return {
        "site_id": status.site_id,
        "at": format_at(status.at),
        "gpus_total": status.gpus_total,
        "gpus_free": status.gpus_free,
        "gpus_reserved": status.gpus_reserved,
        "it_power_kw": status.it_power_kw,
        "renewable_kw": status.renewable_kw,
        "forecast_step_s": status.forecast_step_s,
        "renewable_forecast_kw": list(status.renewable_forecast_kw),
        "jobs": [job_status_to_wire(job) for job in status.jobs],
    }

"""Repeated and conflicting calls: the site API's rules that both site controllers keep alike
(``docs/site-api.md``).

The simulator (:mod:`simulators.site_controller`) and the site agent
(:mod:`gateway.agent.controller`) hold different things (simulated jobs, OS processes) but
answer repeated calls and refuse calls for the same reasons: each rule here either says what a
repeated call answers or raises a ``409 conflict``
(:class:`~gateway.sites.serving.RequestError`) that says why.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

from gateway.sites.records import (
    JobSpec,
    JobState,
    Operation,
    OperationKey,
    Reservation,
    ReservationState,
)
from gateway.sites.serving import conflict

POWER_EPSILON_KW = 1e-9
"""Slack when a job's power is compared with its reservation's [kW]."""


def repeated_operation(
    operations: Mapping[OperationKey, Operation],
    started_with: Mapping[OperationKey, object],
    key: OperationKey,
    args: object,
) -> Operation | None:
    """The operation a checkpoint, transfer or restore call with ``key`` (migration id, kind)
    and ``args`` repeats, or None for a new one; a conflict when the key started an operation
    with other arguments (``started_with[key]``)."""
    op = operations.get(key)
    if op is None:
        return None
    if started_with[key] != args:
        raise conflict(f"migration {key[0]} already started a {key[1]} with other arguments")
    return op


def repeated_reservation(
    existing: Reservation | None, asked: Reservation, released_unknown: Container[str]
) -> ReservationState | None:
    """The state a reserve call answers without reserving anything: that of the migration's
    ``existing`` reservation, or ``released`` when the migration's reservation was released
    before it was made (its id is in ``released_unknown``); None for a new reservation. A
    conflict when the existing reservation holds another job, GPUs or power."""
    migration_id = asked.migration_id
    if existing is not None:
        if (existing.job_id, existing.gpus, existing.power_kw) != (
            asked.job_id,
            asked.gpus,
            asked.power_kw,
        ):
            raise conflict(f"migration {migration_id} reserved with other arguments")
        return existing.state
    return "released" if migration_id in released_unknown else None


def check_restore(
    migration_id: str,
    reservation: Reservation | None,
    job: JobSpec,
    site_id: str,
    state_here: JobState | None,
) -> Reservation:
    """The reservation a restore of ``job`` for ``migration_id`` consumes at the site
    ``site_id``: a conflict when none is held (``reservation`` is None or no longer
    ``reserved``), when it holds another job or less than the job needs, or when the job is
    already here (in ``state_here``)."""
    if reservation is None or reservation.state != "reserved":
        raise conflict(f"no reservation for migration {migration_id} at {site_id}")
    if reservation.job_id != job.job_id:
        raise conflict(f"reservation {migration_id} is for job {reservation.job_id}")
    if job.gpus > reservation.gpus or job.power_kw > reservation.power_kw + POWER_EPSILON_KW:
        raise conflict(f"job {job.job_id} needs more than reservation {migration_id} holds")
    if state_here is not None:
        raise conflict(f"job {job.job_id} is already here ({state_here})")
    return reservation


def check_release(
    job_id: str, migration_id: str, state: JobState, transfer: Operation | None
) -> None:
    """A conflict unless the job ``job_id`` in ``state`` may be released (forgotten) for
    ``migration_id``: a finished job, or a checkpointed one whose ``transfer`` for the
    migration is done."""
    if state == "finished":
        return
    if state != "checkpointed":
        raise conflict(f"job {job_id} is {state}; only a checkpointed job is released")
    if transfer is None or transfer.job_id != job_id or transfer.state != "done":
        raise conflict(f"job {job_id} has no completed transfer for {migration_id}")

"""Ambiguous answers of the sites, settled by asking them, never by guessing.

A refusal (4xx) of a repeated call does not say what the site did with the first one: a 409
to a restore may answer a repeat whose arguments differ from a restore the target did start,
and a refused resume may come from a source where the job runs or finished anyway. Before the
dispatcher (:mod:`gateway.migration.dispatch`) acts on such an answer, the site is asked what
it holds: a refused restore is an abort only once the target says it has no restore of this
migration and does not run the job, and an abort is cleaned up (the job resumed at the
source) only once the target confirms it does not run the job. An answer that does not come
(a transient failure) raises, and the migration stays where it is until the next round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.errors import SiteControllerError
from gateway.migration.store import Flight
from gateway.sites.client import SiteControllerClient
from gateway.sites.records import Operation

log = logging.getLogger(__name__)

LIVE_AT_TARGET = ("running", "restoring", "checkpointing")
"""Job states at the target that mean it holds the job (it must not resume at the source)."""


@dataclass(frozen=True)
class RestoreRefused:
    """The target refused the restore and holds neither a restore of the migration nor the
    job: the migration aborts."""

    why: str
    """The target's refusal."""


async def start_restore(f: Flight, target: SiteControllerClient) -> Operation | RestoreRefused:
    """Start the restore at the target: its operation, or :class:`RestoreRefused` when the
    target refused it and says it holds no restore of this migration and does not run the job.

    A refusal alone is ambiguous: a 409 may answer a repeat whose arguments differ from a
    restore the target did start. The target is asked before anything is aborted; an answer
    that does not come (a transient failure) raises, and the migration stays restoring.
    """
    try:
        return await target.restore(f.spec, f.id, f.source_id, f.checkpoint)
    except SiteControllerError as exc:
        if exc.transient:
            raise
        started = await target.operation(f.id, "restore")
        if started is not None:
            log.warning(
                "%s: the target refused a restore call (%s) but has the restore (%s): following it",
                f.id,
                exc,
                started.state,
            )
            return started
        listed = (await target.status()).job(f.spec.job_id)
        if listed is not None and listed.state in LIVE_AT_TARGET:
            raise SiteControllerError(
                f"the target refused the restore ({exc}) yet lists job {f.spec.job_id} "
                f"{listed.state}: waiting for it to settle",
                status=exc.status,
            ) from exc
        return RestoreRefused(str(exc))


async def target_does_not_run(f: Flight, target: SiteControllerClient) -> None:
    """Raise unless the target confirms it neither runs the job nor holds a restore of this
    migration that may still start it: only then may the source resume it."""
    restore = await target.operation(f.id, "restore")
    listed = (await target.status()).job(f.spec.job_id)
    if (restore is not None and restore.state != "failed") or (
        listed is not None and listed.state in LIVE_AT_TARGET
    ):
        what = "its restore " + restore.state if restore is not None else "the job"
        raise SiteControllerError(
            f"the target still holds {what} "
            f"({'not listed' if listed is None else listed.state}); not resuming "
            "the job at the source"
        )


async def resume_at_source(f: Flight, source: SiteControllerClient) -> None:
    """Resume the job at the source; a refusal is fine when the source runs or finished the
    job anyway (it may have finished before its checkpoint), and raises otherwise (the job's
    checkpoint stays safe there, the next round tries again)."""
    try:
        await source.resume(f.spec.job_id, f.id)
    except SiteControllerError as exc:
        if exc.transient:
            raise
        reported = (await source.status()).job(f.spec.job_id)
        if reported is None or reported.state not in ("running", "finished"):
            raise

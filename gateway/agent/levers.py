"""The agent's levers other than migration: pause and unpause a job where it runs.

A paused job stops where it is and keeps its GPUs and memory (its run is suspended: SIGSTOP of
its process group, or ``scontrol suspend`` on a Slurm cluster); it makes no progress, counts at
idle power, and is not checkpointed until it is unpaused. Each use of a lever is named by its
``lever_id``, the idempotency key: a repeat repeats nothing (it does not pause a job that was
unpaused since), and the same id for another job or the other lever is a conflict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from gateway.agent.errors import conflict, unavailable
from gateway.agent.state import AgentJob, AgentState
from gateway.agent.supervisor import JobSupervisor
from gateway.clock import Clock
from gateway.sites.records import JobState, JobStatus

log = logging.getLogger(__name__)

LeverKind = Literal["pause", "unpause"]
_MOVES: dict[LeverKind, tuple[JobState, JobState]] = {
    "pause": ("running", "paused"),
    "unpause": ("paused", "running"),
}
"""Each lever's job state before and after."""


class Levers:
    """The levers of the jobs in ``state``; ``save`` writes the state after each use."""

    def __init__(
        self,
        site_id: str,
        state: AgentState,
        jobs: JobSupervisor,
        clock: Clock,
        save: Callable[[], None],
    ) -> None:
        self._site_id = site_id
        self._state = state
        self._jobs = jobs
        self._clock = clock
        self._save = save

    def _repeated(self, lever_id: str, kind: LeverKind, job_id: str) -> bool:
        """True when ``lever_id`` was used before for this (kind, job); a conflict when it was
        used for another."""
        used = self._state.levers.get(lever_id)
        if used is None:
            return False
        if used != (kind, job_id):
            raise conflict(f"lever {lever_id} was used to {used[0]} job {used[1]}")
        return True

    async def use(self, job: AgentJob, lever_id: str, kind: LeverKind) -> JobStatus:
        """Pause or unpause ``job``; the job after the call."""
        before, after = _MOVES[kind]
        job_id = job.job_id
        if self._repeated(lever_id, kind, job_id) or job.state == after:
            self._state.levers[lever_id] = (kind, job_id)
            self._save()
            return job.status(self._clock.now())
        if job.state != before:
            raise conflict(f"job {job_id} is {job.state}; only a {before} job can {kind}")
        run = self._jobs.process(job_id)
        if run is None:
            raise conflict(f"job {job_id} is between two runs; try again")
        self._jobs.set_state(job, after)  # the job's one writer: other calls see it at once
        try:
            await (run.suspend() if kind == "pause" else run.unsuspend())
        except OSError as exc:
            self._jobs.set_state(job, before)
            raise unavailable(f"site {self._site_id}: cannot {kind} job {job_id}: {exc}") from exc
        self._state.levers[lever_id] = (kind, job_id)
        self._save()
        log.info("site %s: job %s %sd (lever %s)", self._site_id, job_id, kind, lever_id)
        return job.status(self._clock.now())

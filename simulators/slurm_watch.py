"""Asks the Slurm clusters themselves where a job runs, for ``dr-gateway demo --slurm``.

The site agents say where a job is; :class:`SlurmWatch` checks that against Slurm: it reads
``squeue --json`` of every cluster in the background and records each instant at which the
job's batch job (named ``dr-JOB``, the agents' ``job_name_prefix``) was not ended on two
clusters at once. A reservation's hold (``dr-hold-...``) is not the job; it becomes the job
when the restore renames it. Slurm 22.05's ``squeue --json`` lists finished jobs too (for
``MinJobAge``), so :meth:`SlurmWatch.record` also tells which Slurm jobs ran the job, and how
they ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from types import TracebackType

from gateway.agent.slurm.view import SlurmJob, SlurmOutputError, parse_squeue
from simulators.slurm_cluster import SlurmCluster, SlurmError


def batch_jobs(cluster: SlurmCluster, name: str) -> list[SlurmJob]:
    """The cluster's Slurm jobs called ``name``, finished ones included, by id."""
    jobs = parse_squeue(cluster.run("squeue", "--json")).values()
    return sorted((job for job in jobs if job.name == name), key=lambda job: job.job_id)


class SlurmWatch:
    """Samples where Slurm runs the batch job ``name`` on ``clusters`` (by site id), every
    ``interval_s`` wall seconds while it is entered as an async context manager."""

    def __init__(
        self, clusters: Mapping[str, SlurmCluster], name: str, *, interval_s: float = 0.3
    ) -> None:
        self._clusters = dict(clusters)
        self.name = name
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.samples = 0
        self.errors = 0
        """Samples that could not be taken (a Slurm command failed)."""
        self.violations: list[str] = []

    def _look(self) -> dict[str, list[int]]:
        return {
            site_id: [job.job_id for job in batch_jobs(cluster, self.name) if not job.ended]
            for site_id, cluster in self._clusters.items()
        }

    async def sample(self) -> None:
        """Look at every cluster once and record whether the job ran on more than one."""
        try:
            live = await asyncio.to_thread(self._look)
        except (SlurmError, SlurmOutputError):
            self.errors += 1
            return
        self.samples += 1
        running = {site_id: ids for site_id, ids in live.items() if ids}
        if len(running) > 1 and len(self.violations) < 20:
            at = ", ".join(f"{site_id} (Slurm job {ids})" for site_id, ids in running.items())
            self.violations.append(f"{self.name} not ended on {len(running)} clusters: {at}")

    def record(self) -> dict[str, list[SlurmJob]]:
        """Every Slurm job of ``name`` each cluster lists, by site id."""
        return {site_id: batch_jobs(c, self.name) for site_id, c in self._clusters.items()}

    async def __aenter__(self) -> SlurmWatch:
        await self.sample()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.sample()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.sample()

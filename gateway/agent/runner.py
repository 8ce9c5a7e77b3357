"""What runs a job's command: OS processes on this machine, or a workload manager (Slurm).

The supervisor (:mod:`gateway.agent.supervisor`) settles every exit under the checkpoint
contract and does not care where the job runs; a :class:`JobRunner` starts the job's command
and hands back a :class:`JobRun`, which it can ask to checkpoint (SIGTERM), kill, and wait for.

- :class:`ProcessRunner`: each run is a process group on this machine
  (:class:`~gateway.agent.jobs.JobProcess`). When the agent stops, its jobs checkpoint and exit;
  after a crash of the agent the group an earlier run left is stopped and the job runs on from
  its newest checkpoint.
- ``gateway.agent.slurm.runner.SlurmRunner``: each run is a Slurm batch job. Slurm keeps it
  running while the agent is down; at the next start the agent watches it again.

A runner records what identifies a run in the job itself (``pgid`` or ``slurm_job_id``), which
the agent's state file keeps across restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from gateway.agent.jobs import JobPaths, JobProcess, reap_group
from gateway.agent.state import AgentJob


class RunDetached(Exception):
    """A run's wait ended because the agent stops while a workload manager keeps the job."""


class HoldRefused(Exception):
    """The workload manager would not hold the resources of a reservation now (a 409)."""


class JobRun(Protocol):
    """One run of a job's command."""

    stop_requested: bool
    """Whether the run was asked to checkpoint and exit (or killed)."""

    @property
    def label(self) -> str:
        """How log lines name the run: ``pid 1234``, ``Slurm job 17``."""
        ...

    def request_stop(self, grace_s: float) -> None:
        """SIGTERM (checkpoint and exit); killed if still running ``grace_s`` [s] later.
        Repeating it changes nothing."""
        ...

    def kill(self) -> None:
        """End the run at once, without a checkpoint."""
        ...

    async def suspend(self) -> None:
        """Pause the run where it is, keeping its resources; OSError when it cannot be."""
        ...

    async def unsuspend(self) -> None:
        """Let a paused run go on; OSError when it cannot be."""
        ...

    async def wait(self) -> int | None:
        """The run's exit code once it ended (negative: killed by that signal; None: the
        workload manager no longer knows). RunDetached when the agent stops first."""
        ...


class JobRunner(Protocol):
    """Starts jobs' commands and finds the runs an earlier agent left."""

    keeps_jobs_on_close: bool
    """True when the jobs run on while the agent is stopped (a workload manager runs them)."""

    async def open(self) -> None:
        """The agent starts: get ready to start and watch runs."""
        ...

    def usable_gpus(self, jobs: Iterable[AgentJob]) -> int | None:
        """The GPUs the agent's ``jobs`` and reservations may use, when the runner knows them
        (a workload manager's nodes, less what its other jobs hold); None: ``gpus_total``."""
        ...

    async def start(
        self,
        job: AgentJob,
        argv: Sequence[str],
        paths: JobPaths,
        env: Mapping[str, str],
        hold_id: int | None = None,
    ) -> JobRun:
        """Start ``argv`` for ``job`` in ``paths.root`` with ``env`` added, in the resources of
        the hold ``hold_id`` if given; record the run in ``job``. OSError when it cannot
        start."""
        ...

    async def hold(self, migration_id: str, job_id: str, gpus: int, paths: JobPaths) -> int | None:
        """Hold, as the workload manager counts them, the resources a job of ``gpus`` GPUs
        will need here when the migration ``migration_id`` restores ``job_id``; the hold's
        id (None: nothing to hold, the agent's own books are the reservation). HoldRefused
        when they cannot be held now, OSError when the manager cannot be asked."""
        ...

    def release_hold(self, hold_id: int) -> None:
        """Let a hold go (its reservation was released, or its restore failed), in the
        background until the manager takes it."""
        ...

    def settle_holds(self, known: Iterable[int]) -> None:
        """After a restart: let go of holds the agent's state does not know (it died between
        asking for one and saving it)."""
        ...

    async def reattach(self, job: AgentJob, stop_timeout_s: float) -> JobRun | None:
        """After a restart of the agent: the run an earlier agent left for ``job``, to watch
        again, or None when there is none (any leftover is stopped first)."""
        ...

    def forget(self, job: AgentJob) -> None:
        """The job's run ended and was settled: clear what identified it."""
        ...

    async def close(self) -> None:
        """The agent stops: wake every wait with RunDetached if jobs outlive the agent."""
        ...


class ProcessRunner:
    """Jobs as process groups of this machine, under the agent's death signal."""

    keeps_jobs_on_close = False

    async def open(self) -> None:
        return None

    def usable_gpus(self, jobs: Iterable[AgentJob]) -> int | None:
        del jobs
        return None

    async def start(
        self,
        job: AgentJob,
        argv: Sequence[str],
        paths: JobPaths,
        env: Mapping[str, str],
        hold_id: int | None = None,
    ) -> JobRun:
        del hold_id  # processes hold nothing: the agent's books are the reservation
        process = await JobProcess.start(argv, cwd=paths.root, log_path=paths.log_path, env=env)
        job.pgid = process.pid
        return process

    async def hold(self, migration_id: str, job_id: str, gpus: int, paths: JobPaths) -> int | None:
        del migration_id, job_id, gpus, paths
        return None

    def release_hold(self, hold_id: int) -> None:
        del hold_id

    def settle_holds(self, known: Iterable[int]) -> None:
        del known

    async def reattach(self, job: AgentJob, stop_timeout_s: float) -> JobRun | None:
        """A process group left by an earlier agent is stopped (it is not this agent's child,
        so it cannot be waited for); the job then runs on from its newest checkpoint."""
        if job.pgid is not None:
            await reap_group(job.pgid, stop_timeout_s)
            job.pgid = None
        return None

    def forget(self, job: AgentJob) -> None:
        job.pgid = None

    async def close(self) -> None:
        return None

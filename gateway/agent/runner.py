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
        self, job: AgentJob, argv: Sequence[str], paths: JobPaths, env: Mapping[str, str]
    ) -> JobRun:
        """Start ``argv`` for ``job`` in ``paths.root`` with ``env`` added; record the run in
        ``job``. OSError when it cannot start."""
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
        self, job: AgentJob, argv: Sequence[str], paths: JobPaths, env: Mapping[str, str]
    ) -> JobRun:
        process = await JobProcess.start(argv, cwd=paths.root, log_path=paths.log_path, env=env)
        job.pgid = process.pid
        return process

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

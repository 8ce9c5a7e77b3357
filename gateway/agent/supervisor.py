"""The agent's jobs: start them, and settle what each exit means.

:class:`JobSupervisor` keeps one run per running job and watches it; a :class:`JobRunner`
(:mod:`gateway.agent.runner`) says where a run happens: a process group on this machine, or a
Slurm batch job. When a run ends, its exit decides the job's next state under the checkpoint
contract (``docs/site-agent.md``):

- exit 0 with a checkpoint file: the file becomes the job's newest checkpoint; a checkpoint
  operation that asked for it is ``done``;
- exit 0 without one, with its results in its output directory: the job finished (a
  checkpoint operation in flight fails);
- anything else, an exit 0 with neither a checkpoint nor any output included (the job broke
  the contract, or wrote its files elsewhere): a checkpoint operation in flight fails and the
  job runs again from its newest checkpoint; a job that failed on its own is restarted at most
  ``max_restarts`` times.

A job whose checkpoint a resume called off (it is ``running`` again while its run stops)
starts again from the checkpoint it just wrote. While the agent stops, nothing starts again: the
state keeps such jobs ``running``, and :meth:`JobSupervisor.recover` runs them on at the next
start, or watches their runs again where a workload manager kept them running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.agent.config import AgentSettings
from gateway.agent.jobs import (
    CHECKPOINT_ENV,
    JOB_ID_ENV,
    OUTPUT_ENV,
    RESUMED_ENV,
    CheckpointFile,
    JobPaths,
    describe_exit,
    job_argv,
    promote_checkpoint,
)
from gateway.agent.operations import OperationBook
from gateway.agent.runner import JobRun, JobRunner, ProcessRunner, RunDetached
from gateway.agent.state import AgentJob, AgentState, OperationKey
from gateway.clock import Clock
from gateway.sites.records import JobState

log = logging.getLogger(__name__)

_STOP_MARGIN_S = 5.0


class JobSupervisor:
    """Runs of the jobs in ``state``; ``save`` writes the state after each settled exit.
    ``runner`` starts them (default: processes of this machine)."""

    def __init__(
        self,
        settings: AgentSettings,
        state: AgentState,
        operations: OperationBook,
        clock: Clock,
        save: Callable[[], None],
        runner: JobRunner | None = None,
    ) -> None:
        self._settings = settings
        self._state = state
        self._operations = operations
        self._clock = clock
        self._save = save
        self._runner: JobRunner = runner or ProcessRunner()
        self._processes: dict[str, JobRun] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self.closing = False

    @property
    def _site_id(self) -> str:
        return self._settings.site_id

    def process(self, job_id: str) -> JobRun | None:
        """The job's run while it has one."""
        return self._processes.get(job_id)

    def paths(self, job_id: str) -> JobPaths:
        return JobPaths.of(self._settings.data_dir, job_id)

    def set_state(self, job: AgentJob, state: JobState) -> None:
        job.set_state(state, self._clock.now())

    # ---- starting -------------------------------------------------------------------------

    async def launch(self, job: AgentJob, hold_id: int | None = None) -> None:
        """Start the job's process from its newest checkpoint (from the start without one),
        in the resources of the runner's hold ``hold_id`` if given (a restore).

        The caller has set the job's state; raises OSError when the program cannot start. A
        job that is to checkpoint by now (or an agent that is stopping) is signalled at once.
        """
        if job.command is None:
            raise OSError(f"job {job.job_id} has no command")
        paths = self.paths(job.job_id)
        paths.create()
        paths.pending_checkpoint.unlink(missing_ok=True)
        paths.resumed_marker.unlink(missing_ok=True)  # each run confirms its own resume
        resume_from = job.checkpoint.path if job.checkpoint is not None else None
        env = {
            CHECKPOINT_ENV: str(paths.pending_checkpoint),
            OUTPUT_ENV: str(paths.output_dir),
            JOB_ID_ENV: job.job_id,
            RESUMED_ENV: str(paths.resumed_marker),
        }
        argv = job_argv(job.command, job.job_id, paths, resume_from)
        process = await self._runner.start(job, argv, paths, env, hold_id)
        job.progressed_at = self._clock.now()
        self._watch_run(job.job_id, process)
        log.info(
            "site %s: job %s started (%s)%s",
            self._site_id,
            job.job_id,
            process.label,
            f" from {resume_from.name}" if resume_from else "",
        )
        if job.state == "checkpointing" or self.closing:
            process.request_stop(self._settings.checkpoint_timeout_s)

    def _watch_run(self, job_id: str, process: JobRun) -> None:
        self._processes[job_id] = process
        watcher = asyncio.create_task(self._watch(job_id, process), name=f"job {job_id}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def relaunch(self, job: AgentJob) -> None:
        """Run a job again from its newest checkpoint; give up on it if it cannot start."""
        if self.closing:
            return  # it stays "running" and starts again with the agent
        self.set_state(job, "running")
        try:
            await self.launch(job)
        except OSError as exc:
            self.give_up(job, f"cannot start: {exc}")

    async def _launch_paused(self, job: AgentJob) -> None:
        """A paused job whose run ended with the agent: run it again from its newest
        checkpoint, and pause it at once (it stays ``paused``)."""
        try:
            await self.launch(job)
            run = self._processes[job.job_id]
            await run.suspend()
        except OSError as exc:
            self.give_up(job, f"cannot start paused: {exc}")

    def give_up(self, job: AgentJob, why: str) -> None:
        """Stop trying to run a job: it keeps its checkpoint here, or is over without one."""
        state: JobState = "checkpointed" if job.checkpoint is not None else "finished"
        log.error("site %s: job %s %s; now %s", self._site_id, job.job_id, why, state)
        self.set_state(job, state)

    # ---- stopping -------------------------------------------------------------------------

    def request_checkpoint(self, job: AgentJob) -> None:
        """SIGTERM the job's process (SIGKILL after ``checkpoint_timeout_s``). Without a process
        the job is between two runs: the exit being handled or the launch under way settles
        its checkpoint."""
        process = self._processes.get(job.job_id)
        if process is not None:
            process.request_stop(self._settings.checkpoint_timeout_s)

    def abandon(self, job: AgentJob) -> None:
        """Kill the job's run, at once and without a checkpoint: the job is being forgotten
        here (a restore that failed after its start)."""
        process = self._processes.pop(job.job_id, None)
        if process is not None:
            process.kill()
        self._runner.forget(job)

    async def stop_all(self) -> None:
        """The agent stops: every job checkpoints and exits (killed after ``stop_timeout_s``),
        or, under a workload manager that keeps them, runs on while nobody watches."""
        self.closing = True
        if self._runner.keeps_jobs_on_close:
            await self._runner.close()
        else:
            for process in self._processes.values():
                process.request_stop(self._settings.stop_timeout_s)
        if self._watchers:
            await asyncio.wait(
                set(self._watchers), timeout=self._settings.stop_timeout_s + _STOP_MARGIN_S
            )

    # ---- checkpoints ----------------------------------------------------------------------

    async def promote(self, job: AgentJob) -> CheckpointFile | None:
        """Take over a checkpoint the job just wrote, as its newest one."""
        paths = self.paths(job.job_id)
        if not paths.pending_checkpoint.exists():
            return None
        paths.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        job.checkpoint_sequence += 1
        promoted = await promote_checkpoint(
            paths.pending_checkpoint, paths.checkpoint_file(job.checkpoint_sequence)
        )
        if promoted is not None:
            self.replace_checkpoint(job, promoted)
        return promoted

    def replace_checkpoint(self, job: AgentJob, checkpoint: CheckpointFile) -> None:
        """Make ``checkpoint`` the job's newest one and delete the one before."""
        old = job.checkpoint
        job.checkpoint = checkpoint
        if old is not None and old.path != checkpoint.path:
            old.path.unlink(missing_ok=True)

    def _end_checkpoint(
        self, job: AgentJob, promoted: CheckpointFile | None, code: int | None
    ) -> bool:
        """Settle the checkpoint operation of a job whose run ended (``code`` None: in an
        earlier run of the agent, or unknown to the workload manager). True when it failed and
        the job must run again."""
        key: OperationKey = (job.checkpoint_migration_id or "", "checkpoint")
        job.checkpoint_migration_id = None
        if promoted is not None:
            self.set_state(job, "checkpointed")
            self._operations.finish(key, checkpoint=promoted)
            return False
        if code == 0 and self.paths(job.job_id).has_output():
            self.set_state(job, "finished")
            self._operations.finish(key, error="the job finished before its checkpoint")
            return False
        if code is None:
            why = "the job's run ended before it wrote a checkpoint (exit code unknown)"
        elif code == 0:
            why = "the job exited 0 with neither a checkpoint nor any output"
        else:
            why = f"the job ended ({describe_exit(code)}) before writing a checkpoint"
        self._operations.finish(key, error=why)
        self.set_state(job, "running")
        return True

    # ---- exits ----------------------------------------------------------------------------

    async def _watch(self, job_id: str, process: JobRun) -> None:
        try:
            code = await process.wait()
            await self._on_exit(job_id, process, code)
        except RunDetached:
            return  # the agent stops; the job runs on and the next start watches it again
        except Exception:
            # Task boundary: log and keep the agent serving.
            log.exception("site %s: handling the exit of job %s failed", self._site_id, job_id)

    async def _on_exit(self, job_id: str, process: JobRun, code: int | None) -> None:
        """Settle the end of a run; ``code`` None: its exit code is unknown (the workload
        manager forgot the job), and the files it left decide."""
        if self._processes.get(job_id) is process:
            del self._processes[job_id]
        job = self._state.jobs.get(job_id)
        if job is None:
            return
        self._runner.forget(job)
        promoted = None
        if code in (0, None):
            promoted = await self.promote(job)
        else:
            self.paths(job_id).pending_checkpoint.unlink(missing_ok=True)
        log.info(
            "site %s: job %s exited (%s)%s",
            self._site_id,
            job_id,
            "exit code unknown" if code is None else describe_exit(code),
            f", checkpoint {promoted.path.name} ({promoted.size_bytes} bytes)" if promoted else "",
        )
        if job.state == "checkpointing":
            if self._end_checkpoint(job, promoted, code):
                await self.relaunch(job)
        elif job.state in ("running", "paused"):
            if code == 0 and promoted is None:
                await self._exited_without_checkpoint(job)
            elif process.stop_requested:
                await self.relaunch(job)  # a resume called its checkpoint off, or shutdown
            else:
                how = "exit code unknown" if code is None else describe_exit(code)
                await self._after_failure(job, f"exited unexpectedly ({how})")
        self._save()

    async def _exited_without_checkpoint(self, job: AgentJob) -> None:
        """A running job exited 0 and wrote no checkpoint: finished if it left its results in
        its output directory (rule 4), else a failure, never silently over."""
        paths = self.paths(job.job_id)
        if paths.has_output():
            self.set_state(job, "finished")
            log.info("site %s: job %s finished", self._site_id, job.job_id)
            return
        log.error(
            "site %s: job %s exited 0 with neither a checkpoint (%s) nor any output (%s); "
            "the job contract (docs/site-agent.md) counts that as a failure, not as finished",
            self._site_id,
            job.job_id,
            paths.pending_checkpoint,
            paths.output_dir,
        )
        await self._after_failure(job, "exited 0 without a checkpoint or any output")

    async def _after_failure(self, job: AgentJob, why: str) -> None:
        if self.closing:
            return
        job.restarts += 1
        if job.restarts > self._settings.max_restarts:
            self.give_up(job, f"{why}, {job.restarts - 1} restarts used")
            return
        log.warning("site %s: job %s %s; restart %d", self._site_id, job.job_id, why, job.restarts)
        await self.relaunch(job)

    # ---- after a restart of the agent -------------------------------------------------------

    async def recover(self) -> None:
        """Settle the jobs an earlier run of the agent left: watch again the runs a workload
        manager kept; else make sure their old processes are gone, take over checkpoints they
        wrote when it died, settle checkpoint operations and run the running jobs on."""
        for job in list(self._state.jobs.values()):
            run = await self._runner.reattach(job, self._settings.stop_timeout_s)
            if run is None and job.state == "paused":
                await self._launch_paused(job)
                continue
            if run is not None:
                log.info("site %s: job %s: watching %s again", self._site_id, job.job_id, run.label)
                self._watch_run(job.job_id, run)
                if job.state == "checkpointing":
                    run.request_stop(self._settings.checkpoint_timeout_s)
                continue
            if job.state not in ("running", "checkpointing"):
                continue
            promoted = await self.promote(job)
            run_again = job.state == "running"
            if job.state == "checkpointing":
                run_again = self._end_checkpoint(job, promoted, None)
            if run_again:
                await self.relaunch(job)

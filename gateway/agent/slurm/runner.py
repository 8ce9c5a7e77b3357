"""Jobs as Slurm batch jobs: the site agent's runner for a Slurm cluster (``docs/slurm.md``).

- A run is a batch job submitted with ``sbatch``: a script that sets the contract's environment
  and ``exec``s the job's command, so that the command is the batch step's process. The job asks
  for its GPUs as a GRES (``--gres=gpu:N``), CPUs and memory per GPU, and never requeues on its
  own (``--no-requeue``): the agent decides where the job runs next.
- Checkpoint: ``scancel --batch --signal=TERM``; if the job still runs after the grace period,
  ``scancel --signal=KILL``.
- The agent reads the cluster every ``poll_s`` with one ``squeue --json --states=all`` and one
  ``sinfo --json``; every run's wait looks at that reading. A job that Slurm lists as ended has
  its exit code; a job that Slurm no longer lists (after ``MinJobAge``) ended with its exit code
  unknown, and the files it left decide (:mod:`gateway.agent.supervisor`).
- While ``slurmctld`` does not answer, nothing is concluded: waits go on waiting and signals are
  sent again until they are taken.
- When the agent stops, the jobs run on; the next start watches them again (``slurm_job_id`` in
  the agent's state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import time
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.agent.jobs import JobPaths
from gateway.agent.runner import HoldRefused, JobRun, RunDetached
from gateway.agent.slurm.commands import SlurmCommandError, SlurmCommands
from gateway.agent.slurm.settings import SlurmSettings
from gateway.agent.slurm.view import SlurmOutputError, SlurmView, parse_sinfo, parse_squeue
from gateway.agent.state import AgentJob

log = logging.getLogger(__name__)

BATCH_SCRIPT = "slurm-batch.sh"
"""The batch script of a job's runs, in its directory under ``data_dir/jobs``."""
FAST_POLL_S = 0.1
"""How often the agent reads the cluster while it waits for a run to end or a hold to start
(``poll_s`` otherwise) [s]: a migration's pause should not wait for a slow poll."""
HOLD_POLL_S = 0.05
"""How often a hold looks for the script that turns it into the job [s]."""
HOLD_NAME = "hold-"
"""A hold's Slurm job name is the prefix, this, and the migration id."""
_RETRY_MAX_S = 5.0


def batch_script(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The script a run submits: the contract's environment, then ``exec`` of the command."""
    lines = ["#!/bin/sh", "# Written by the dr-gateway site agent: one run of a job."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    lines.append("exec " + " ".join(shlex.quote(argument) for argument in argv))
    return "\n".join(lines) + "\n"


def hold_script(start_script: Path) -> str:
    """The script of a hold: it keeps its allocation until ``start_script`` exists, then runs
    it in its place (the job starts in the GPUs the hold kept, without a gap another job
    could take)."""
    quoted = shlex.quote(str(start_script))
    return (
        "#!/bin/sh\n"
        "# Written by the dr-gateway site agent: holds a reservation's resources until the\n"
        "# restore writes the job's batch script, then becomes the job.\n"
        f"while [ ! -f {quoted} ]; do sleep {HOLD_POLL_S:g}; done\n"
        f"exec /bin/sh {quoted}\n"
    )


def hold_start_script(paths: JobPaths, migration_id: str) -> Path:
    """Where the restore of ``migration_id`` writes the batch script its hold then runs."""
    return paths.root / f"slurm-start-{migration_id}.sh"


def sbatch_args(
    settings: SlurmSettings, name: str, gpus: int, paths: JobPaths, script: Path
) -> list[str]:
    """``sbatch``'s arguments for a batch job called ``name`` (after the prefix) of ``gpus``
    GPUs, run in the job's directory."""
    args = [
        "--parsable",
        f"--job-name={settings.job_name_prefix}{name}",
        f"--chdir={paths.root}",
        f"--output={paths.log_path}",
        "--open-mode=append",
        "--no-requeue",
        "--ntasks=1",
        f"--cpus-per-task={settings.cpus_per_gpu * gpus}",
        f"--mem={settings.mem_per_gpu_mb * gpus}M",
        f"--gres={settings.gres}:{gpus}",
    ]
    if settings.partition is not None:
        args.append(f"--partition={settings.partition}")
    if settings.account is not None:
        args.append(f"--account={settings.account}")
    return [*args, str(script)]


def _write_script(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, 0o700)
    os.replace(temporary, path)


class SlurmRunner:
    """Submits, signals and watches the agent's jobs on one Slurm cluster."""

    keeps_jobs_on_close = True

    def __init__(self, settings: SlurmSettings, commands: SlurmCommands | None = None) -> None:
        self.settings = settings
        self.commands = commands or SlurmCommands(settings)
        self.view: SlurmView | None = None
        self._view_started_at = -1.0
        """Monotonic time the latest successful reading began [s]."""
        self._changed = asyncio.Condition()
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self.closing = False
        self._last_problem: str | None = None
        self._fast = 0
        """Waits that want the cluster read every FAST_POLL_S now."""
        self._poll_now = asyncio.Event()

    # ---- reading the cluster -----------------------------------------------------------

    async def refresh(self) -> SlurmView:
        """Read ``squeue`` and ``sinfo`` now; SlurmCommandError or SlurmOutputError."""
        started_at = time.monotonic()
        squeue = await self.commands.run("squeue", ["--json", "--states=all"])
        sinfo = await self.commands.run("sinfo", ["--json"])
        view = SlurmView(
            jobs=parse_squeue(squeue, self.settings.gres),
            nodes=parse_sinfo(sinfo, self.settings.gres, self.settings.partition),
        )
        async with self._changed:
            self.view = view
            self._view_started_at = started_at
            self._changed.notify_all()
        if self._last_problem is not None:
            log.info("Slurm answers again")
            self._last_problem = None
        return view

    async def open(self) -> None:
        """Read the cluster once (so that the first status has it) and keep reading it."""
        with contextlib.suppress(SlurmCommandError, SlurmOutputError):
            await self.refresh()
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="slurm poll")

    async def _poll(self) -> None:
        while not self.closing:
            try:
                await self.refresh()
            except (SlurmCommandError, SlurmOutputError) as exc:
                if str(exc) != self._last_problem:
                    log.warning("cannot read the Slurm cluster (trying again): %s", exc)
                self._last_problem = str(exc)
            self._poll_now.clear()
            pause_s = min(self.settings.poll_s, FAST_POLL_S) if self._fast else self.settings.poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), pause_s)

    @contextlib.contextmanager
    def fast_polls(self) -> Iterator[None]:
        """Read the cluster every FAST_POLL_S (and once at once) while in this block."""
        self._fast += 1
        self._poll_now.set()
        try:
            yield
        finally:
            self._fast -= 1

    async def next_view(self, after: float) -> tuple[SlurmView, float]:
        """The first reading that began after ``after`` (monotonic [s]), and when it began;
        RunDetached when the agent stops first."""
        async with self._changed:
            while self.view is None or self._view_started_at <= after:
                if self.closing:
                    raise RunDetached
                await self._changed.wait()
            if self.closing:
                raise RunDetached
            return self.view, self._view_started_at

    def usable_gpus(self, jobs: Iterable[AgentJob]) -> int | None:
        """The GPUs the agent's jobs and holds may use (:meth:`SlurmView.gpus_usable`; the
        agent's: runs of ``jobs``, and every Slurm job whose name starts with
        ``job_name_prefix``); 0 before the first reading. They are on the agent's books."""
        view = self.view
        if view is None:
            return 0
        ours = {job.slurm_job_id for job in jobs if job.slurm_job_id is not None}
        prefix = self.settings.job_name_prefix
        ours |= {r.job_id for r in view.jobs.values() if prefix and r.name.startswith(prefix)}
        return view.gpus_usable(ours)

    # ---- runs ----------------------------------------------------------------------------

    async def start(
        self,
        job: AgentJob,
        argv: Sequence[str],
        paths: JobPaths,
        env: Mapping[str, str],
        hold_id: int | None = None,
    ) -> JobRun:
        """Submit the run; with a live hold, the hold becomes the run (renamed to the job's
        name, then handed its batch script)."""
        text = batch_script(argv, env)
        if hold_id is not None and await self._take_over(hold_id, job, paths, text):
            job.slurm_job_id = hold_id
            return SlurmRun(self, hold_id, time.monotonic())
        script = paths.root / BATCH_SCRIPT
        await asyncio.to_thread(_write_script, script, text)
        args = sbatch_args(self.settings, job.job_id, job.spec.gpus, paths, script)
        slurm_job_id = await self._sbatch(args)
        job.slurm_job_id = slurm_job_id
        return SlurmRun(self, slurm_job_id, time.monotonic())

    async def _sbatch(self, args: Sequence[str]) -> int:
        try:
            out = await self.commands.run("sbatch", args)
        except SlurmCommandError as exc:
            raise OSError(str(exc)) from exc
        try:
            return int(out.strip().split(";")[0])
        except ValueError as exc:
            raise OSError(f"sbatch printed {out.strip()[:100]!r}, not a job id") from exc

    async def _take_over(self, hold_id: int, job: AgentJob, paths: JobPaths, text: str) -> bool:
        """Turn the hold into the job's run; False when the hold is no more (the run is then
        submitted afresh)."""
        try:
            view = await self.refresh()  # now: the restore waits on this
        except (SlurmCommandError, SlurmOutputError) as exc:
            raise OSError(f"cannot read the Slurm cluster: {exc}") from exc
        record = view.jobs.get(hold_id)
        if record is None or record.ended:
            log.warning(
                "Slurm job %d, the hold of %s, is gone; submitting anew", hold_id, job.job_id
            )
            return False
        name = f"{self.settings.job_name_prefix}{job.job_id}"
        try:
            await self.commands.run("scontrol", ["update", f"JobId={hold_id}", f"Name={name}"])
        except SlurmCommandError as exc:
            raise OSError(str(exc)) from exc
        migration_id = record.name.removeprefix(self.settings.job_name_prefix + HOLD_NAME)
        await asyncio.to_thread(_write_script, hold_start_script(paths, migration_id), text)
        log.info("Slurm job %d (a hold) becomes job %s", hold_id, job.job_id)
        return True

    async def hold(self, migration_id: str, job_id: str, gpus: int, paths: JobPaths) -> int | None:
        """Submit a hold (a batch job of the job's resources that waits for its script) and
        return its id once Slurm runs it; HoldRefused when Slurm does not start it within
        ``hold_start_timeout_s`` (it is cancelled), OSError when sbatch fails."""
        paths.root.mkdir(parents=True, exist_ok=True)
        start = hold_start_script(paths, migration_id)
        start.unlink(missing_ok=True)
        script = paths.root / f"slurm-hold-{migration_id}.sh"
        await asyncio.to_thread(_write_script, script, hold_script(start))
        name = f"{HOLD_NAME}{migration_id}"
        hold_id = await self._sbatch(sbatch_args(self.settings, name, gpus, paths, script))
        try:
            with self.fast_polls():
                await self._until_running(hold_id)
        except BaseException:
            self.release_hold(hold_id)
            raise
        log.info("Slurm job %d holds %d GPUs for job %s (%s)", hold_id, gpus, job_id, migration_id)
        return hold_id

    async def _until_running(self, hold_id: int) -> None:
        timeout_s = self.settings.hold_start_timeout_s
        after = time.monotonic()
        deadline = after + timeout_s
        state = "not listed yet"
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    view, after = await self.next_view(after)
            except TimeoutError:
                raise HoldRefused(
                    f"Slurm did not start the hold within {timeout_s:g} s ({state})"
                ) from None
            record = view.jobs.get(hold_id)
            if record is not None and record.holds_gpus:
                return
            if record is not None and record.ended:
                raise HoldRefused(f"Slurm ended the hold ({record.state})")
            if record is not None:
                state = f"{record.state}, reason {record.reason}"

    def release_hold(self, hold_id: int) -> None:
        self.spawn(self.scancel(hold_id, [], asyncio.Event()), f"release hold {hold_id}")

    def settle_holds(self, known: Iterable[int]) -> None:
        """Cancel the holds Slurm runs for this agent that its state does not know."""
        view = self.view
        if view is None:
            return
        kept = set(known)
        prefix = f"{self.settings.job_name_prefix}{HOLD_NAME}"
        for record in view.jobs.values():
            if record.name.startswith(prefix) and not record.ended and record.job_id not in kept:
                log.warning(
                    "Slurm job %d: a hold the agent does not know; cancelling it", record.job_id
                )
                self.release_hold(record.job_id)

    async def reattach(self, job: AgentJob, stop_timeout_s: float) -> JobRun | None:
        """The batch job an earlier agent submitted: watched again, running or ended."""
        del stop_timeout_s  # Slurm keeps the job; nothing is left to stop
        if job.slurm_job_id is None:
            return None
        return SlurmRun(self, job.slurm_job_id, -1.0)

    def forget(self, job: AgentJob) -> None:
        job.slurm_job_id = None

    async def close(self) -> None:
        self.closing = True
        async with self._changed:
            self._changed.notify_all()
        tasks = [t for t in (self._poller, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, work: Coroutine[Any, Any, object], name: str) -> None:
        """Run ``work`` in the background until it ends or the agent stops."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def scancel(self, slurm_job_id: int, args: Sequence[str], ended: asyncio.Event) -> bool:
        """``scancel ARGS JOBID``, again after a transient failure, until taken or the job
        ended; False when Slurm refused it for good (logged: the job is gone, or pending and
        cannot take a signal)."""
        delay_s = 0.1
        while not ended.is_set() and not self.closing:
            try:
                await self.commands.run("scancel", [*args, str(slurm_job_id)])
                return True
            except SlurmCommandError as exc:
                if not exc.transient:
                    log.info("Slurm job %d: %s", slurm_job_id, exc)
                    return False
                log.warning("Slurm job %d: %s; trying again", slurm_job_id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), delay_s)
            delay_s = min(_RETRY_MAX_S, delay_s * 2)
        return True


class SlurmRun:
    """One batch job of a job; ``since`` [monotonic s]: when it was submitted (a reading that
    began later and does not list it means Slurm forgot it), -1 for a job found after a
    restart."""

    def __init__(self, runner: SlurmRunner, slurm_job_id: int, since: float) -> None:
        self._runner = runner
        self.slurm_job_id = slurm_job_id
        self._since = since
        self.stop_requested = False
        self._ended = asyncio.Event()

    def __repr__(self) -> str:
        return f"SlurmRun({self.slurm_job_id})"

    @property
    def label(self) -> str:
        return f"Slurm job {self.slurm_job_id}"

    def request_stop(self, grace_s: float) -> None:
        if self.stop_requested or self._ended.is_set():
            self.stop_requested = True
            return
        self.stop_requested = True
        self._runner.spawn(self._until_ended(self._stop(grace_s)), f"stop {self.slurm_job_id}")

    async def _until_ended(self, signalling: Coroutine[Any, Any, object]) -> None:
        """Signal the run, and read the cluster every FAST_POLL_S until it is seen ended: a
        migration's pause should not wait for a slow poll."""
        with self._runner.fast_polls():
            await signalling
            await self._ended.wait()

    async def _stop(self, grace_s: float) -> None:
        runner = self._runner
        if not await runner.scancel(self.slurm_job_id, ["--batch", "--signal=TERM"], self._ended):
            # Not started yet (nothing new to save) or gone: cancel it now.
            await runner.scancel(self.slurm_job_id, [], self._ended)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), grace_s)
            return
        log.warning("Slurm job %d did not end after SIGTERM; cancelling it", self.slurm_job_id)
        await runner.scancel(self.slurm_job_id, ["--signal=KILL", "--full"], self._ended)
        await runner.scancel(self.slurm_job_id, [], self._ended)

    async def suspend(self) -> None:
        """``scontrol suspend``: the job's processes stop; Slurm keeps its GPUs and memory
        allocated and frees its CPUs. A job Slurm has not started yet is held instead
        (``scontrol hold``: it does not start until released)."""
        await self._scontrol("suspend", "hold")

    async def unsuspend(self) -> None:
        """``scontrol resume``, or ``scontrol release`` of a job held before it started."""
        await self._scontrol("resume", "release")

    async def _scontrol(self, verb: str, otherwise: str) -> None:
        scontrol = self._runner.commands.run
        try:
            await scontrol("scontrol", [verb, str(self.slurm_job_id)])
        except SlurmCommandError as exc:
            try:
                await scontrol("scontrol", [otherwise, str(self.slurm_job_id)])
            except SlurmCommandError:
                raise OSError(str(exc)) from exc

    def kill(self) -> None:
        self.stop_requested = True
        kill = self._runner.scancel(self.slurm_job_id, [], self._ended)
        self._runner.spawn(self._until_ended(kill), f"kill {self.slurm_job_id}")

    async def wait(self) -> int | None:
        """The exit code once Slurm lists the job ended (None: Slurm forgot it)."""
        after = -1.0
        while True:
            view, after = await self._runner.next_view(after)
            record = view.jobs.get(self.slurm_job_id)
            if record is None and after > self._since:
                self._ended.set()
                return None  # Slurm forgot the job (MinJobAge passed): its files decide
            if record is not None and record.ended:
                self._ended.set()
                return record.exit_code

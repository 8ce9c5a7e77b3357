"""Job processes under the checkpoint contract (``docs/site-agent.md``).

- :class:`JobPaths`: where a job's files live under the agent's data directory.
- :func:`job_argv`: a job's command with its placeholders filled in, ``--resume PATH`` appended
  when it restarts from a checkpoint.
- :class:`JobProcess`: one run of a command as an asyncio subprocess in a process group of its
  own. SIGTERM asks it to checkpoint and exit; a timer escalates to SIGKILL. On Linux the kernel
  sends the job SIGTERM when the agent dies (``PR_SET_PDEATHSIG``), so a job never keeps
  running unsupervised after a SIGKILL of the agent: it writes its checkpoint and exits.
- :func:`promote_checkpoint` and :func:`hash_file`: a checkpoint the job wrote becomes a
  :class:`CheckpointFile` with its size and sha256 (streamed, in a worker thread).
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import os
import shutil
import signal
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESUME_OPTION = "--resume"
CHECKPOINT_ENV = "DR_AGENT_CHECKPOINT_PATH"
OUTPUT_ENV = "DR_AGENT_OUTPUT_DIR"
JOB_ID_ENV = "DR_AGENT_JOB_ID"
RESUMED_ENV = "DR_AGENT_RESUMED_PATH"
RESUMED_PLACEHOLDER = "resumed_path"
_HASH_BUFFER_BYTES = 1 << 20
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class CheckpointFile:
    """A complete checkpoint on this site's disk: its size [bytes] and sha256 (hex)."""

    path: Path
    size_bytes: int
    sha256: str

    @property
    def size_gb(self) -> float:
        """Size [GB] (10^9 bytes)."""
        return self.size_bytes / 1e9


@dataclass(frozen=True)
class JobPaths:
    """A job's directory under the agent's ``data_dir/jobs``.

    ``output_dir``: the job's output; ``pending_checkpoint``: where the job writes its checkpoint
    when signalled; ``checkpoints_dir``: checkpoints the agent has taken over; ``log_path``: the
    job's stdout and stderr.
    """

    root: Path

    @classmethod
    def of(cls, data_dir: Path, job_id: str) -> JobPaths:
        """The job's paths, absolute: the job runs in ``root``, so a relative path handed to
        it would name a file below its own directory instead (the settings make ``data_dir``
        absolute already; this keeps any other caller safe)."""
        return cls(data_dir.absolute() / "jobs" / job_id)

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def pending_checkpoint(self) -> Path:
        return self.root / "checkpoint.pending"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def log_path(self) -> Path:
        return self.root / "job.log"

    @property
    def resumed_marker(self) -> Path:
        """The file a job that confirms its resumes creates once it has loaded a checkpoint."""
        return self.root / "resumed"

    def has_output(self) -> bool:
        """Whether the output directory holds anything: the evidence of a completed job (the
        contract's rule 4: a job that completes writes its results there)."""
        try:
            with os.scandir(self.output_dir) as entries:
                return any(True for _ in entries)
        except FileNotFoundError:
            return False

    def checkpoint_file(self, sequence: int) -> Path:
        return self.checkpoints_dir / f"checkpoint-{sequence:06d}.bin"

    def create(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)


def job_argv(
    command: Sequence[str], job_id: str, paths: JobPaths, resume_from: Path | None
) -> list[str]:
    """The command with ``{python}``, ``{job_id}``, ``{output_dir}``, ``{checkpoint_path}`` and
    ``{resumed_path}`` filled in, and ``--resume PATH`` appended when ``resume_from`` is given."""
    values = {
        "python": sys.executable,
        "job_id": job_id,
        "output_dir": str(paths.output_dir),
        "checkpoint_path": str(paths.pending_checkpoint),
        RESUMED_PLACEHOLDER: str(paths.resumed_marker),
    }
    argv = [argument.format(**values) for argument in command]
    if resume_from is not None:
        argv += [RESUME_OPTION, str(resume_from)]
    return argv


def confirms_resume(command: Sequence[str]) -> bool:
    """Whether the command names ``{resumed_path}``: the job confirms that it has loaded its
    checkpoint by creating that file."""
    return any(
        name == RESUMED_PLACEHOLDER
        for argument in command
        for _, name, _, _ in string.Formatter().parse(argument)
    )


def program_problem(command: Sequence[str]) -> str | None:
    """Why the command's program cannot be run here, or None."""
    program = job_argv(command, "-", JobPaths(Path(".")), None)[0]
    if shutil.which(program) is None:
        return f"no executable program {program!r} (not found, or not executable)"
    return None


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _hash(path: Path) -> tuple[int, str]:
    with path.open("rb") as stream:
        digest = hashlib.file_digest(stream, "sha256")
        return stream.tell(), digest.hexdigest()


async def hash_file(path: Path) -> tuple[int, str]:
    """(size [bytes], sha256 hex) of a file, read in a worker thread."""
    return await asyncio.to_thread(_hash, path)


async def promote_checkpoint(pending: Path, target: Path) -> CheckpointFile | None:
    """Take over the checkpoint a job wrote to ``pending``: rename it to ``target`` and hash it.

    None when the job wrote none. The job writes ``pending`` atomically (contract), so a file
    that is there is complete.
    """
    try:
        os.replace(pending, target)
    except FileNotFoundError:
        return None
    size_bytes, sha256 = await hash_file(target)
    return CheckpointFile(target, size_bytes, sha256)


def _death_signal_preexec(parent_pid: int) -> Callable[[], None] | None:
    """A function for the child, between fork and exec: SIGTERM it when the agent dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # the agent died before prctl took effect
            os._exit(1)

    return set_death_signal


class JobProcess:
    """One run of a job's command, the leader of a process group of its own."""

    def __init__(self, process: asyncio.subprocess.Process, argv: Sequence[str]) -> None:
        self._process = process
        self.argv = tuple(argv)
        self.pid = process.pid
        self.stop_requested = False
        self._kill_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"JobProcess(pid={self.pid}, argv={list(self.argv)!r})"

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path,
        log_path: Path,
        env: Mapping[str, str],
    ) -> JobProcess:
        """Start ``argv`` with ``env`` added to the agent's environment; output to ``log_path``.

        Raises OSError when the program cannot be started.
        """
        with log_path.open("ab") as output:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env={**os.environ, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_death_signal_preexec(os.getpid()),
            )
        log.debug("started pid %d: %s", process.pid, argv)
        return cls(process, argv)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    @property
    def label(self) -> str:
        return f"pid {self.pid}"

    async def suspend(self) -> None:
        """Pause: SIGSTOP to the process group (OSError when it is gone)."""
        if not kill_group(self.pid, signal.SIGSTOP):
            raise OSError(f"process group {self.pid} is gone")

    async def unsuspend(self) -> None:
        """Go on after a pause: SIGCONT to the process group (OSError when it is gone)."""
        if not kill_group(self.pid, signal.SIGCONT):
            raise OSError(f"process group {self.pid} is gone")

    def kill(self) -> None:
        """SIGKILL the process group at once."""
        self.stop_requested = True
        kill_group(self.pid, signal.SIGKILL)

    async def wait(self) -> int:
        """Wait for the exit; the return code (negative: killed by that signal)."""
        code = await self._process.wait()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        kill_group(self.pid, signal.SIGKILL)  # anything the job left behind in its group
        return code

    def request_stop(self, grace_s: float) -> None:
        """SIGTERM to the job's process group (and SIGCONT, so that a paused job handles
        it); SIGKILL if it has not exited ``grace_s`` [s] later. Repeating it changes
        nothing."""
        if self.stop_requested or self._process.returncode is not None:
            self.stop_requested = True
            return
        self.stop_requested = True
        kill_group(self.pid, signal.SIGTERM)
        kill_group(self.pid, signal.SIGCONT)
        self._kill_timer = asyncio.get_running_loop().call_later(grace_s, self._kill)

    def _kill(self) -> None:
        if self._process.returncode is None:
            log.warning("pid %d did not exit after SIGTERM; killing it", self.pid)
            kill_group(self.pid, signal.SIGKILL)


def kill_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to a process group; False when there is no such group."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not allowed to signal process group %d", pgid)
        return False
    return True


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def reap_group(pgid: int, grace_s: float, poll_s: float = 0.05) -> None:
    """Make sure a process group left by an earlier run of the agent is gone: SIGTERM it,
    wait up to ``grace_s`` [s], then SIGKILL it. The group is not this agent's child, so its
    end is polled every ``poll_s`` [s]."""
    if not kill_group(pgid, signal.SIGTERM):
        return
    kill_group(pgid, signal.SIGCONT)  # a paused group handles its SIGTERM
    log.warning("process group %d of an earlier run is still alive; stopping it", pgid)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while group_alive(pgid):
        if loop.time() > deadline:
            kill_group(pgid, signal.SIGKILL)
            return
        await asyncio.sleep(poll_s)

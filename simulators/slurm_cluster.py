"""A real, self-contained Slurm cluster of one node on this machine, for tests, benchmarks and
the demo.

:meth:`SlurmCluster.start` builds everything a cluster needs under a base directory of its own and
starts its daemons as child processes of this one, in the foreground (so their process ids are
known without pid files): a ``munged`` with its own key, socket, pid, log and seed files;
``slurmctld`` with a fresh ``StateSaveLocation``; one ``slurmd -N NODE`` with its own
``SlurmdSpoolDir``. Nothing uses ``/run/munge``, ``/etc/slurm`` or ``/var/spool``: the Slurm
commands reach the cluster through ``SLURM_CONF`` (:attr:`SlurmCluster.env`), and
``slurm.conf``'s ``AuthInfo=socket=...`` names the cluster's munge socket. Two clusters (two
names, two base directories) run side by side.

The node has the configured CPUs, memory and GPUs whatever the machine has
(``SlurmdParameters=config_overrides``). Its GPUs are stand-ins: character devices made with
``mknod`` under the base directory (NVIDIA's major number), named by ``gres.conf``'s ``File=``
(a ``Count=`` alone leaves the node INVAL). Nothing needs cgroups: processes are tracked by their
parents (``proctrack/linuxproc``) and not confined (``task/none``). Only root can do all this
(``SlurmUser=root``, ``mknod``).

Finished jobs stay visible to ``squeue`` for ``MinJobAge`` seconds (no accounting database
runs). The schedulers run every second: a job submitted to an idle node runs 0.05 to 0.95 s
later (Slurm's defaults: 1.8 to 3 s). A cluster starts (``start`` until the node is idle) in
about 0.2 s and stops in about 0.1 s on a quiet machine.

What Slurm 22.05 does here, measured with this module: ``squeue --json`` lists every job the
controller knows, finished ones included, and ignores ``--states``, ``--jobs`` and the other
filters; a SIGKILLed slurmctld comes back with the state it last saved, which lags the changes by
up to about 5 s (a job started just before the kill comes back PENDING); while slurmctld is down
``squeue`` fails after about 9 s and ``sbatch`` after about 18 s.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from simulators.hang_guard import HANG_GUARD_S

SLURM_BINARIES = (
    "munged",
    "mungekey",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)
"""The programs a cluster needs (Debian: munge, slurmctld, slurmd, slurm-client)."""
GPU_DEVICE_MAJOR = 195
"""Major number of NVIDIA's GPU character devices (``/dev/nvidia0`` is 195:0)."""
MIN_JOB_AGE_S = 300
"""How long a finished job stays visible to ``squeue`` [s] (``MinJobAge``)."""
KILL_WAIT_S = 5
"""Between SIGTERM and SIGKILL when Slurm ends a job (``scancel``, time limit) [s]
(``KillWait``; Slurm's default is 30)."""
SCHEDULER_PARAMETERS = "sched_interval=1,batch_sched_delay=0,bf_interval=1"
"""The main and backfill schedulers run every second and batch jobs start without delay (Slurm's
defaults: 60 s, 3 s, 30 s)."""
POLL_S = 0.05
"""Pause between two looks at a daemon's state [wall s]."""
SOCKET_PATH_MAX_CHARS = 107
"""Longest path of a Unix socket (``sun_path`` holds 108 bytes with its terminating NUL)."""
_CLUSTER_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_LOG_TAIL_LINES = 15


class SlurmError(RuntimeError):
    """A Slurm cluster could not be started or stopped, or a Slurm command failed."""


def slurm_available() -> str | None:
    """Why no Slurm cluster can run on this machine (a missing program, not root), or None."""
    missing = [name for name in SLURM_BINARIES if shutil.which(name) is None]
    if missing:
        return f"Slurm programs not on PATH: {', '.join(missing)}"
    if os.geteuid() != 0:
        return "a Slurm cluster of SlurmCluster runs as root (SlurmUser=root, mknod)"
    return None


def free_loopback_ports(count: int) -> list[int]:
    """``count`` different TCP ports free on 127.0.0.1 now. Slurm takes fixed ports from
    ``slurm.conf``, so each port is found by binding port 0 and closed again before the daemon
    binds it: another process could take it in between, which on the loopback of a test machine
    does not happen in practice (the daemon then fails to start and says so)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


@dataclass(frozen=True)
class NodeSize:
    """What the cluster's one node offers: ``gpus`` [-], ``cpus`` [-], ``memory_mb`` [MiB]."""

    gpus: int
    cpus: int
    memory_mb: int

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.cpus < 1 or self.memory_mb < self.cpus:
            raise ValueError(f"node size: need gpus >= 0, cpus >= 1, memory_mb >= cpus: {self}")


@dataclass(frozen=True)
class Layout:
    """Where a cluster keeps its files: under ``base_dir``, but for its Unix sockets, which
    live under ``short_dir`` (a short path of its own under ``/tmp``): slurmstepd names each
    step's socket ``SlurmdSpoolDir/NODE_JOB.STEP``, and a socket's path has at most 107
    characters; under pytest-xdist's temporary directories the spool was 117 (measured:
    "Unix socket path ... is too long", the job cancelled at launch). ``work_dir`` is for the
    jobs' scripts and output files."""

    base_dir: Path
    short_dir: Path
    conf_path: Path
    munge_dir: Path
    munge_socket: Path
    munge_key: Path
    state_dir: Path
    spool_dir: Path
    log_dir: Path
    dev_dir: Path
    work_dir: Path

    @classmethod
    def under(cls, base_dir: Path, short_dir: Path) -> Layout:
        munge_dir = base_dir / "munge"
        return cls(
            base_dir=base_dir,
            short_dir=short_dir,
            conf_path=base_dir / "slurm.conf",
            munge_dir=munge_dir,
            munge_socket=short_dir / "munge.socket",
            munge_key=munge_dir / "munge.key",
            state_dir=base_dir / "state",
            spool_dir=short_dir / "spool",
            log_dir=base_dir / "log",
            dev_dir=base_dir / "dev",
            work_dir=base_dir / "work",
        )


@dataclass(frozen=True)
class ClusterConf:
    """What ``slurm.conf`` says beyond the layout: the cluster's and node's names, the node's
    size, the two ports, ``MinJobAge`` and ``KillWait`` [s]."""

    name: str
    node_name: str
    size: NodeSize
    controller_port: int
    node_port: int
    min_job_age_s: int = MIN_JOB_AGE_S
    kill_wait_s: int = KILL_WAIT_S


def slurm_conf_text(layout: Layout, conf: ClusterConf) -> str:
    """The ``slurm.conf`` of a cluster of one node on this host."""
    size = conf.size
    host = socket.gethostname().split(".")[0]
    gres = f" Gres=gpu:{size.gpus}" if size.gpus else ""
    lines = [
        f"ClusterName={conf.name}",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={conf.controller_port}",
        f"SlurmdPort={conf.node_port}",
        # The daemons listen on the address the host name resolves to (loopback), not on every
        # address: NoCtldInAddrAny for slurmctld, NoInAddrAny for slurmd.
        "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={layout.munge_socket}",
        f"StateSaveLocation={layout.state_dir}",
        f"SlurmdSpoolDir={layout.spool_dir}",
        f"SlurmctldPidFile={layout.log_dir / 'slurmctld.pid'}",
        f"SlurmdPidFile={layout.log_dir / 'slurmd.pid'}",
        f"SlurmctldLogFile={layout.log_dir / 'slurmctld.log'}",
        f"SlurmdLogFile={layout.log_dir / 'slurmd.log'}",
        f"PlugStackConfig={layout.base_dir / 'plugstack.conf'}",
        "MailProg=/bin/true",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SchedulerType=sched/backfill",
        f"SchedulerParameters={SCHEDULER_PARAMETERS}",
        f"MinJobAge={conf.min_job_age_s}",
        f"KillWait={conf.kill_wait_s}",
        "ReturnToService=2",
        "SlurmdParameters=config_overrides",
        "GresTypes=gpu",
        f"DefMemPerCPU={size.memory_mb // size.cpus}",
        f"NodeName={conf.node_name} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={size.cpus}"
        f" RealMemory={size.memory_mb}{gres} State=UNKNOWN",
        f"PartitionName=main Nodes={conf.node_name} Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def gres_conf_text(layout: Layout, conf: ClusterConf) -> str:
    """The ``gres.conf`` naming the node's stand-in GPU devices (empty without GPUs)."""
    devices = [layout.dev_dir / f"gpu{index}" for index in range(conf.size.gpus)]
    return "".join(f"NodeName={conf.node_name} Name=gpu File={path}\n" for path in devices)


def _make_gpu_devices(layout: Layout, gpus: int) -> None:
    layout.dev_dir.mkdir()
    for index in range(gpus):
        path = layout.dev_dir / f"gpu{index}"
        device = os.makedev(GPU_DEVICE_MAJOR, index)
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, device)
        except OSError as exc:
            raise SlurmError(f"cannot make the stand-in GPU device {path}: {exc}") from exc


def _write_files(layout: Layout, conf: ClusterConf) -> None:
    """The cluster's directories, munge key, configuration files and GPU devices; the base
    directory must not exist or be empty."""
    if len(str(layout.munge_socket)) > SOCKET_PATH_MAX_CHARS:
        raise SlurmError(
            f"base directory {layout.base_dir} is too long: the munge socket "
            f"{layout.munge_socket} is over {SOCKET_PATH_MAX_CHARS} characters"
        )
    layout.base_dir.mkdir(parents=True, exist_ok=True)
    if any(layout.base_dir.iterdir()):
        raise SlurmError(f"base directory {layout.base_dir} is not empty")
    for directory in (layout.state_dir, layout.spool_dir, layout.log_dir, layout.work_dir):
        directory.mkdir()
    layout.munge_dir.mkdir(mode=0o700)
    _run(["mungekey", "--create", "--keyfile", str(layout.munge_key)], os.environ)
    _make_gpu_devices(layout, conf.size.gpus)
    layout.conf_path.write_text(slurm_conf_text(layout, conf))
    (layout.base_dir / "gres.conf").write_text(gres_conf_text(layout, conf))
    (layout.base_dir / "plugstack.conf").write_text("")


def _run(args: list[str], env: Mapping[str, str], timeout_s: float = HANG_GUARD_S) -> str:
    """Run a command and return its standard output; a failure raises :class:`SlurmError` with
    the command and its standard error."""
    try:
        done = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{' '.join(args)}: no answer within {timeout_s} s") from exc
    if done.returncode != 0:
        raise SlurmError(
            f"{' '.join(args)} exited with {done.returncode}: {done.stderr.strip()[-500:]}"
        )
    return done.stdout


def _slurm_env(conf_path: Path) -> dict[str, str]:
    """This process's environment with ``SLURM_CONF`` naming the cluster, without the
    ``SLURM_*`` variables of a job this process might run in (``sbatch`` would take
    ``SLURM_JOB_ID`` and the like as its own options)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["SLURM_CONF"] = str(conf_path)
    return env


def _tail(path: Path) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    lines = path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    return f"{path}:\n" + "\n".join(lines)


class SlurmCluster:
    """One running cluster of one node. Start it with :meth:`start`; :meth:`stop` it."""

    def __init__(self, layout: Layout, conf: ClusterConf) -> None:
        self.layout = layout
        self.conf = conf
        self.env = _slurm_env(layout.conf_path)
        """The environment for Slurm commands run against this cluster."""
        self._munged: subprocess.Popen[bytes] | None = None
        self._slurmctld: subprocess.Popen[bytes] | None = None
        self._slurmd: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls,
        base_dir: Path,
        name: str,
        *,
        gpus: int,
        cpus: int,
        memory_mb: int,
        min_job_age_s: int = MIN_JOB_AGE_S,
        kill_wait_s: int = KILL_WAIT_S,
    ) -> SlurmCluster:
        """Build a cluster called ``name`` (lower case) under ``base_dir`` (new or empty) with
        one node of ``gpus``, ``cpus`` and ``memory_mb`` [MiB], start its daemons and return
        once ``sinfo`` shows the node idle. Whatever started is stopped again on a failure."""
        if not _CLUSTER_NAME.fullmatch(name):
            raise ValueError(f"cluster name {name!r}: lower-case letters, digits, _ (<= 40)")
        controller_port, node_port = free_loopback_ports(2)
        conf = ClusterConf(
            name=name,
            node_name=f"{name}-node",
            size=NodeSize(gpus=gpus, cpus=cpus, memory_mb=memory_mb),
            controller_port=controller_port,
            node_port=node_port,
            min_job_age_s=min_job_age_s,
            kill_wait_s=kill_wait_s,
        )
        short_dir = Path(tempfile.mkdtemp(prefix="slurm-"))
        layout = Layout.under(base_dir.resolve(), short_dir)
        try:
            _write_files(layout, conf)
        except BaseException:
            shutil.rmtree(short_dir, ignore_errors=True)
            raise
        cluster = cls(layout, conf)
        try:
            cluster._start_munged()
            cluster.start_controller()
            cluster._start_node()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def name(self) -> str:
        return self.conf.name

    @property
    def node_name(self) -> str:
        return self.conf.node_name

    @property
    def base_dir(self) -> Path:
        return self.layout.base_dir

    @property
    def conf_path(self) -> Path:
        return self.layout.conf_path

    @property
    def work_dir(self) -> Path:
        """A directory of the cluster for the jobs' scripts and output files."""
        return self.layout.work_dir

    def run(self, *args: str, timeout_s: float = HANG_GUARD_S) -> str:
        """Run a Slurm command (``"squeue", "--json"``) against this cluster and return its
        standard output; a failure raises :class:`SlurmError`."""
        return _run(list(args), self.env, timeout_s)

    def node_state(self) -> str | None:
        """The node's state as ``sinfo`` prints it (``idle``, ``mixed``, ``allocated``,
        ``idle*`` when not responding, ...), or None while the controller does not answer."""
        try:
            return self.run("sinfo", "--noheader", "--Node", "--format=%T").strip() or None
        except SlurmError:
            return None

    def controller_answers(self) -> bool:
        """Whether slurmctld answers (``scontrol ping``)."""
        try:
            self.run("scontrol", "ping")
        except SlurmError:
            return False
        return True

    def start_controller(self) -> None:
        """Start slurmctld (again: with the state it saved) and return once it answers."""
        if self._slurmctld is not None and self._slurmctld.poll() is None:
            raise SlurmError(f"slurmctld of cluster {self.name} is already running")
        self._slurmctld = self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf_path)])
        self._wait(self.controller_answers, "slurmctld answers scontrol ping")

    def stop_controller(self) -> None:
        """Stop slurmctld with SIGTERM (it saves its state) and wait until it has exited."""
        self._end(self._slurmctld, signal.SIGTERM)
        self._slurmctld = None

    def kill_controller(self) -> None:
        """Kill slurmctld (and its slurmscriptd) with SIGKILL, as a crash would."""
        self._end(self._slurmctld, signal.SIGKILL)
        self._slurmctld = None

    def stop(self) -> None:
        """Stop slurmd and slurmctld, kill every process of the jobs that remains, then stop
        munged; raise :class:`SlurmError` if a process of the cluster is still there."""
        self._end(self._slurmd, signal.SIGTERM)
        self._end(self._slurmctld, signal.SIGTERM)
        self._slurmd = self._slurmctld = None
        self._kill_remaining()
        self._end(self._munged, signal.SIGTERM)
        self._munged = None
        remaining = cluster_processes(self.base_dir)
        shutil.rmtree(self.layout.short_dir, ignore_errors=True)
        if remaining:
            raise SlurmError(f"cluster {self.name}: processes left after stop: {remaining}")

    def _start_munged(self) -> None:
        layout = self.layout
        args = [
            "munged",
            "--foreground",
            # The socket's directory (in a test's private temporary directory) is not reachable
            # by other users, which munged refuses without --force; only root talks to it.
            "--force",
            f"--socket={layout.munge_socket}",
            f"--key-file={layout.munge_key}",
            f"--pid-file={layout.munge_dir / 'munged.pid'}",
            f"--log-file={layout.munge_dir / 'munged.log'}",
            f"--seed-file={layout.munge_dir / 'munged.seed'}",
        ]
        self._munged = self._spawn("munged", args)
        self._wait(layout.munge_socket.exists, f"munged creates {layout.munge_socket}")

    def _start_node(self) -> None:
        args = ["slurmd", "-D", "-N", self.node_name, "-f", str(self.conf_path)]
        self._slurmd = self._spawn("slurmd", args)
        self._wait(lambda: self.node_state() == "idle", f"node {self.node_name} idle in sinfo")

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start a daemon in the foreground in a session of its own, its output appended to
        ``log/NAME.out`` (what it says before its log file is open)."""
        with (self.layout.log_dir / f"{name}.out").open("ab") as out:
            return subprocess.Popen(
                args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _daemons(self) -> dict[str, subprocess.Popen[bytes] | None]:
        return {"munged": self._munged, "slurmctld": self._slurmctld, "slurmd": self._slurmd}

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until ``condition()``; fail with the daemons' logs if one of them exits or
        after the hang guard."""
        deadline = time.monotonic() + HANG_GUARD_S
        while not condition():
            for name, process in self._daemons().items():
                if process is not None and process.poll() is not None:
                    raise SlurmError(
                        f"cluster {self.name}: {name} exited with {process.returncode} while "
                        f"waiting for {what}\n{self._logs(name)}"
                    )
            if time.monotonic() > deadline:
                raise SlurmError(
                    f"cluster {self.name}: not within {HANG_GUARD_S} s: {what}\n"
                    + "\n".join(self._logs(name) for name in self._daemons())
                )
            time.sleep(POLL_S)

    def _logs(self, name: str) -> str:
        log_dir = self.layout.log_dir
        files = [log_dir / f"{name}.out"]
        files.append(
            self.layout.munge_dir / "munged.log" if name == "munged" else log_dir / f"{name}.log"
        )
        return "\n".join(_tail(path) for path in files)

    def _end(self, process: subprocess.Popen[bytes] | None, signum: signal.Signals) -> None:
        """Send ``signum`` to a daemon's process group (slurmctld's slurmscriptd is in it) and
        wait until it has exited; SIGKILL after the hang guard."""
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
            try:
                process.wait(HANG_GUARD_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(HANG_GUARD_S)
        _wait_gone(_group_members(process.pid))

    def _kill_remaining(self) -> None:
        """SIGKILL the jobs' processes left after slurmd stopped (slurmstepd and the jobs it
        started outlive slurmd); munged stays for last."""
        munged = {self._munged.pid} if self._munged is not None else set()
        for _ in range(3):  # a process may fork while the previous round kills
            targets = cluster_processes(self.base_dir) - munged
            if not targets:
                return
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _wait_gone(targets)


def _proc_text(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _links(pid: int) -> list[str]:
    """Where a process's working directory and open files point."""
    found = []
    for entry in (f"/proc/{pid}/cwd", *_fd_paths(pid)):
        try:
            found.append(os.readlink(entry))
        except OSError:
            continue
    return found


def _fd_paths(pid: int) -> list[str]:
    try:
        return [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return []


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name: state, ppid, pgrp, session..."""
    text = _proc_text(pid, "stat")
    return text[text.rfind(")") + 2 :].split() if text else []


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _group_members(pgid: int) -> set[int]:
    return {
        pid
        for pid in _all_pids()
        if (fields := _stat_fields(pid)) and fields[2] == str(pgid) and _alive(pid)
    }


def cluster_processes(base_dir: Path) -> set[int]:
    """The live processes of the cluster under ``base_dir`` other than this one: those whose
    command line names a file under it (the daemons), whose working directory or an open file
    is under it (slurmstepd keeps slurmd's log open; jobs that write there), whose
    ``SLURM_CONF`` is its ``slurm.conf`` (the jobs' processes), and every process in the
    session of one of its slurmstepd (each job step runs in a session of its own). A job's
    process that leaves its session, changes its environment and keeps no file under
    ``base_dir`` is not found."""
    prefix = str(base_dir.resolve()) + "/"
    conf_entry = f"SLURM_CONF={base_dir.resolve() / 'slurm.conf'}"
    own = {os.getpid(), os.getppid()}
    found: set[int] = set()
    sessions: set[str] = set()
    for pid in _all_pids():
        if pid in own or not _alive(pid):
            continue
        command = _proc_text(pid, "cmdline").split("\0")
        environment = _proc_text(pid, "environ").split("\0")
        paths = [*command, *_links(pid)]
        if any(path.startswith(prefix) for path in paths) or conf_entry in environment:
            found.add(pid)
            if _proc_text(pid, "comm").strip() == "slurmstepd":
                sessions.add(_stat_fields(pid)[3])
    if sessions:
        found |= {
            pid
            for pid in _all_pids()
            if pid not in own and (fields := _stat_fields(pid)) and fields[3] in sessions
        }
    return {pid for pid in found if _alive(pid)}


def _wait_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            alive = sorted(pid for pid in pids if _alive(pid))
            raise SlurmError(f"processes {alive} still there after {HANG_GUARD_S} s")
        time.sleep(POLL_S)

"""Real Slurm clusters on this machine (:mod:`simulators.slurm_cluster`): two run side by side,
GPU jobs run and show their GPUs in ``squeue --json`` and ``sinfo --json``, finished jobs keep
their state and exit code, a restarted slurmctld keeps a running job, and :meth:`stop` leaves no
process behind.

Every wait is on a state (:func:`tests.support.waiting.wait_for`), bounded by the hang guard.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from simulators.slurm_cluster import SlurmCluster
from tests.support.slurm import (
    GPUS,
    job_state,
    require_slurm,
    sinfo_node,
    slurm_cluster,
    slurm_clusters,
    squeue_jobs,
    start_cluster,
    submit,
)
from tests.support.waiting import wait_for, wait_for_value

pytestmark = pytest.mark.integration
__all__ = ["slurm_cluster", "slurm_clusters"]  # the fixtures this module uses

HOLD_S = 600
"""How long a job that must keep running sleeps [s]; the tests end it sooner."""
PID_FILE = "job.pid"
"""Where a job started by :func:`_submit_pid_job` writes its shell's process id, which then
becomes its ``sleep`` (exec)."""


def _process_alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2] not in "ZX"


def _live_processes_naming(base_dir: Path) -> list[str]:
    """The command lines of the live processes that name a path under ``base_dir``."""
    prefix = str(base_dir.resolve()) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if prefix in command and _process_alive(int(entry.name)):
            found.append(command.replace("\0", " "))
    return found


async def _submit_pid_job(cluster: SlurmCluster) -> tuple[int, int]:
    """Submit a GPU job whose process writes its pid and sleeps; return (job id, pid) once it
    runs."""
    pid_file = cluster.work_dir / PID_FILE
    job_id = submit(cluster, f"echo $$ > {pid_file}; exec sleep {HOLD_S}", "--gres=gpu:1")
    await wait_for_value(lambda: job_state(cluster, job_id), "RUNNING", f"job {job_id}")
    await wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), str(pid_file))
    return job_id, int(pid_file.read_text())


async def test_two_clusters_run_gpu_jobs_side_by_side(
    slurm_clusters: dict[str, SlurmCluster],
) -> None:
    east, west = slurm_clusters["east"], slurm_clusters["west"]
    assert len({east.conf.controller_port, east.conf.node_port}) == 2
    assert {east.conf.controller_port, east.conf.node_port}.isdisjoint(
        {west.conf.controller_port, west.conf.node_port}
    )
    job_ids = {
        name: submit(cluster, f"sleep {HOLD_S}", "--gres=gpu:1")
        for name, cluster in slurm_clusters.items()
    }
    for name, cluster in slurm_clusters.items():
        job_id = job_ids[name]
        await wait_for_value(partial(job_state, cluster, job_id), "RUNNING", f"{name} {job_id}")
        jobs = squeue_jobs(cluster)
        assert list(jobs) == [job_id]  # each cluster sees its own job only
        job = jobs[job_id]
        assert job["cluster"] == name
        assert job["nodes"] == cluster.node_name
        assert job["tres_per_node"] == "gres:gpu:1"
        assert job["gres_detail"] == ["gpu:1(IDX:0)"]
        node = sinfo_node(cluster)
        assert node["gres"] == f"gpu:{GPUS}"
        assert node["gres_used"] == "gpu:1"
        assert node["state"] == "mixed"


async def test_finished_jobs_keep_state_and_exit_code(slurm_cluster: SlurmCluster) -> None:
    succeeding = submit(slurm_cluster, "exit 0", "--gres=gpu:1")
    failing = submit(slurm_cluster, "exit 3", "--gres=gpu:1")
    await wait_for_value(lambda: job_state(slurm_cluster, succeeding), "COMPLETED", "exit 0")
    await wait_for_value(lambda: job_state(slurm_cluster, failing), "FAILED", "exit 3")
    jobs = squeue_jobs(slurm_cluster)
    assert jobs[succeeding]["exit_code"] == 0
    # The wait status as waitpid gives it: the exit code in the second byte.
    assert jobs[failing]["exit_code"] == 3 << 8
    assert jobs[failing]["state_reason"] == "NonZeroExitCode"
    # With --json, squeue lists finished jobs whatever --states says; without, it does not.
    states = ["squeue", "--states=all", "--noheader", "--format=%i %T"]
    assert slurm_cluster.run(*states).split() == [
        str(succeeding),
        "COMPLETED",
        str(failing),
        "FAILED",
    ]
    assert slurm_cluster.run("squeue", "--noheader") == ""
    await wait_for_value(lambda: sinfo_node(slurm_cluster)["gres_used"], "gpu:0", "GPUs free")


async def test_restarted_controller_keeps_running_job(slurm_cluster: SlurmCluster) -> None:
    job_id, pid = await _submit_pid_job(slurm_cluster)
    started_at = squeue_jobs(slurm_cluster)[job_id]["start_time"]
    slurm_cluster.stop_controller()
    assert not slurm_cluster.controller_answers()
    assert _process_alive(pid)  # the job runs on without its controller
    slurm_cluster.start_controller()
    job = squeue_jobs(slurm_cluster)[job_id]
    assert (job["job_state"], job["start_time"]) == ("RUNNING", started_at)
    assert sinfo_node(slurm_cluster)["gres_used"] == "gpu:1"
    assert _process_alive(pid)
    # Killed, it comes back with the state saved at the stop above: nothing changed since.
    slurm_cluster.kill_controller()
    slurm_cluster.start_controller()
    job = squeue_jobs(slurm_cluster)[job_id]
    assert (job["job_state"], job["start_time"]) == ("RUNNING", started_at)
    assert _process_alive(pid)
    slurm_cluster.run("scancel", str(job_id))
    await wait_for_value(lambda: job_state(slurm_cluster, job_id), "CANCELLED", "scancel")
    await wait_for(lambda: not _process_alive(pid), f"job process {pid} ends")


async def test_stop_leaves_no_process(tmp_path: Path) -> None:
    require_slurm()
    cluster = start_cluster(tmp_path / "slurm", "site")
    try:
        _, pid = await _submit_pid_job(cluster)
        assert len(_live_processes_naming(cluster.base_dir)) >= 3  # munged, slurmctld, slurmd
    finally:
        cluster.stop()
    assert _live_processes_naming(cluster.base_dir) == []
    assert not _process_alive(pid)

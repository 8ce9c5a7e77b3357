"""The site agent's Slurm backend (``gateway/agent/slurm/``) against a real cluster: a
reservation is a hold that Slurm counts (other users' jobs cannot take its GPUs), kept across a
restart of the agent, let go when released; holds the agent does not know are cancelled; GPUs
that other users' jobs hold are not offered to the gateway; a pause suspends the job in Slurm
and loses no step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.agent.config import AgentSettings
from gateway.agent.controller import SiteAgent
from gateway.agent.errors import AgentRequestError
from simulators.hang_guard import HANG_GUARD_S
from simulators.slurm_cluster import SlurmCluster
from tests.support.slurm import GPUS, job_state, slurm_cluster, squeue_jobs, submit
from tests.support.slurm_sites import (
    JOB_ID,
    TOKENS,
    held_at_gate,
    job_table,
    reference_model,
    slurm_agent_settings,
    slurm_sites,
    torch_command,
)
from tests.support.waiting import wait_for

__all__ = ["slurm_cluster"]  # the fixture, used by name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * HANG_GUARD_S)]


@asynccontextmanager
async def started(settings: AgentSettings) -> AsyncIterator[SiteAgent]:
    agent = SiteAgent(settings)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.close()


def jobs_named(cluster: SlurmCluster, name: str) -> list[dict[str, Any]]:
    return [job for job in squeue_jobs(cluster).values() if job["name"] == name]


def reason(cluster: SlurmCluster, slurm_job_id: int) -> str:
    return str(squeue_jobs(cluster)[slurm_job_id]["state_reason"])


async def test_a_reservation_is_a_hold_slurm_counts_until_it_is_released(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    cluster = slurm_cluster
    async with started(slurm_agent_settings(tmp_path, "east", cluster)) as agent:
        assert agent.status().gpus_total == GPUS
        assert await agent.reserve("m1", "job-x", 1, 0.5) == "reserved"
        [hold] = jobs_named(cluster, "dr-hold-m1")
        assert hold["job_state"] == "RUNNING"
        assert await agent.reserve("m1", "job-x", 1, 0.5) == "reserved", "a repeat"
        assert len(jobs_named(cluster, "dr-hold-m1")) == 1, "a repeat holds nothing more"

        # Another user's job takes the free GPU; the next one waits for the held GPU.
        first = submit(cluster, "sleep 300", "--gres=gpu:1")
        second = submit(cluster, "sleep 300", "--gres=gpu:1")
        await wait_for(lambda: job_state(cluster, first) == "RUNNING", "the first job runs")
        await wait_for(lambda: reason(cluster, second) == "Resources", "the second job waits")

        def other_users_job_counted() -> bool:
            status = agent.status()
            return (status.gpus_total, status.gpus_free, status.gpus_reserved) == (1, 0, 1)

        await wait_for(other_users_job_counted, "GPUs of other users' jobs not offered")
        with pytest.raises(AgentRequestError) as refused:
            await agent.reserve("m2", "job-y", 1, 0.5)
        assert refused.value.status == 409
        assert jobs_named(cluster, "dr-hold-m2") == []

        await agent.release_reservation("m1")
        await wait_for(lambda: job_state(cluster, second) == "RUNNING", "the held GPU went on")
        assert jobs_named(cluster, "dr-hold-m1")[0]["job_state"] == "CANCELLED"


async def test_holds_survive_a_restart_of_the_agent_and_unknown_holds_are_cancelled(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    cluster = slurm_cluster
    settings = slurm_agent_settings(tmp_path, "east", cluster)
    async with started(settings) as agent:
        assert await agent.reserve("m1", "job-x", 1, 0.5) == "reserved"
    [kept] = jobs_named(cluster, "dr-hold-m1")
    assert kept["job_state"] == "RUNNING", "the hold outlives the agent"
    # A hold submitted by an agent that died before it saved it.
    orphan = submit(cluster, "sleep 300", "--gres=gpu:1", "--job-name=dr-hold-m-lost")
    await wait_for(lambda: job_state(cluster, orphan) == "RUNNING", "the orphan runs")

    async with started(settings) as agent:
        await wait_for(lambda: job_state(cluster, orphan) == "CANCELLED", "the orphan cancelled")
        assert job_state(cluster, int(kept["job_id"])) == "RUNNING", "the known hold is kept"
        assert agent.status().gpus_reserved == 1
        await agent.release_reservation("m1")
        await wait_for(
            lambda: job_state(cluster, int(kept["job_id"])) == "CANCELLED", "the hold let go"
        )


def batch_pids(cluster: SlurmCluster, slurm_job_id: int) -> list[int]:
    """The processes of a Slurm job on its node (``scontrol listpids``)."""
    text = cluster.run("scontrol", "listpids", str(slurm_job_id))
    return [int(line.split()[0]) for line in text.splitlines()[1:] if line.split()[0].isdigit()]


def cpu_ticks_and_state(pid: int) -> tuple[int, str]:
    """(user + system CPU time [clock ticks], state letter) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), fields[0]


async def test_pause_and_unpause_on_slurm_lose_no_step(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """Paused (``scontrol suspend``), the job's processes stop and use no CPU, it keeps its
    GPU (another job that needs both waits), the site reports it at idle power; unpaused, it
    goes on from the step it was at, in the same Slurm job, to the model of an uninterrupted
    run."""
    cluster = slurm_cluster
    gate = tmp_path / "step-gate"
    settings = slurm_agent_settings(tmp_path, "east", cluster, [job_table(torch_command(gate))])
    async with slurm_sites({"east": (cluster, settings)}) as sites, aiohttp.ClientSession() as http:
        site = sites["east"]
        await held_at_gate(site)
        [slurm_job_id] = site.live_batch_jobs()
        running_kw = site.agent.status().it_power_kw
        headers = {"Authorization": f"Bearer {TOKENS['east']}"}

        async def lever(verb: str, lever_id: str) -> dict[str, Any]:
            url = f"{site.url}/v1/jobs/{JOB_ID}/{verb}"
            async with http.post(url, json={"lever_id": lever_id}, headers=headers) as answer:
                assert answer.status == 200, await answer.text()
                body: dict[str, Any] = await answer.json()
                return body

        assert (await lever("pause", "p-1"))["state"] == "paused"
        assert job_state(cluster, slurm_job_id) == "SUSPENDED"
        pids = batch_pids(cluster, slurm_job_id)
        assert pids, "the job's processes are listed"
        before = {pid: cpu_ticks_and_state(pid) for pid in pids}
        assert {state for _, state in before.values()} == {"T"}, before

        wants_both = submit(cluster, "sleep 300", f"--gres=gpu:{GPUS}")
        await wait_for(lambda: reason(cluster, wants_both) == "Resources", "it waits for a GPU")
        idle_kw = settings.idle_kw_per_gpu * GPUS
        assert site.agent.status().it_power_kw == pytest.approx(idle_kw)
        assert idle_kw < running_kw
        gate.touch()  # the job could finish now, were it not paused
        await wait_for(lambda: job_state(cluster, wants_both) == "PENDING", "still pending")
        after = {pid: cpu_ticks_and_state(pid) for pid in pids}
        assert after == before, "a paused job uses no CPU"

        assert (await lever("unpause", "u-1"))["state"] == "running"
        await wait_for(
            lambda: site.agent.job_state(JOB_ID) == "finished", "the job finished", HANG_GUARD_S
        )
        log_text = site.log_text()
        assert log_text.count("started at step 0") == 1 and "resumed from" not in log_text
        assert site.agent.job_paths(JOB_ID).output_dir.joinpath("model.bin").exists()
        assert site.model_bytes() == reference_model(tmp_path / "reference")
        assert jobs_named(cluster, f"dr-{JOB_ID}") == [squeue_jobs(cluster)[slurm_job_id]]

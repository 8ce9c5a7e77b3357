"""The site agent's Slurm backend (``gateway/agent/slurm/``) against a real cluster: a
reservation is a hold that Slurm counts (other users' jobs cannot take its GPUs), kept across a
restart of the agent, let go when released; holds the agent does not know are cancelled; GPUs
that other users' jobs hold are not offered to the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.agent.config import AgentSettings
from gateway.agent.controller import SiteAgent
from gateway.agent.errors import AgentRequestError
from simulators.hang_guard import HANG_GUARD_S
from simulators.slurm_cluster import SlurmCluster
from tests.support.slurm import GPUS, job_state, slurm_cluster, squeue_jobs, submit
from tests.support.slurm_sites import slurm_agent_settings
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

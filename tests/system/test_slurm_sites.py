"""The site agent as the controller of real Slurm clusters (``docs/slurm.md``).

Two Slurm clusters run side by side on this machine (``east`` and ``west``: their own munged,
slurmctld and slurmd, :mod:`simulators.slurm_cluster`), each with a site agent in front of it
whose jobs are Slurm batch jobs. The gateway's Dispatcher, on a real database (SQLite and
PostgreSQL), migrates the PyTorch example job mid-training from east to west: its final
parameters must equal, byte for byte, those of a run that was never interrupted. Throughout,
the fleet's invariants are sampled (``AgentMonitor`` of ``tests/system/test_agent_faults.py``:
real checkpoints are checked by their sha256, not their declared size) and
Slurm itself is asked that the job never runs on both clusters at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.db import unit_of_work
from gateway.migration.invariants import HttpProbe
from gateway.planner.snapshot import MigrationDecision
from gateway.sites.client import SiteControllerClient
from models import Migration
from simulators import loopback_agents
from simulators.hang_guard import HANG_GUARD_S
from simulators.loopback_agents import SiteSize
from simulators.slurm_cluster import SlurmCluster
from tests.support.migrating import migrate_until_cleaned_up
from tests.support.slurm import GPUS, slurm_clusters, squeue_jobs
from tests.support.slurm_sites import (
    HOLD_AT_STEP,
    IT_POWER_MAX_KW,
    JOB,
    JOB_ID,
    TOKENS,
    WAN_BANDWIDTH_GBPS,
    SlurmSite,
    file_sha256,
    held_at_gate,
    job_table,
    reference_model,
    slurm_agent_settings,
    slurm_sites,
    torch_command,
)
from tests.support.waiting import wait_for
from tests.system.test_agent_faults import AgentMonitor

__all__ = ["slurm_clusters"]  # the fixture, used by name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * HANG_GUARD_S)]

SITE = SiteSize(
    gpus_total=GPUS, it_power_max_kw=IT_POWER_MAX_KW, wan_bandwidth_gbps=WAN_BANDWIDTH_GBPS
)


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The final model of an uninterrupted run of the PyTorch example job."""
    return reference_model(tmp_path_factory.mktemp("torch-reference"))


async def drive(
    sessions: sessionmaker[Session],
    sites: Mapping[str, SlurmSite],
    http: aiohttp.ClientSession,
) -> tuple[str, list[str]]:
    """Migrate the job from east to west with the Dispatcher until the migration ended and was
    cleaned up; (final state, states seen). After every step Slurm is asked where the job
    runs: on one cluster at most."""
    clients = {
        site_id: SiteControllerClient(site_id, site.url, TOKENS[site_id], http)
        for site_id, site in sites.items()
    }
    decision = MigrationDecision(JOB_ID, "east", "west", "test", expected_s=5.0, expected_kwh=1e-3)

    def live_sites() -> list[str]:
        return [site_id for site_id, site in sites.items() if site.live_batch_jobs()]

    state, seen, _ = await migrate_until_cleaned_up(
        sessions, clients, decision, live_sites, round_s=0.05
    )
    return state, seen


def probes(sites: Mapping[str, SlurmSite], http: aiohttp.ClientSession) -> list[HttpProbe]:
    return [
        HttpProbe(SiteControllerClient(site_id, site.url, TOKENS[site_id], http))
        for site_id, site in sites.items()
    ]


async def test_pytorch_job_migrates_mid_training_between_two_slurm_clusters_bit_for_bit(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    slurm_clusters: dict[str, SlurmCluster],
    torch_reference: bytes,
) -> None:
    gate = tmp_path / "step-gate"
    east, west = slurm_clusters["east"], slurm_clusters["west"]
    settings = {
        "east": (
            east,
            slurm_agent_settings(tmp_path, "east", east, [job_table(torch_command(gate))]),
        ),
        "west": (west, slurm_agent_settings(tmp_path, "west", west)),
    }
    async with slurm_sites(settings) as sites, aiohttp.ClientSession() as http:
        urls = {site_id: site.url for site_id, site in sites.items()}
        loopback_agents.seed_database(session_factory, urls, SITE, JOB, "east")
        await held_at_gate(sites["east"])
        assert len(sites["east"].live_batch_jobs()) == 1

        monitor = AgentMonitor(probes(sites, http), session_factory, [JOB_ID], interval_s=0.1)
        async with monitor:
            state, seen = await drive(session_factory, sites, http)
            assert state == "completed", seen
            assert "transferring" in seen and "restoring" in seen
            await monitor.assert_settled()  # the job runs at west, where the gateway has it
        assert sites["east"].agent.job_state(JOB_ID) is None, "released at the source"
        assert sites["east"].live_batch_jobs() == []
        assert len(sites["west"].live_batch_jobs()) == 1
        holds = [j for j in squeue_jobs(west).values() if j["name"].startswith("dr-hold-")]
        assert holds == [], "the reservation's hold became the job (renamed), not cancelled"
        west_log = sites["west"].log_text()
        assert f"at step {HOLD_AT_STEP} of" in west_log and "resumed from" in west_log

        # The checkpoint the gateway recorded is the file the job was restored from.
        with unit_of_work(session_factory) as session:
            recorded_sha256 = session.query(Migration).one().checkpoint_sha256
        [restored] = sites["west"].agent.job_paths(JOB_ID).checkpoints_dir.iterdir()
        assert file_sha256(restored.read_bytes()) == recorded_sha256

        gate.touch()
        await wait_for(
            lambda: sites["west"].agent.job_state(JOB_ID) == "finished",
            "the job finished at west",
            HANG_GUARD_S,
        )
        assert sites["west"].model_bytes() == torch_reference

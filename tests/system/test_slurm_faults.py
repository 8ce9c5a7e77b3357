"""Migrations of the PyTorch example job between two real Slurm clusters under faults, on
SQLite and PostgreSQL: SIGKILL of the source's controller mid-transfer, ``slurmctld`` restarted
mid-migration, and the job failed by Slurm (its node down) while it is restored.

The world is that of ``tests/system/test_agent_faults.py`` (agents as ``dr-gateway site-agent``
processes, a proxy that holds the checkpoint stream, the invariant monitor, gates that hold the
job in the state a fault needs), with each agent in front of a Slurm cluster of its own
(``alpha`` of ``east``, ``beta`` of ``west``, :mod:`simulators.slurm_cluster`) and the PyTorch job
(``gateway.training.example_torch``) as the job. No fault depends on how long anything takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from simulators.hang_guard import HANG_GUARD_S
from simulators.slurm_cluster import SlurmCluster
from tests.support.slurm import slurm_clusters
from tests.support.slurm_sites import POLL_S, reference_model, torch_command
from tests.support.waiting import wait_for
from tests.system.test_agent_faults import (
    HOLD_AT_STEP,
    Configure,
    Gates,
    agent_world,
    source_killed_mid_transfer,
    wait_log,
)
from tests.system.test_site_agent import job_table

__all__ = ["slurm_clusters"]  # the fixture, used by name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * HANG_GUARD_S)]

STEPS = 2 * HOLD_AT_STEP
WIDTH = 128
"""Hidden units: the checkpoint is about 270 kB, so that the proxy can hold it mid-stream."""


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The final model of an uninterrupted run of the PyTorch job."""
    return reference_model(tmp_path_factory.mktemp("torch-reference"), STEPS, WIDTH)


def torch_job(gates: Gates) -> dict[str, Any]:
    """The PyTorch job held at its ``gates``."""
    return job_table(command=[*torch_command(steps=STEPS, width=WIDTH), *gates.options()])


def on_slurm(
    clusters: dict[str, SlurmCluster],
    slurm: dict[str, Any] | None = None,
    **per_site: dict[str, Any],
) -> Configure:
    """Settings of agents in front of the clusters: alpha of east, beta of west; ``slurm``
    adds ``[slurm]`` keys of both, ``per_site[site_id]`` settings of one agent."""
    cluster_of = {"alpha": clusters["east"], "beta": clusters["west"]}

    def configure(site_id: str, data: dict[str, Any]) -> dict[str, Any]:
        data = {key: value for key, value in data.items() if key != "gpus_total"}
        section = {"conf_path": str(cluster_of[site_id].conf_path), "poll_s": POLL_S}
        return data | {"slurm": section | (slurm or {})} | per_site.get(site_id, {})

    return configure


async def test_source_controller_killed_mid_transfer_and_restarted_completes_bit_for_bit(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    slurm_clusters: dict[str, SlurmCluster],
    torch_reference: bytes,
) -> None:
    configure = on_slurm(slurm_clusters)
    async with agent_world(session_factory, tmp_path, configure=configure, job=torch_job) as world:
        await source_killed_mid_transfer(world, torch_reference)


async def test_slurmctld_restarted_mid_checkpoint_completes_bit_for_bit(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    slurm_clusters: dict[str, SlurmCluster],
    torch_reference: bytes,
) -> None:
    """The source's slurmctld stops (SIGTERM: it saves its state; a SIGKILL within about 4.5 s
    of a change loses the change, docs/slurm.md) while the job writes its checkpoint; the job
    ends while nobody can ask Slurm about it. The agent concludes nothing until slurmctld
    answers again, then the checkpoint completes and the migration with it."""
    east = slurm_clusters["east"]
    # squeue gives up on a stopped slurmctld after about 9 s; the agents' own time limit on a
    # Slurm command says "no answer" sooner (a setting of theirs, docs/slurm.md).
    configure = on_slurm(slurm_clusters, {"command_timeout_s": 2.0})
    async with agent_world(
        session_factory, tmp_path, configure=configure, job=torch_job, hold_checkpoint=True
    ) as world:
        checkpoint_gate = world.gates.checkpoint
        assert checkpoint_gate is not None
        struck: list[str] = []

        async def restart_slurmctld(migration_id: str, state: str) -> None:
            if struck or state != "checkpointing":
                return
            await wait_log(world.alpha, "holding the checkpoint")
            struck.append(migration_id)
            east.stop_controller()
            checkpoint_gate.touch()
            await wait_log(world.alpha, f"checkpoint at step {HOLD_AT_STEP} written")
            await wait_for(
                lambda: "cannot read the Slurm cluster" in world.alpha.logs(),
                "the agent sees slurmctld gone",
                HANG_GUARD_S,
            )
            op = await world.operation_state(world.alpha, migration_id, "checkpoint")
            assert op == "in_progress", "nothing is concluded while Slurm does not answer"
            east.start_controller()

        _, state, seen = await world.migrate(during=restart_slurmctld)
        assert struck, f"the fault never struck: {seen}"
        assert state == "completed", (seen, world.alpha.logs())
        assert "Slurm answers again" in world.alpha.logs()
        await world.assert_settled_at(world.beta, torch_reference)


async def test_job_failed_by_slurm_while_restored_aborts_and_resumes_at_the_source(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    slurm_clusters: dict[str, SlurmCluster],
    torch_reference: bytes,
) -> None:
    """While the job at the target has loaded its checkpoint but not yet confirmed it, the
    target's node goes down: Slurm ends the job (NODE_FAIL). The restore fails, the gateway
    aborts and the job runs on at the source from its checkpoint, bit for bit."""
    west = slurm_clusters["west"]
    configure = on_slurm(slurm_clusters, beta={"max_restarts": 0})
    async with agent_world(
        session_factory, tmp_path, configure=configure, job=torch_job, hold_resume=True
    ) as world:
        struck: list[str] = []

        async def node_down(migration_id: str, state: str) -> None:
            if struck or state != "restoring":
                return
            await wait_log(world.beta, "holding the resume")
            struck.append(migration_id)
            west.run(
                "scontrol", "update", f"NodeName={west.node_name}", "State=DOWN", "Reason=test"
            )

        _, state, seen = await world.migrate(during=node_down)
        assert struck, f"the fault never struck: {seen}"
        assert state == "aborted", (seen, world.beta.logs())
        assert "restoring" in seen
        await world.assert_settled_at(world.alpha, torch_reference)

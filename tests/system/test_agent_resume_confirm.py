"""A restore completes when the job confirms it loaded its checkpoint (``{resumed_path}``).

A job whose command names ``{resumed_path}`` creates that file once it has loaded its
``--resume`` checkpoint (the example job's ``--resumed-file``). The target agent's restore
finishes only then, and the gateway counts the migration completed only then. A job that gives
up before confirming, or does not confirm within ``resume_timeout_s``, fails the restore: the
gateway aborts and the job runs on at the source.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.agent.jobs import RESUME_OPTION
from gateway.db import unit_of_work
from models import Migration
from simulators.hang_guard import HANG_GUARD_S
from tests.support.waiting import wait_for
from tests.system.test_site_agent import (
    JOB_ID,
    agent_settings,
    drive,
    example_command,
    held_at_gate,
    job_table,
    live_processes,
    running_agents,
    seed_database,
    step_gate,
)
from tests.system.test_site_agent import reference_model as reference_model  # the fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * HANG_GUARD_S)]

LOAD_DELAY_S = 0.8
"""How long the example job takes to load its checkpoint at the target [s]."""

PICKY_JOB = """\
import os, signal, sys, time
from pathlib import Path

mode, resumed_path = sys.argv[1], Path(sys.argv[2])
resuming = "--resume" in sys.argv
at_target = os.sep + "beta" + os.sep in os.environ["DR_AGENT_OUTPUT_DIR"]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
if resuming and at_target and mode == "crash":
    sys.exit(1)  # cannot load its checkpoint here (say, too little GPU memory)
if resuming and not (at_target and mode == "silent"):
    resumed_path.touch()
while not stop:
    time.sleep(0.01)
checkpoint = Path(os.environ["DR_AGENT_CHECKPOINT_PATH"])
temporary = checkpoint.with_name(checkpoint.name + ".tmp")
temporary.write_bytes(b"the whole state of a picky job")
os.replace(temporary, checkpoint)
"""
"""A job that confirms its resumes everywhere but at beta, where it exits 1 (``crash``) or
runs on without confirming (``silent``)."""


def migration_row(sessions: sessionmaker[Session]) -> Migration:
    with unit_of_work(sessions) as session:
        migration = session.query(Migration).one()
        session.expunge(migration)
        return migration


async def test_restore_completes_only_once_the_job_confirms_and_stays_bit_for_bit(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    command = [
        *example_command(gate=step_gate(tmp_path)),  # held mid-training until the gate opens
        "--resumed-file",
        "{resumed_path}",
        "--load-delay-s",
        str(LOAD_DELAY_S),
    ]
    async with running_agents(
        agent_settings(tmp_path, "alpha", [job_table(command=command)]),
        agent_settings(tmp_path, "beta"),
    ) as agents:
        alpha, beta = agents
        seed_database(session_factory, {"alpha": alpha.url, "beta": beta.url})
        await held_at_gate(alpha)

        state, seen, _ = await drive(session_factory, agents)
        assert state == "completed", seen
        migration = migration_row(session_factory)
        assert migration.restoring_at is not None and migration.completed_at is not None
        restoring_s = (migration.completed_at - migration.restoring_at).total_seconds()
        assert restoring_s >= LOAD_DELAY_S, f"completed {restoring_s} s into the restore"
        marker = beta.agent.job_paths(JOB_ID).resumed_marker
        assert marker.exists(), "the job confirmed its resume"

        step_gate(tmp_path).touch()
        await wait_for(
            lambda: beta.agent.job_state(JOB_ID) == "finished", "job finished", HANG_GUARD_S
        )
        assert "resumed from" in beta.log_text()
        assert beta.model_bytes() == reference_model


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("crash", "the job stopped before it confirmed its resume"),
        ("silent", "the job did not confirm its resume within 0.8 s"),
    ],
)
async def test_a_job_that_does_not_confirm_fails_the_restore_and_runs_on_at_the_source(
    session_factory: sessionmaker[Session], tmp_path: Path, mode: str, error: str
) -> None:
    script = tmp_path / "picky_job.py"
    script.write_text(PICKY_JOB)
    job = job_table(command=["{python}", str(script), mode, "{resumed_path}"])
    async with running_agents(
        agent_settings(tmp_path, "alpha", [job]),
        agent_settings(tmp_path, "beta", max_restarts=0, resume_timeout_s=LOAD_DELAY_S),
    ) as agents:
        alpha, beta = agents
        seed_database(session_factory, {"alpha": alpha.url, "beta": beta.url})
        await wait_for(
            lambda: live_processes(agents) == ["alpha"], "the job runs at alpha", HANG_GUARD_S
        )

        state, seen, _ = await drive(session_factory, agents)
        assert state == "aborted", seen
        assert "restoring" in seen
        migration = migration_row(session_factory)
        _, restore = await beta.api.call("GET", f"/v1/operations/{migration.id}/restore")
        assert restore["state"] == "failed" and restore["error"] == error
        assert error in (migration.error or "")
        assert beta.agent.job_state(JOB_ID) is None, "forgotten at the target"
        assert beta.agent.status().gpus_free == 4, "the reservation was freed"

        await wait_for(
            lambda: live_processes(agents) == ["alpha"], "running at the source", HANG_GUARD_S
        )
        process = alpha.agent.job_process(JOB_ID)
        assert process is not None and RESUME_OPTION in process.argv
        await wait_for(
            lambda: alpha.agent.job_paths(JOB_ID).resumed_marker.exists(),
            "resumed at alpha",
            HANG_GUARD_S,
        )
        assert alpha.agent.job_state(JOB_ID) == "running"

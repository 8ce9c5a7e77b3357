"""The site agent (``dr-gateway site-agent``): real job processes behind the site controller API.

Two agents serve on loopback (OS-assigned ports) and run the example training job
(``gateway.agent.example_job``) as real processes. The gateway's Dispatcher, on a real database
(SQLite and PostgreSQL), migrates a running job between them mid-training; its final model must
equal, bit for bit, that of a run that was never interrupted. The other tests check the API's
rules against the agent (idempotency, 409s, 401s, 400s) and its life cycle: a restart, a
SIGKILL, the command line.

A test that needs the job mid-training holds it there (:func:`gated_job`: the example job's
test-only ``--step-gate`` keeps it at step :data:`HOLD_AT_STEP` until the test creates the
gate file), so that no case depends on how fast the machine trains.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from gateway.agent.config import AgentSettings, load_agent_settings, parse_agent_settings
from gateway.agent.controller import SiteAgent
from gateway.agent.example_job import MODEL_FILE, read_arrays
from gateway.agent.jobs import RESUME_OPTION, CheckpointFile
from gateway.agent.server import AGENT_KEY, start_agent_server
from gateway.agent.state import (
    AgentJob,
    AgentState,
    AgentStateError,
    Manifest,
    Reservation,
    load_state,
    save_state,
    state_to_json,
)
from gateway.cli import main as cli_main
from gateway.db import unit_of_work
from gateway.errors import ConfigError
from gateway.planner.snapshot import MigrationDecision
from gateway.sites.client import SiteControllerClient
from gateway.sites.records import Checkpoint, JobSpec, Operation
from models import Migration
from simulators import loopback_agents
from simulators.cutting_proxy import CuttingProxy, StreamHold
from simulators.hang_guard import HANG_GUARD_S
from simulators.loopback_agents import SiteSize
from tests.support.migrating import migrate_until_cleaned_up
from tests.support.settings_files import write_toml
from tests.support.waiting import wait_for, wait_for_value

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * HANG_GUARD_S)]

ROOT = Path(__file__).resolve().parents[2]
STEPS = 300
"""Steps of the example job: about 0.4 ms each, plus the sleep below."""
HOLD_AT_STEP = 150
"""A gated job (:func:`gated_job`) waits after this many steps until its gate file exists."""
STEP_SLEEP_S = 0.001
TOKENS = {"alpha": "token-of-the-alpha-agent", "beta": "token-of-the-beta-agent"}
JOB_ID = "train-1"
EXAMPLE_JOB = [sys.executable, "-m", loopback_agents.EXAMPLE_JOB_MODULE]


SITE = SiteSize(gpus_total=4, it_power_max_kw=4.0, wan_bandwidth_gbps=10.0)
JOB = JobSpec(JOB_ID, gpus=1, power_kw=0.6, checkpoint_gb=0.001, work_remaining_gpu_h=2.0)


def example_command(steps: int = STEPS, gate: Path | None = None) -> list[str]:
    """The example job; with a ``gate`` it waits at step :data:`HOLD_AT_STEP` until that file
    exists."""
    command = loopback_agents.example_command(steps, step_sleep_s=STEP_SLEEP_S)
    if gate is None:
        return command
    return [*command, "--step-gate", str(gate), "--hold-at-step", str(HOLD_AT_STEP)]


def step_gate(root: Path) -> Path:
    """The gate file of the jobs of :func:`gated_job` under ``root``."""
    return root / "step-gate"


def gated_job(root: Path, job_id: str = JOB_ID) -> dict[str, Any]:
    """The example job, held mid-training at step :data:`HOLD_AT_STEP` until
    ``step_gate(root)`` exists (a SIGTERM meanwhile checkpoints at that step)."""
    return job_table(job_id, example_command(gate=step_gate(root)))


def job_table(job_id: str = JOB_ID, command: Sequence[str] | None = None) -> dict[str, Any]:
    return loopback_agents.job_table(replace(JOB, job_id=job_id), command or example_command())


def agent_data(root: Path, site_id: str, jobs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    timeouts_s = {"checkpoint_timeout_s": 10.0, "stop_timeout_s": 10.0}
    return loopback_agents.agent_data(root, site_id, TOKENS, SITE, jobs) | timeouts_s


def agent_settings(
    root: Path, site_id: str, jobs: Sequence[dict[str, Any]] = (), **overrides: Any
) -> AgentSettings:
    return parse_agent_settings(agent_data(root, site_id, jobs) | overrides, "test")


class Api:
    """Raw HTTP calls to one agent, with its token unless told otherwise."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.url = url
        self.token = token

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        sent = {"Authorization": f"Bearer {token or self.token}"} | (headers or {})
        async with self.session.request(
            method,
            self.url + path,
            json=body if data is None else None,
            data=data,
            headers=sent,
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def operation_done(
        self, migration_id: str, kind: str, timeout_s: float = HANG_GUARD_S
    ) -> Any:
        """The operation once it is no longer in progress."""

        async def ended() -> Any:
            status, op = await self.call("GET", f"/v1/operations/{migration_id}/{kind}")
            assert status == 200, op
            return op if op["state"] != "in_progress" else None

        return await wait_for(ended, f"the {kind} of {migration_id} to end", timeout_s, 0.01)


@dataclass
class RunningAgent:
    site_id: str
    runner: web.AppRunner
    url: str
    api: Api

    @property
    def agent(self) -> SiteAgent:
        return self.runner.app[AGENT_KEY]

    def log_text(self, job_id: str = JOB_ID) -> str:
        return _text(self.agent.job_paths(job_id).log_path)

    def model_bytes(self, job_id: str = JOB_ID) -> bytes:
        return (self.agent.job_paths(job_id).output_dir / MODEL_FILE).read_bytes()


@asynccontextmanager
async def running_agents(*all_settings: AgentSettings) -> AsyncIterator[list[RunningAgent]]:
    """Agents on OS-assigned loopback ports, each with an Api; stopped (jobs checkpointed and
    exited) on the way out."""
    agents: list[RunningAgent] = []
    async with aiohttp.ClientSession() as http:
        try:
            for settings in all_settings:
                runner, url = await start_agent_server(settings)
                api = Api(http, url, settings.token)
                agents.append(RunningAgent(settings.site_id, runner, url, api))
            yield agents
        finally:
            for running in agents:
                await running.runner.cleanup()


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def training_started(agent: RunningAgent, job_id: str = JOB_ID) -> None:
    """Wait until the job has trained for a moment (it logs its start, then steps)."""
    await wait_for(
        lambda: "started at step 0" in agent.log_text(job_id), "the job started", HANG_GUARD_S
    )
    await asyncio.sleep(0.2)


async def held_at_gate(agent: RunningAgent, job_id: str = JOB_ID) -> None:
    """Wait until a job of :func:`gated_job` waits at step :data:`HOLD_AT_STEP`."""
    holding = f"holding at step {HOLD_AT_STEP}"
    await wait_for(
        lambda: holding in agent.log_text(job_id), "the job held mid-training", HANG_GUARD_S
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checkpoint_step(path: Path) -> int:
    return int(read_arrays(path)[1]["step"])


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The final model of an uninterrupted run of the example job."""
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(
        [*EXAMPLE_JOB, "--steps", str(STEPS), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD_S,
    )
    return (out / MODEL_FILE).read_bytes()


# ---- the checkpoint contract of the example job ------------------------------------------------


def test_rule_example_job_checkpoints_on_sigterm_and_resumes_bit_for_bit(
    tmp_path: Path, reference_model: bytes
) -> None:
    checkpoint = tmp_path / "state.bin"
    base = [*EXAMPLE_JOB, "--steps", str(STEPS), "--out", str(tmp_path / "out")]
    gate = ["--step-gate", str(tmp_path / "gate"), "--hold-at-step", str(HOLD_AT_STEP)]
    job = subprocess.Popen(
        [*base, "--checkpoint", str(checkpoint), *gate], stderr=subprocess.PIPE, text=True
    )
    assert job.stderr is not None
    assert "started at step 0" in job.stderr.readline()
    assert f"holding at step {HOLD_AT_STEP}" in job.stderr.readline()
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=HANG_GUARD_S) == 0
    log_line = job.stderr.read()
    job.stderr.close()
    step = checkpoint_step(checkpoint)
    assert step == HOLD_AT_STEP, "checkpointed mid-training"
    assert f"checkpoint at step {step}" in log_line
    assert not (tmp_path / "out" / MODEL_FILE).exists()

    resumed = subprocess.run(
        [*base, "--resume", str(checkpoint)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {checkpoint} at step {step}" in resumed.stderr
    assert (tmp_path / "out" / MODEL_FILE).read_bytes() == reference_model


def test_example_job_refuses_a_checkpoint_of_another_run(tmp_path: Path) -> None:
    checkpoint = tmp_path / "state.bin"
    base = [*EXAMPLE_JOB, "--steps", "50", "--out", str(tmp_path)]
    job = subprocess.Popen(
        [*base, "--checkpoint", str(checkpoint), "--step-gate", str(tmp_path / "gate")],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert job.stderr is not None
    assert "started at step 0" in job.stderr.readline(), "SIGTERM only once it is handled"
    assert "holding at step 49" in job.stderr.readline(), "it waits before its last step"
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=HANG_GUARD_S) == 0
    job.stderr.close()
    other_width = subprocess.run(
        [*base, "--resume", str(checkpoint), "--width", "8"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert other_width.returncode == 2
    assert "cannot resume" in other_width.stderr and "'width': 8" in other_width.stderr


# ---- a migration driven by the gateway's Dispatcher ---------------------------------------------


def seed_database(sessions: sessionmaker[Session], urls: dict[str, str]) -> None:
    """The two sites and the job running at alpha, as the daemon's polls would have stored
    them."""
    loopback_agents.seed_database(sessions, urls, SITE, JOB, "alpha")


def live_processes(agents: Sequence[RunningAgent], job_id: str = JOB_ID) -> list[str]:
    """The sites where a process of the job is alive."""
    return [
        running.site_id
        for running in agents
        if (process := running.agent.job_process(job_id)) is not None and process.returncode is None
    ]


async def drive(
    sessions: sessionmaker[Session],
    agents: Sequence[RunningAgent],
    planned: Callable[[str], Awaitable[None]] | None = None,
    timeout_s: float = HANG_GUARD_S,
) -> tuple[str, list[str], float]:
    """Migrate the job from alpha to beta with the Dispatcher until the migration ended and
    was cleaned up; (final state, states seen, wall time [s]). ``planned`` runs with the
    migration id before the first step. Checks invariant 1 (one site at most) after every
    step."""
    async with aiohttp.ClientSession() as http:
        clients = {
            running.site_id: SiteControllerClient(
                running.site_id, running.url, TOKENS[running.site_id], http
            )
            for running in agents
        }
        decision = MigrationDecision(
            JOB_ID, "alpha", "beta", "test", expected_s=5.0, expected_kwh=1e-3
        )
        return await migrate_until_cleaned_up(
            sessions,
            clients,
            decision,
            lambda: live_processes(agents),
            planned=planned,
            timeout_s=timeout_s,
        )


@asynccontextmanager
async def training_at_alpha(
    sessions: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[list[RunningAgent]]:
    """Agents alpha and beta, the database seeded with both, and the job at alpha held
    mid-training (:func:`gated_job`)."""
    async with running_agents(
        agent_settings(tmp_path, "alpha", [gated_job(tmp_path)]), agent_settings(tmp_path, "beta")
    ) as agents:
        alpha, beta = agents
        seed_database(sessions, {"alpha": alpha.url, "beta": beta.url})
        await held_at_gate(alpha)
        yield agents


async def test_migration_mid_training_between_two_agents_is_bit_for_bit(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    async with training_at_alpha(session_factory, tmp_path) as agents:
        alpha, beta = agents

        state, seen, _ = await drive(session_factory, agents)
        assert state == "completed", seen
        assert "transferring" in seen and "restoring" in seen
        assert alpha.agent.job_state(JOB_ID) is None, "released at the source"
        assert beta.agent.job_state(JOB_ID) == "running"
        assert not alpha.agent.job_paths(JOB_ID).checkpoints_dir.exists()

        # The checkpoint the gateway recorded is the real file, and was taken mid-training.
        with unit_of_work(session_factory) as session:
            migration = session.query(Migration).one()
            recorded_sha256 = migration.checkpoint_sha256
        [restored] = beta.agent.job_paths(JOB_ID).checkpoints_dir.iterdir()
        assert file_sha256(restored) == recorded_sha256
        assert list(beta.agent.received_dir.iterdir()) == [], "the received copy was let go"
        assert checkpoint_step(restored) == HOLD_AT_STEP

        step_gate(tmp_path).touch()
        await wait_for(
            lambda: beta.agent.job_state(JOB_ID) == "finished", "job finished", HANG_GUARD_S
        )
        assert f"resumed from {restored}" in beta.log_text()
        assert beta.model_bytes() == reference_model
        status = beta.agent.status()
        assert status.gpus_free == 4 and status.jobs[0].work_remaining_gpu_h == 0.0


async def test_aborted_migration_resumes_the_job_from_its_checkpoint_bit_for_bit(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    """The target already holds another checkpoint under the migration's id and refuses this
    one: the transfer fails, the Dispatcher aborts, and the job resumes at the source from the
    checkpoint it wrote."""
    async with training_at_alpha(session_factory, tmp_path) as agents:
        alpha, beta = agents

        async def occupy(migration_id: str) -> None:
            other = b"another checkpoint"
            headers = {
                "X-Checkpoint-Sha256": hashlib.sha256(other).hexdigest(),
                "X-Checkpoint-Size": str(len(other)),
            }
            status, _ = await beta.api.call(
                "PUT", f"/v1/checkpoints/{migration_id}", data=other, headers=headers
            )
            assert status == 201

        state, seen, _ = await drive(session_factory, agents, occupy)
        assert state == "aborted", seen
        assert "transferring" in seen
        with unit_of_work(session_factory) as session:
            migration_id = session.query(Migration).one().id
        _, transfer = await alpha.api.call("GET", f"/v1/operations/{migration_id}/transfer")
        assert transfer["state"] == "failed" and "another checkpoint" in transfer["error"]
        assert beta.agent.status().gpus_free == 4, "the reservation was released"
        await wait_for(
            lambda: live_processes(agents) == ["alpha"], "running at the source", HANG_GUARD_S
        )
        process = alpha.agent.job_process(JOB_ID)
        assert process is not None and RESUME_OPTION in process.argv
        [written] = alpha.agent.job_paths(JOB_ID).checkpoints_dir.iterdir()
        assert process.argv[-1] == str(written) and checkpoint_step(written) == HOLD_AT_STEP

        step_gate(tmp_path).touch()
        await wait_for(
            lambda: alpha.agent.job_state(JOB_ID) == "finished", "job finished", HANG_GUARD_S
        )
        assert alpha.model_bytes() == reference_model
        assert beta.agent.job_state(JOB_ID) is None


# ---- the API's rules, called directly ---------------------------------------------------------


def idle_job(job_id: str = JOB_ID) -> dict[str, Any]:
    """A job that trains until it is stopped."""
    return job_table(job_id, example_command(steps=10_000_000))


async def test_rule_every_call_needs_the_site_bearer_token(tmp_path: Path) -> None:
    async with running_agents(agent_settings(tmp_path, "alpha")) as [alpha]:
        api = alpha.api
        for method, path in [
            ("GET", "/v1/status"),
            ("POST", "/v1/reservations"),
            ("GET", "/v1/operations/m1/checkpoint"),
            ("POST", f"/v1/jobs/{JOB_ID}/checkpoint"),
            ("PUT", "/v1/manifests/m1"),
            ("PUT", "/v1/checkpoints/m1"),
            ("HEAD", "/v1/checkpoints/m1"),
            ("GET", "/v1/no-such-path"),
        ]:
            status, body = await api.call(method, path, {}, token="wrong-token-1234")
            assert status == 401, (method, path)
            if method != "HEAD":
                assert body["error"] == "unauthorized", (method, path)
        async with api.session.get(alpha.url + "/v1/status") as response:
            assert response.status == 401
            assert (await response.json())["error"] == "unauthorized"


async def test_rule_malformed_requests_get_json_4xx_never_a_traceback(tmp_path: Path) -> None:
    async with running_agents(agent_settings(tmp_path, "alpha")) as [alpha]:
        api = alpha.api
        json_type = {"Content-Type": "application/json"}
        cases: list[tuple[int, str, str, Any, dict[str, Any]]] = [
            (
                400,
                "POST",
                "/v1/reservations",
                None,
                {"data": b"{not json", "headers": json_type},
            ),
            (
                400,
                "POST",
                "/v1/reservations",
                None,
                {"data": b"\xff\xfe", "headers": json_type},
            ),
            (400, "POST", "/v1/reservations", [1, 2], {}),
            (400, "POST", "/v1/reservations", {"migration_id": "m1"}, {}),
            (400, "POST", "/v1/jobs/j/checkpoint", {"migration_id": 7}, {}),
            (400, "POST", "/v1/jobs/j/checkpoint", {"migration_id": "m", "x": 1}, {}),
            (400, "POST", "/v1/jobs/j/checkpoint", {"migration_id": "../etc"}, {}),
            (400, "GET", "/v1/operations/m1/teleport", None, {}),
            (400, "POST", "/v1/jobs", {"job_id": "j", "command": "sleep 1"}, {}),
            (404, "GET", "/v1/operations/m1/checkpoint", None, {}),
            (404, "POST", "/v1/jobs/nobody/checkpoint", {"migration_id": "m1"}, {}),
            (404, "GET", "/v1/nowhere", None, {}),
            (405, "DELETE", "/v1/status", None, {}),
            (415, "POST", "/v1/jobs/j/resume", None, {"data": b"migration_id=m1"}),
        ]
        for expected, method, path, body, extra in cases:
            status, answer = await api.call(method, path, body, **extra)
            assert status == expected, (method, path, body, answer)
            assert set(answer) == {"error", "detail"}, answer
            assert "Traceback" not in answer["detail"]
        status, answer = await api.call("POST", "/v1/reservations", {"migration_id": "m1"})
        assert "job_id" in answer["detail"], "a 400 names the field"
        submitted = {
            "job_id": "j2",
            "gpus": 1,
            "power_kw": 0.5,
            "checkpoint_gb": 0.001,
            "work_remaining_gpu_h": 1.0,
            "migratable": True,
            "flex_tier": 1,
            "command": ["{python}", "--version", "{nope}"],
        }
        status, answer = await api.call("POST", "/v1/jobs", submitted)
        assert status == 400 and "command[2]" in answer["detail"]
        submitted["command"] = ["/no/such/program"]
        status, answer = await api.call("POST", "/v1/jobs", submitted)
        assert status == 400 and "command[0]" in answer["detail"]
        assert alpha.agent.status().jobs == ()


async def test_rule_reservations_are_idempotent_by_migration_id(tmp_path: Path) -> None:
    async with running_agents(agent_settings(tmp_path, "alpha")) as [alpha]:
        api = alpha.api
        ask = {"migration_id": "m1", "job_id": "j1", "gpus": 3, "power_kw": 2.0}
        assert await api.call("POST", "/v1/reservations", ask) == (
            200,
            {"migration_id": "m1", "state": "reserved"},
        )
        assert (await api.call("POST", "/v1/reservations", ask))[1]["state"] == "reserved"
        assert alpha.agent.status().gpus_free == 1, "held once"
        status, _ = await api.call("POST", "/v1/reservations", ask | {"gpus": 2})
        assert status == 409, "same migration id, other arguments"
        other = {"migration_id": "m2", "job_id": "j2", "gpus": 2, "power_kw": 0.5}
        status, answer = await api.call("POST", "/v1/reservations", other)
        assert status == 409 and "1 GPUs free" in answer["detail"]
        for _ in range(2):
            assert await api.call("DELETE", "/v1/reservations/m1") == (
                200,
                {"migration_id": "m1", "state": "released"},
            )
        assert (await api.call("POST", "/v1/reservations", ask))[1]["state"] == "released"
        assert (await api.call("DELETE", "/v1/reservations/m3"))[0] == 200
        late = {"migration_id": "m3", "job_id": "j3", "gpus": 1, "power_kw": 0.5}
        assert (await api.call("POST", "/v1/reservations", late))[1]["state"] == "released"
        assert alpha.agent.status().gpus_free == 4


async def test_rule_checkpoint_is_idempotent_and_reports_the_real_file(tmp_path: Path) -> None:
    async with running_agents(agent_settings(tmp_path, "alpha", [idle_job()])) as [alpha]:
        api = alpha.api
        await training_started(alpha)
        path = f"/v1/jobs/{JOB_ID}/checkpoint"
        status, started = await api.call("POST", path, {"migration_id": "m1"})
        assert status == 202 and started["state"] == "in_progress"
        repeat_status, repeat = await api.call("POST", path, {"migration_id": "m1"})
        assert repeat_status == 202 and repeat["started_at"] == started["started_at"]
        done = await api.operation_done("m1", "checkpoint")
        assert done["state"] == "done", done
        assert (await api.call("POST", path, {"migration_id": "m1"}))[1] == done
        [written] = alpha.agent.job_paths(JOB_ID).checkpoints_dir.iterdir()
        assert done["checkpoint"] == {
            "size_gb": written.stat().st_size / 1e9,
            "sha256": file_sha256(written),
        }
        assert alpha.agent.job_state(JOB_ID) == "checkpointed"
        assert live_processes([alpha]) == []
        status, answer = await api.call("POST", path, {"migration_id": "m2"})
        assert status == 409 and "checkpointed, not running" in answer["detail"]
        status, _ = await api.call("POST", "/v1/jobs/other/checkpoint", {"migration_id": "m1"})
        assert status == 409, "same migration id, another job"
        status, answer = await api.call(
            "POST", f"/v1/jobs/{JOB_ID}/release", {"migration_id": "m1"}
        )
        assert status == 409 and "no completed transfer" in answer["detail"]
        assert alpha.agent.job_state(JOB_ID) == "checkpointed", "a refused release keeps it"


async def test_rule_resume_after_an_aborted_migration_restarts_from_the_checkpoint(
    tmp_path: Path, reference_model: bytes
) -> None:
    async with running_agents(agent_settings(tmp_path, "alpha", [gated_job(tmp_path)])) as [alpha]:
        api = alpha.api
        await held_at_gate(alpha)
        await api.call("POST", f"/v1/jobs/{JOB_ID}/checkpoint", {"migration_id": "m1"})
        done = await api.operation_done("m1", "checkpoint")
        [written] = alpha.agent.job_paths(JOB_ID).checkpoints_dir.iterdir()
        step = checkpoint_step(written)
        assert step == HOLD_AT_STEP

        resume = f"/v1/jobs/{JOB_ID}/resume"
        status, job = await api.call("POST", resume, {"migration_id": "m1"})
        assert (status, job["state"]) == (200, "running")
        process = alpha.agent.job_process(JOB_ID)
        assert process is not None
        assert process.argv[-2:] == (RESUME_OPTION, str(written))
        assert (await api.call("POST", resume, {"migration_id": "m1"}))[0] == 200
        assert alpha.agent.job_process(JOB_ID) is process, "a repeat changes nothing"
        assert (await api.operation_done("m1", "checkpoint")) == done

        step_gate(tmp_path).touch()
        await wait_for(
            lambda: alpha.agent.job_state(JOB_ID) == "finished", "finished", HANG_GUARD_S
        )
        assert f"resumed from {written} at step {step}" in alpha.log_text()
        assert alpha.model_bytes() == reference_model
        status, answer = await api.call("POST", resume, {"migration_id": "m2"})
        assert status == 409 and "finished" in answer["detail"]


async def test_rule_release_only_after_a_done_transfer(tmp_path: Path) -> None:
    async with running_agents(
        agent_settings(tmp_path, "alpha", [idle_job()]), agent_settings(tmp_path, "beta")
    ) as agents:
        alpha, beta = agents
        api = alpha.api
        await training_started(alpha)
        release = f"/v1/jobs/{JOB_ID}/release"
        status, answer = await api.call("POST", release, {"migration_id": "m1"})
        assert status == 409 and "running" in answer["detail"]
        await api.call("POST", f"/v1/jobs/{JOB_ID}/checkpoint", {"migration_id": "m1"})
        await api.operation_done("m1", "checkpoint")
        refused = {
            "migration_id": "m0",
            "target_site_id": "beta",
            "target_url": beta.url,
            "bandwidth_gbps": 10.0,
            "target_token": "not-the-token-of-beta",
        }
        status, _ = await api.call("POST", f"/v1/jobs/{JOB_ID}/transfer", refused)
        assert status == 202
        failed = await api.operation_done("m0", "transfer")
        assert failed["state"] == "failed" and "401" in failed["error"], failed
        status, answer = await api.call("POST", release, {"migration_id": "m0"})
        assert status == 409 and "no completed transfer" in answer["detail"]
        transfer = {
            "migration_id": "m1",
            "target_site_id": "beta",
            "target_url": beta.url,
            "bandwidth_gbps": 10.0,
        }
        status, started = await api.call("POST", f"/v1/jobs/{JOB_ID}/transfer", transfer)
        assert status == 202 and started["kind"] == "transfer"
        status, _ = await api.call(
            "POST", f"/v1/jobs/{JOB_ID}/transfer", transfer | {"bandwidth_gbps": 1.0}
        )
        assert status == 409, "same migration id, other arguments"
        sent = await api.operation_done("m1", "transfer")
        assert sent["state"] == "done", sent
        received = beta.agent.received_dir / "m1.ckpt"
        assert file_sha256(received) == sent["checkpoint"]["sha256"]

        for _ in range(2):
            assert await api.call("POST", release, {"migration_id": "m1"}) == (
                200,
                {"job_id": JOB_ID, "state": "released"},
            )
        assert alpha.agent.job_state(JOB_ID) is None
        assert not alpha.agent.job_paths(JOB_ID).checkpoints_dir.exists()
        status, _ = await api.call("POST", f"/v1/jobs/{JOB_ID}/resume", {"migration_id": "m1"})
        assert status == 404


async def test_rule_resume_while_checkpointing_fails_the_checkpoint_and_runs_on_from_it(
    tmp_path: Path,
) -> None:
    checkpoint_gate = tmp_path / "checkpoint-gate"
    command = [
        *example_command(gate=step_gate(tmp_path)),
        "--checkpoint-gate",
        str(checkpoint_gate),
    ]
    async with running_agents(agent_settings(tmp_path, "alpha", [job_table(command=command)])) as [
        alpha
    ]:
        api = alpha.api
        await held_at_gate(alpha)
        first = alpha.agent.job_process(JOB_ID)
        status, _ = await api.call("POST", f"/v1/jobs/{JOB_ID}/checkpoint", {"migration_id": "m1"})
        assert status == 202
        # The job waits on its SIGTERM, before writing: the checkpoint is in progress.
        await wait_for(
            lambda: "holding the checkpoint" in alpha.log_text(), "checkpointing", HANG_GUARD_S
        )
        status, job = await api.call("POST", f"/v1/jobs/{JOB_ID}/resume", {"migration_id": "m1"})
        assert (status, job["state"]) == (200, "running")
        checkpoint_gate.touch()
        op = await api.operation_done("m1", "checkpoint")
        assert op["state"] == "failed" and "resumed" in op["error"]

        def restarted() -> bool:
            process = alpha.agent.job_process(JOB_ID)
            return process is not None and process is not first

        await wait_for(restarted, "the job started again", HANG_GUARD_S)
        [written] = alpha.agent.job_paths(JOB_ID).checkpoints_dir.iterdir()
        process = alpha.agent.job_process(JOB_ID)
        assert process is not None and process.argv[-2:] == (RESUME_OPTION, str(written))
        assert alpha.agent.job_state(JOB_ID) == "running"
        assert live_processes([alpha]) == ["alpha"]


HELD_BYTES = 300_000
"""The proxy holds the throttled transfer this many bytes in."""


async def test_transfer_is_throttled_and_resumes_after_an_agent_restart(tmp_path: Path) -> None:
    """Throttled to the call's bandwidth, a transfer outlasts a restart of the source agent
    and continues where the target's copy stopped. The source is stopped while a proxy holds
    its stream :data:`HELD_BYTES` in."""
    wide = job_table(command=[*example_command(gate=step_gate(tmp_path)), "--width", "2048"])
    alpha_settings = agent_settings(tmp_path, "alpha", [wide])
    async with running_agents(agent_settings(tmp_path, "beta")) as [beta]:
        proxy = CuttingProxy(upstream_port=int(beta.url.rsplit(":", 1)[1]))
        proxy.hold = hold = StreamHold(b"PUT /v1/checkpoints/", HELD_BYTES)
        await proxy.start()
        try:
            async with running_agents(alpha_settings) as [alpha]:
                await held_at_gate(alpha)
                await alpha.api.call(
                    "POST", f"/v1/jobs/{JOB_ID}/checkpoint", {"migration_id": "m1"}
                )
                checkpoint = await alpha.api.operation_done("m1", "checkpoint")
                size_bytes = round(checkpoint["checkpoint"]["size_gb"] * 1e9)
                assert size_bytes > 2 * HELD_BYTES
                rate_bytes_per_s = size_bytes / 1.5
                bandwidth_gbps = rate_bytes_per_s * 8 / 1e9
                transfer = {
                    "migration_id": "m1",
                    "target_site_id": "beta",
                    "target_url": proxy.url,
                    "bandwidth_gbps": bandwidth_gbps,
                }
                status, started = await alpha.api.call(
                    "POST", f"/v1/jobs/{JOB_ID}/transfer", transfer
                )
                assert status == 202
                assert started["expected_s"] == pytest.approx(1.5 / 0.9)
                await wait_for(lambda: hold.waiting > 0, "the stream held mid-way", HANG_GUARD_S)
            hold.release(cut=True)  # alpha stopped mid-transfer: beta holds part of it

            async def held_bytes() -> tuple[int, str]:
                async with beta.api.session.head(
                    beta.url + "/v1/checkpoints/m1",
                    headers={"Authorization": f"Bearer {beta.api.token}"},
                ) as head:
                    if head.status == 404:
                        return 0, "false"
                    return int(head.headers["X-Received-Bytes"]), head.headers[
                        "X-Checkpoint-Complete"
                    ]

            async def kept() -> tuple[int, str] | None:
                held = await held_bytes()
                return held if held[0] > 0 else None

            held = await wait_for(kept, "beta to keep part of the cut stream", HANG_GUARD_S)
            assert isinstance(held, tuple)
            assert 0 < held[0] <= HELD_BYTES and held[1] == "false"

            async with running_agents(alpha_settings) as [alpha]:
                sent = await alpha.api.operation_done("m1", "transfer")
                assert sent["state"] == "done", sent
                elapsed_s = (
                    datetime.fromisoformat(sent["done_at"])
                    - datetime.fromisoformat(sent["started_at"])
                ).total_seconds()
                assert elapsed_s >= 0.9 * size_bytes / rate_bytes_per_s, "throttled"
                received = beta.agent.received_dir / "m1.ckpt"
                assert file_sha256(received) == sent["checkpoint"]["sha256"]
                assert alpha.agent.job_state(JOB_ID) == "checkpointed"
        finally:
            await proxy.close()


async def test_rule_restore_needs_the_reservation_and_the_verified_checkpoint(
    tmp_path: Path,
) -> None:
    async with running_agents(agent_settings(tmp_path, "beta")) as [beta]:
        api = beta.api
        restore = {
            "migration_id": "m1",
            "source_site_id": "alpha",
            "checkpoint": {"size_gb": 0.001, "sha256": "ab" * 32},
            "job": {
                "gpus": 1,
                "power_kw": 0.6,
                "checkpoint_gb": 0.001,
                "work_remaining_gpu_h": 1.0,
                "migratable": True,
                "flex_tier": 1,
            },
        }
        path = f"/v1/jobs/{JOB_ID}/restore"
        status, answer = await api.call("POST", path, restore)
        assert status == 409 and "no reservation" in answer["detail"]
        reserve = {"migration_id": "m1", "job_id": JOB_ID, "gpus": 1, "power_kw": 0.6}
        await api.call("POST", "/v1/reservations", reserve)
        status, started = await api.call("POST", path, restore)
        assert status == 202 and started["state"] == "in_progress"
        failed = await api.operation_done("m1", "restore")
        assert failed["state"] == "failed" and "manifest" in failed["error"]
        assert beta.agent.job_state(JOB_ID) is None
        site = beta.agent.status()
        assert (site.gpus_free, site.gpus_reserved) == (4, 0), "reservation freed"
        assert (await api.call("POST", "/v1/reservations", reserve))[1]["state"] == "released"


async def test_agent_restart_resumes_its_jobs_from_their_shutdown_checkpoints(
    tmp_path: Path, reference_model: bytes
) -> None:
    settings = agent_settings(tmp_path, "alpha", [gated_job(tmp_path)])
    async with running_agents(settings) as [alpha]:
        await held_at_gate(alpha)
    # Stopped: the job checkpointed and exited; its state says it is to run again.
    [written] = alpha.agent.job_paths(JOB_ID).checkpoints_dir.iterdir()
    step = checkpoint_step(written)
    assert step == HOLD_AT_STEP
    assert live_processes([alpha]) == []

    async with running_agents(settings) as [again]:
        assert again.agent.job_state(JOB_ID) == "running"
        step_gate(tmp_path).touch()
        await wait_for(
            lambda: again.agent.job_state(JOB_ID) == "finished", "finished", HANG_GUARD_S
        )
        assert f"resumed from {written} at step {step}" in again.log_text()
        assert again.log_text().count("started at step 0") == 1, "the job started once"
        assert again.model_bytes() == reference_model


async def test_a_second_agent_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    settings = agent_settings(tmp_path, "alpha", [idle_job()])
    async with running_agents(settings) as [alpha]:
        with pytest.raises(AgentStateError, match="another site agent is running"):
            await start_agent_server(settings)
        assert live_processes([alpha]) == ["alpha"], "the first agent's job runs on, alone"


async def test_a_failing_job_is_restarted_then_given_up(tmp_path: Path) -> None:
    failing = job_table("crashy", ["{python}", "-c", "import sys; sys.exit(3)"])
    settings = agent_settings(tmp_path, "alpha", [failing], max_restarts=2)
    async with running_agents(settings) as [alpha]:
        await wait_for(
            lambda: alpha.agent.job_state("crashy") == "finished", "given up", HANG_GUARD_S
        )
        assert alpha.agent.status().gpus_free == 4
        state = json.loads((tmp_path / "alpha" / "agent-state.json").read_text())
        assert state["jobs"][0]["restarts"] == 3


# ---- the state file ----------------------------------------------------------------------------


def saved_state(tmp_path: Path) -> AgentState:
    """A state with one of everything the file holds."""
    at = datetime(2026, 6, 21, 12, tzinfo=UTC)
    spec = JobSpec(JOB_ID, gpus=2, power_kw=1.2, checkpoint_gb=2e6, work_remaining_gpu_h=3.0)
    checkpoint = CheckpointFile(tmp_path / "c.bin", 1234, "ab" * 32)
    state = AgentState()
    state.jobs[JOB_ID] = AgentJob(
        spec=spec,
        command=("{python}", ""),
        state="checkpointed",
        work_remaining_gpu_h=2.5,
        progressed_at=at,
        checkpoint=checkpoint,
        checkpoint_sequence=3,
        checkpoint_migration_id="m1",
        restarts=1,
        pgid=4242,
    )
    done = JobSpec("done", gpus=1, power_kw=0.0, checkpoint_gb=0.5, work_remaining_gpu_h=0.0)
    state.jobs["done"] = AgentJob(done, None, "finished", 0.0, at)
    state.reservations["m2"] = Reservation("m2", "other", 1, 0.5, "consumed")
    key = ("m1", "checkpoint")
    state.operations[key] = Operation.started(key, JOB_ID, at, 4.0, Checkpoint(1.2e-6, "ab" * 32))
    state.operation_args[key] = [JOB_ID]
    state.transfer_tokens["m1"] = "token-of-the-target"
    state.manifests["m3"] = Manifest("j3", ("{python}", "-m", "job"), "alpha")
    state.released_unknown = {"m4"}
    state.resumed = {("m5", JOB_ID)}
    state.released_jobs = {("m6", "gone")}
    return state


def test_state_file_round_trips(tmp_path: Path) -> None:
    state = saved_state(tmp_path)
    save_state(state, tmp_path)
    assert load_state(tmp_path) == state
    assert (tmp_path / "agent-state.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("label", "path", "value", "field"),
    [
        ("flex tier not an integer", ("jobs", 0, "spec", "flex_tier"), "1", "spec.flex_tier"),
        ("job state unknown", ("jobs", 0, "state"), "dancing", "jobs[0].state"),
        ("pgid not an integer", ("jobs", 0, "pgid"), "4242", "jobs[0].pgid"),
        ("command not strings", ("jobs", 0, "command"), ["{python}", 1], "command[1]"),
        ("reservation id not an id", ("reservations", 0, "migration_id"), "../m", "migration_id"),
        ("reservation state unknown", ("reservations", 0, "state"), "lost", "state"),
        ("manifest command", ("manifests", 0, "command"), "job", "manifests[0].command"),
        ("pair of three", ("resumed", 0), ["m", "j", "x"], "resumed[0]"),
        ("released not strings", ("released_unknown",), [1], "released_unknown[0]"),
    ],
)
def test_damaged_state_file_names_the_file_and_the_field(
    tmp_path: Path, label: str, path: tuple[str | int, ...], value: object, field: str
) -> None:
    document = state_to_json(saved_state(tmp_path))
    parent: Any = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    (tmp_path / "agent-state.json").write_text(json.dumps(document))
    with pytest.raises(AgentStateError) as error:
        load_state(tmp_path)
    assert str(tmp_path / "agent-state.json") in str(error.value)
    assert field in str(error.value), label


# ---- configuration and the command line ---------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gpus_totl": 4}, "gpus_totl: unknown key"),
        ({"token": "short"}, "token: String should have at least 8 characters"),
        ({"job": [job_table(command=["{python}", "{out}"])]}, "job[0].command[1]: unknown"),
        ({"job": [job_table(), job_table()]}, "job[1].id: duplicate job id"),
        ({"gpus_total": 1, "job": [job_table("a"), job_table("b")]}, "job[1].gpus:"),
    ],
)
def test_config_errors_name_the_file_and_the_key(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = write_toml(tmp_path / "agent.toml", agent_data(tmp_path, "alpha") | change)
    with pytest.raises(ConfigError) as error:
        load_agent_settings(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_cli_refuses_a_bad_config_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_toml(tmp_path / "agent.toml", agent_data(tmp_path, "alpha") | {"sites": 1})
    assert cli_main(["site-agent", "--config", str(path)]) == 2
    assert "agent.toml: sites: unknown key" in capsys.readouterr().err


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def start_cli_agent(config: Path) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        *loopback_agents.agent_command(config), stderr=asyncio.subprocess.PIPE, cwd=ROOT
    )
    assert process.stderr is not None
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), HANG_GUARD_S)).decode()
        assert line, "the agent exited before serving"
        match = re.search(r"serving at (http://\S+)", line)
        if match:
            return process, match.group(1)


async def test_cli_agent_survives_sigkill_without_leaving_its_job_running(
    tmp_path: Path, reference_model: bytes
) -> None:
    data = agent_data(tmp_path, "alpha", [gated_job(tmp_path)]) | {"listen_port": 0}
    config = write_toml(tmp_path / "agent.toml", data)
    settings = load_agent_settings(config)
    log_path = tmp_path / "alpha" / "jobs" / JOB_ID / "job.log"
    state_path = tmp_path / "alpha" / "agent-state.json"

    agent, url = await start_cli_agent(config)
    holding = f"holding at step {HOLD_AT_STEP}"
    await wait_for(lambda: holding in _text(log_path), "the job held mid-training", HANG_GUARD_S)
    job_pid = json.loads(state_path.read_text())["jobs"][0]["pgid"]
    assert pid_alive(job_pid)
    agent.kill()
    await agent.wait()
    # The kernel tells the orphaned job (PR_SET_PDEATHSIG): it checkpoints and exits.
    await wait_for(lambda: not pid_alive(job_pid), "the orphaned job exited", HANG_GUARD_S)
    assert f"SIGTERM: checkpoint at step {HOLD_AT_STEP}" in _text(log_path)
    assert (settings.data_dir / "jobs" / JOB_ID / "checkpoint.pending").exists()

    agent, url = await start_cli_agent(config)
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {TOKENS['alpha']}"}

            async def job_state() -> str:
                async with http.get(url + "/v1/status", headers=headers) as response:
                    return str((await response.json())["jobs"][0]["state"])

            step_gate(tmp_path).touch()
            await wait_for_value(job_state, "finished", "the resumed job", HANG_GUARD_S)
        assert "resumed from" in _text(log_path)
        output = settings.data_dir / "jobs" / JOB_ID / "output" / MODEL_FILE
        assert output.read_bytes() == reference_model
    finally:
        agent.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(agent.wait(), HANG_GUARD_S) == 0


def test_cli_help_explains_the_site_agent(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli_main(["site-agent", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--config FILE" in out and "SIGTERM" in out and "docs/site-agent.md" in out


def test_documented_example_config_is_valid() -> None:
    settings = load_agent_settings(ROOT / "config" / "site-agent.example.toml")
    assert settings.job and settings.job[0].command[0] == "{python}"
    assert os.fspath(settings.data_dir)


def test_documented_slurm_example_config_is_valid() -> None:
    settings = load_agent_settings(ROOT / "config" / "site-agent-slurm.example.toml")
    assert settings.slurm is not None and settings.gpus_total is None
    assert settings.slurm.conf_path == Path("/etc/slurm/slurm.conf")
    assert settings.job[0].command[2] == "gateway.training.example_torch"


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        ({"gpus_total": 4}, "gpus_total", "with [slurm] the GPUs are the cluster's"),
        ({"slurm": {"poll_s": 0}}, "slurm.poll_s", "greater than 0"),
        ({"slurm": {"gress": "gpu"}}, "slurm.gress", "unknown key"),
    ],
)
def test_slurm_settings_errors_name_the_key(
    tmp_path: Path, change: dict[str, Any], key: str, problem: str
) -> None:
    data = {k: v for k, v in agent_data(tmp_path, "alpha").items() if k != "gpus_total"}
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: .*{re.escape(problem)}"):
        parse_agent_settings(data | {"slurm": {}} | change, "agent.toml")


def test_without_slurm_gpus_total_is_required(tmp_path: Path) -> None:
    data = agent_data(tmp_path, "alpha")
    del data["gpus_total"]
    with pytest.raises(ConfigError, match="gpus_total: required key is missing"):
        parse_agent_settings(data, "agent.toml")

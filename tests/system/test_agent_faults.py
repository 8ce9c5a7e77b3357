"""Migrations between two real site agents under faults (issue 5, item 4), on SQLite and PostgreSQL.

Two ``dr-gateway site-agent`` processes serve on loopback; the gateway's Dispatcher, on a real
database, migrates the example training job from alpha to beta while one fault strikes:
SIGKILL of the source or of the target agent mid-transfer (then a restart on the same port), a
transfer stream cut by a proxy, a target that refuses the restore, an agent that stops
answering (SIGSTOP), and SIGKILL of the gateway's daemon in each state a migration can be held
in with real agents (planned, target_reserved, checkpointing, transferring, restoring).

No fault depends on how long anything takes: the test holds the migration in the state it
names until the fault has struck, with gates it controls.

- The job waits at step :data:`HOLD_AT_STEP` until the test lets it finish (the example job's
  ``--step-gate``): it is running, mid-training, however loaded the machine, and a job resumed
  from that step waits there again.
- A job told so waits on SIGTERM before writing its checkpoint (``--checkpoint-gate``: the
  source's checkpoint operation stays in progress) or after loading a checkpoint before
  confirming it (``--resume-gate``: the target's restore stays in progress).
- Beta is reached through a :class:`simulators.cutting_proxy.CuttingProxy`, which holds the
  checkpoint stream a given number of bytes in (:data:`HOLD_AFTER_BYTES`) or the reservation
  call before its first byte, until the test lets it go on or cuts it.

Throughout each test :class:`tests.support.invariants.InvariantMonitor` asks both agents over their
API (every 20 ms and after every round of the Dispatcher) and checks the three invariants of
``docs/architecture.md``, 'Invariants'; while an agent is down, a sample cannot be taken and is
counted as such. At the end the migration has ended, no GPU is reserved, the job runs at exactly one
site where the gateway believes it is, and its final model equals, bit for bit, that of a run that
was never interrupted.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import aiohttp
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from gateway.agent.example_job import MODEL_FILE
from gateway.clock import SystemClock
from gateway.db import unit_of_work
from gateway.errors import SiteControllerError
from gateway.migration.deadlines import StepTimeouts
from gateway.migration.dispatch import Dispatcher, DispatchParams
from gateway.planner.snapshot import MigrationDecision
from gateway.sites.client import SiteControllerClient
from models import FINAL_STATES, Job, Migration, Site
from simulators.cutting_proxy import CuttingProxy, StreamHold
from simulators.hang_guard import HANG_GUARD_S
from tests.support.invariants import HttpProbe, InvariantMonitor, SiteView, _MigrationRow
from tests.support.settings_files import write_toml
from tests.support.waiting import wait_for, wait_for_value
from tests.system.test_migration_faults import SitesDaemon, monitor_ended
from tests.system.test_site_agent import (
    EXAMPLE_JOB,
    JOB_ID,
    ROOT,
    TOKENS,
    agent_data,
    example_command,
    job_table,
    seed_database,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * HANG_GUARD_S)]

STEPS = 200
"""Steps of the example job."""
HOLD_AT_STEP = 100
"""The job waits after this many steps until the test lets it finish (:class:`Gates`)."""
WIDTH = 512
"""Hidden units of the example job: its checkpoint is about 280 kB."""
WAN_BANDWIDTH_GBPS = 0.01
"""1.25 MB/s: the checkpoint takes about a quarter of a second to send."""
ROUND_S = 0.02
"""Pause between two rounds of the Dispatcher [s]."""
HOLD_AFTER_BYTES = 100_000
"""The proxy holds the checkpoint stream this many bytes in (about a third of it)."""
MIN_SAMPLES = 10
"""Samples the monitor takes at least in each test, whatever it lasts."""


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The final model of an uninterrupted run of the example job."""
    import subprocess

    out = tmp_path_factory.mktemp("reference")
    subprocess.run(
        [*EXAMPLE_JOB, "--steps", str(STEPS), "--out", str(out), "--width", str(WIDTH)],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD_S,
    )
    return (out / MODEL_FILE).read_bytes()


@dataclass(frozen=True)
class Gates:
    """The files the example job waits for (test-only options of
    ``gateway.agent.example_job``): at step :data:`HOLD_AT_STEP` until ``step`` exists; on
    SIGTERM, before writing its checkpoint, until ``checkpoint`` exists; after loading a
    checkpoint, before confirming its resume, until ``resume`` exists (None: no such wait)."""

    step: Path
    checkpoint: Path | None = None
    resume: Path | None = None

    def options(self) -> list[str]:
        options = ["--step-gate", str(self.step), "--hold-at-step", str(HOLD_AT_STEP)]
        if self.checkpoint is not None:
            options += ["--checkpoint-gate", str(self.checkpoint)]
        if self.resume is not None:
            options += ["--resume-gate", str(self.resume)]
        return options

    def open_all(self) -> None:
        for gate in (self.step, self.checkpoint, self.resume):
            if gate is not None:
                gate.touch()


def training_job(gates: Gates) -> dict[str, Any]:
    """The example job; it confirms its resumes (``{resumed_path}``) and waits at its
    ``gates``."""
    command = [*example_command(STEPS), "--width", str(WIDTH), "--resumed-file", "{resumed_path}"]
    return job_table(command=[*command, *gates.options()])


# ---- agents as processes -------------------------------------------------------------------

Configure = Callable[[str, dict[str, Any]], dict[str, Any]]
"""(site id, the agent's settings) -> the settings it runs with."""


@dataclass
class AgentProcess:
    """``dr-gateway site-agent`` as an OS process; it keeps its port across restarts."""

    site_id: str
    root: Path
    jobs: list[dict[str, Any]]
    configure: Configure | None = None
    """Changes the agent's settings before they are written (e.g. a Slurm cluster's)."""
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    paused: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / self.site_id

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.site_id}-agent-{self.starts}.log"

    def logs(self) -> str:
        return "".join(
            path.read_text() for path in sorted(self.root.glob(f"{self.site_id}-agent-*.log"))
        )

    def model_bytes(self) -> bytes:
        return (self.data_dir / "jobs" / JOB_ID / "output" / MODEL_FILE).read_bytes()

    async def start(self) -> None:
        data = agent_data(self.root, self.site_id, self.jobs) | {
            "listen_port": self.port,
            "checkpoint_timeout_s": HANG_GUARD_S,  # a checkpoint may wait at its gate
        }
        if self.configure is not None:
            data = self.configure(self.site_id, data)
        config = write_toml(self.root / f"{self.site_id}.toml", data)
        self.starts += 1
        with self.log_path.open("w") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.cli",
                "site-agent",
                "--config",
                str(config),
                stderr=log,
                cwd=ROOT,
            )
        process = self.process

        def served() -> re.Match[str] | None:
            assert process.returncode is None, f"agent {self.site_id} exited: {self.logs()}"
            return re.search(r"serving at http://[\d.]+:(\d+)", self.log_path.read_text())

        match = await wait_for(served, f"agent {self.site_id} to serve", HANG_GUARD_S)
        assert isinstance(match, re.Match)
        self.port = int(match.group(1))

    def pause(self) -> None:
        """SIGSTOP: the agent stops answering (its connections stay open, its jobs run on)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def unpause(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
        self.paused = False

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()
        self.process = None

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            self.process = None  # it exited on its own: its log tells why
        if self.process is not None:
            self.unpause()
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
            self.process = None


# ---- the world of one test -----------------------------------------------------------------


class AgentMonitor(InvariantMonitor):
    """An :class:`InvariantMonitor` for real agents.

    It counts the samples it could not take because an agent was down (a SIGKILL under test)
    instead of failing on them. For invariant 2 it takes the size of a verified checkpoint
    from the site that wrote it and checks only its sha256 against the gateway's record: until
    the Dispatcher records the checkpoint (when it moves to transferring, see
    :func:`test_gateway_records_the_real_checkpoint_size`) the migration carries the job's
    declared ``checkpoint_gb``, which a real checkpoint does not match to the byte.
    """

    unreachable = 0

    async def sample(self) -> None:
        try:
            await super().sample()
        except SiteControllerError:
            self.unreachable += 1

    async def _nothing_lost(
        self, views: Mapping[str, SiteView], migrations: Mapping[str, _MigrationRow]
    ) -> None:
        probes = {probe.site_id: probe for probe in self._probes}
        known: dict[str, _MigrationRow] = {}
        for migration_id, m in migrations.items():
            checkpoint = await probes[m.source_site_id].checkpoint(migration_id)
            if checkpoint is not None and m.checkpoint_sha256 in (None, checkpoint.sha256):
                m = replace(m, checkpoint_gb=checkpoint.size_gb)
            known[migration_id] = m
        await super()._nothing_lost(views, known)


@dataclass
class World:
    sessions: sessionmaker[Session]
    alpha: AgentProcess
    beta: AgentProcess
    proxy: CuttingProxy
    http: aiohttp.ClientSession
    monitor: AgentMonitor
    clients: dict[str, SiteControllerClient]
    gates: Gates
    """What the job waits for (:meth:`let_job_finish` opens them all)."""

    def let_job_finish(self) -> None:
        self.gates.open_all()

    def hold(self, marker: bytes, after_bytes: int = 0) -> StreamHold:
        """Hold the next requests to beta that carry ``marker`` (:class:`StreamHold`)."""
        self.proxy.hold = StreamHold(marker, after_bytes)
        return self.proxy.hold

    def hold_transfer(self) -> StreamHold:
        """Hold the checkpoint stream to beta :data:`HOLD_AFTER_BYTES` in."""
        return self.hold(b"PUT /v1/checkpoints/", HOLD_AFTER_BYTES)

    def headers(self, site_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[site_id]}"}

    async def get(self, agent: AgentProcess, path: str) -> Any:
        async with self.http.get(agent.url + path, headers=self.headers(agent.site_id)) as r:
            assert r.status == 200, (path, r.status, await r.text())
            return await r.json()

    async def job_state(self, agent: AgentProcess) -> str | None:
        status = await self.get(agent, "/v1/status")
        states = [job["state"] for job in status["jobs"] if job["job_id"] == JOB_ID]
        return states[0] if states else None

    async def held_bytes(self, migration_id: str) -> int:
        """Bytes of the migration's checkpoint the target holds (HEAD on beta)."""
        url = f"{self.beta.url}/v1/checkpoints/{migration_id}"
        async with self.http.head(url, headers=self.headers("beta")) as response:
            if response.status == 404:
                return 0
            assert response.status == 200, response.status
            return int(response.headers["X-Received-Bytes"])

    async def gpus_reserved(self, agent: AgentProcess) -> int:
        return int((await self.get(agent, "/v1/status"))["gpus_reserved"])

    async def operation_state(self, agent: AgentProcess, migration_id: str, kind: str) -> str:
        return str((await self.get(agent, f"/v1/operations/{migration_id}/{kind}"))["state"])

    async def checkpoint_size_bytes(self, migration_id: str) -> int:
        op = await self.get(self.alpha, f"/v1/operations/{migration_id}/checkpoint")
        assert op["state"] == "done", op
        return round(float(op["checkpoint"]["size_gb"]) * 1e9)

    def migration(self, migration_id: str) -> Migration:
        return self.migration_in(self.sessions, migration_id)

    @staticmethod
    def migration_in(sessions: sessionmaker[Session], migration_id: str) -> Migration:
        with unit_of_work(sessions) as session:
            migration = session.get(Migration, migration_id)
            assert migration is not None
            session.expunge(migration)
            return migration

    async def migrate(
        self,
        during: Callable[[str, str], Awaitable[None]] | None = None,
        timeout_s: float = HANG_GUARD_S,
        params: DispatchParams | None = None,
    ) -> tuple[str, str, list[str]]:
        """Migrate the job from alpha to beta until the migration ended and was cleaned up;
        (migration id, final state, states seen). ``during(migration_id, state)`` runs after
        every round."""
        dispatcher = Dispatcher(self.sessions, self.clients, SystemClock(), params)
        migration_id = dispatcher.create(
            MigrationDecision(JOB_ID, "alpha", "beta", "test", expected_s=5.0, expected_kwh=1e-3)
        )
        assert migration_id is not None
        started = time.monotonic()
        seen: list[str] = []
        while True:
            state = await dispatcher.advance(migration_id)
            if not seen or seen[-1] != state:
                seen.append(state)
            await self.monitor.sample()
            migration = self.migration(migration_id)
            if state in FINAL_STATES and migration.cleaned_up_at is not None:
                return migration_id, state, seen
            if during is not None:
                await during(migration_id, state)
            assert time.monotonic() - started < timeout_s, f"stuck in {seen}: {migration.error}"
            await asyncio.sleep(ROUND_S)

    async def wait_for_state(
        self, agent: AgentProcess, state: str, timeout_s: float = HANG_GUARD_S
    ) -> None:
        await wait_for_value(
            lambda: self.job_state(agent), state, f"the job at {agent.site_id}", timeout_s
        )

    async def assert_settled_at(
        self,
        site: AgentProcess,
        reference_model: bytes,
        checkpointed: bool = True,
    ) -> None:
        """The invariants held throughout; the migration ended with nothing reserved; the job
        lives at ``site`` alone, where the gateway believes it is; it finishes there (resumed
        from a checkpoint if ``checkpointed``) with the model of an uninterrupted run."""
        await self.monitor.sample()
        # The monitor samples on in the background: a test over quickly waits for its
        # samples rather than counting on having lasted long enough to take them.
        await wait_for(
            lambda: self.monitor.samples >= MIN_SAMPLES, "the monitor's samples", HANG_GUARD_S
        )
        self.monitor.assert_held()
        with unit_of_work(self.sessions) as session:
            unended = [
                m.id
                for m in session.query(Migration)
                if m.state != "completed" and not (m.state == "aborted" and m.cleaned_up_at)
            ]
            job = session.get(Job, JOB_ID)
            assert job is not None
            believed_site = job.site_id
        assert not unended
        assert believed_site == site.site_id
        for agent in (self.alpha, self.beta):
            status = await self.get(agent, "/v1/status")
            assert status["gpus_reserved"] == 0, f"GPUs still reserved at {agent.site_id}"
        other = self.beta if site is self.alpha else self.alpha
        assert await self.job_state(other) is None, f"the job is still listed at {other.site_id}"
        self.let_job_finish()
        await self.wait_for_state(site, "finished")
        self.monitor.assert_held()
        if checkpointed:
            assert "resumed from" in job_log(site), "the job was checkpointed mid-training"
        assert site.model_bytes() == reference_model


@asynccontextmanager
async def agent_world(
    sessions: sessionmaker[Session],
    root: Path,
    *,
    cut_after_bytes: int | None = None,
    hold_checkpoint: bool = False,
    hold_resume: bool = False,
    configure: Configure | None = None,
    job: Callable[[Gates], dict[str, Any]] = training_job,
) -> AsyncIterator[World]:
    """Both agents running, the job at alpha held at step :data:`HOLD_AT_STEP`, the database
    seeded with slow WAN links; the monitor sampling. The gateway tells alpha to send to beta
    through a :class:`CuttingProxy` (``cut_after_bytes``), so that the bytes sent can be
    counted, cut and held. The job waits at its step gate until :meth:`World.let_job_finish`,
    and, if told, at its checkpoint gate (``hold_checkpoint``) and its resume gate
    (``hold_resume``) too. ``configure`` changes each agent's settings, ``job`` makes the
    job's ``[[job]]`` (default: the example job of :func:`training_job`)."""
    gates = Gates(
        root / "step-gate",
        root / "checkpoint-gate" if hold_checkpoint else None,
        root / "resume-gate" if hold_resume else None,
    )
    alpha = AgentProcess("alpha", root, [job(gates)], configure)
    beta = AgentProcess("beta", root, [], configure)
    proxy = CuttingProxy(upstream_port=0, cut_after_bytes=cut_after_bytes)
    try:
        await alpha.start()
        await beta.start()
        proxy.upstream_port = beta.port
        await proxy.start()
        seed_database(sessions, {"alpha": alpha.url, "beta": proxy.url})
        with unit_of_work(sessions) as session:
            session.execute(update(Site).values(wan_bandwidth_gbps=WAN_BANDWIDTH_GBPS))
        async with aiohttp.ClientSession() as http:
            clients = {
                agent.site_id: SiteControllerClient(
                    agent.site_id, agent.url, TOKENS[agent.site_id], http, timeout_s=2.0
                )
                for agent in (alpha, beta)
            }
            probes = [HttpProbe(client) for client in clients.values()]
            monitor = AgentMonitor(probes, sessions, [JOB_ID])
            async with monitor:
                world = World(sessions, alpha, beta, proxy, http, monitor, clients, gates)
                await wait_log(alpha, f"holding at step {HOLD_AT_STEP}")
                yield world
    finally:
        gates.open_all()  # a job stopped with its agent checkpoints without waiting
        await proxy.close()
        for agent in (alpha, beta):
            await agent.stop()


def job_log(agent: AgentProcess) -> str:
    path = agent.data_dir / "jobs" / JOB_ID / "job.log"
    return path.read_text() if path.exists() else ""


async def wait_log(agent: AgentProcess, text: str, timeout_s: float = HANG_GUARD_S) -> None:
    await wait_for(
        lambda: text in job_log(agent), f"{text!r} in the job log at {agent.site_id}", timeout_s
    )


def when_held(
    world: World, hold: StreamHold, fault: Callable[[str], Awaitable[None]]
) -> Callable[[str, str], Awaitable[None]]:
    """A ``during`` hook: once ``hold`` holds a connection (the migration is then
    transferring), run ``fault(migration_id)`` once; the fault releases the hold."""

    async def hook(migration_id: str, state: str) -> None:
        if hold.waiting and not hold.released:
            assert state == "transferring", state
            await fault(migration_id)
            assert hold.released, "the fault lets the held stream go on or cuts it"

    return hook


# ---- the cases -----------------------------------------------------------------------------


async def source_killed_mid_transfer(world: World, reference_model: bytes) -> None:
    """SIGKILL the source's agent while the checkpoint stream is held mid-way, cut the
    stream, start the agent again: the migration completes and the job ends bit for bit."""
    hold = world.hold_transfer()
    struck: list[int] = []

    async def kill_source(_migration_id: str) -> None:
        struck.append(world.proxy.sent_bytes)
        await world.alpha.kill()
        hold.release(cut=True)  # what a dead source leaves: the stream ends mid-way
        await world.alpha.start()

    _, state, seen = await world.migrate(during=when_held(world, hold, kill_source))
    assert struck and world.alpha.starts == 2, f"the fault never struck: {seen}"
    assert state == "completed", (seen, world.alpha.logs())
    assert "transferring" in seen
    await world.assert_settled_at(world.beta, reference_model)


async def test_source_agent_killed_mid_transfer_and_restarted_completes_bit_for_bit(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    async with agent_world(session_factory, tmp_path) as world:
        await source_killed_mid_transfer(world, reference_model)


async def test_target_agent_killed_mid_transfer_and_restarted_resumes_bit_for_bit(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    async with agent_world(session_factory, tmp_path) as world:
        hold = world.hold_transfer()
        connections_before_kill: list[int] = []
        held_after_restart: list[int] = []

        async def kill_target(migration_id: str) -> None:
            await world.beta.kill()
            connections_before_kill.append(len(world.proxy.connection_bytes))
            await world.beta.start()
            held_after_restart.append(await world.held_bytes(migration_id))
            hold.release(cut=True)  # the stream's target is gone: alpha sends again

        migration_id, state, seen = await world.migrate(during=when_held(world, hold, kill_target))
        assert connections_before_kill and world.beta.starts == 2, f"never struck: {seen}"
        assert state == "completed", (seen, world.alpha.logs())
        size = await world.checkpoint_size_bytes(migration_id)
        # The stream that completed the transfer (the last connection) carried only what beta
        # held no longer after its restart, plus HTTP headers (beta writes in batches of
        # megabytes: a SIGKILL loses the batch it was gathering).
        resent_bytes = world.proxy.connection_bytes[-1]
        missing_bytes = size - held_after_restart[0]
        assert len(world.proxy.connection_bytes) > connections_before_kill[0]
        assert missing_bytes <= resent_bytes <= missing_bytes + 4096
        await world.assert_settled_at(world.beta, reference_model)


CUT_AFTER_BYTES = 100_000
"""The proxy closes the first connection from alpha to beta after this many bytes."""


async def test_transfer_cut_mid_stream_resumes_where_it_stopped_bit_for_bit(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    async with agent_world(session_factory, tmp_path, cut_after_bytes=CUT_AFTER_BYTES) as world:
        migration_id, state, seen = await world.migrate()
        assert world.proxy.cuts == 1, "the stream was cut"
        assert state == "completed", (seen, world.alpha.logs())
        size = await world.checkpoint_size_bytes(migration_id)
        assert size > 2 * CUT_AFTER_BYTES
        # beta kept what arrived before the cut; the stream that completed the transfer
        # carried the rest only (plus HTTP headers, and the manifest if it shared the cut
        # connection).
        resent_bytes = world.proxy.connection_bytes[-1]
        assert size - CUT_AFTER_BYTES <= resent_bytes <= size - CUT_AFTER_BYTES + 8192, (
            world.proxy.connection_bytes
        )
        await world.assert_settled_at(world.beta, reference_model)


async def test_target_refusing_the_restore_aborts_and_the_job_resumes_at_the_source(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    """beta's reservation is released behind the gateway's back mid-transfer: beta refuses
    the restore (no reservation), the migration aborts, the job resumes at alpha."""
    async with agent_world(session_factory, tmp_path) as world:
        hold = world.hold_transfer()
        released: list[Any] = []

        async def release_reservation(migration_id: str) -> None:
            url = f"{world.beta.url}/v1/reservations/{migration_id}"
            async with world.http.delete(url, headers=world.headers("beta")) as response:
                released.append((response.status, await response.json()))
            hold.release()

        migration_id, state, seen = await world.migrate(
            during=when_held(world, hold, release_reservation)
        )
        assert released == [(200, {"migration_id": migration_id, "state": "released"})]
        assert state == "aborted", seen
        assert "transferring" in seen and "completed" not in seen
        error = world.migration(migration_id).error or ""
        assert "restore" in error and "reservation" in error, error
        await world.assert_settled_at(world.alpha, reference_model)
        assert "resumed from" in job_log(world.alpha)


SHORT_LIMITS = DispatchParams(StepTimeouts(margin=3.0, floor_s=1.0))
"""A checkpoint's limit of about a second."""
SHORT_RESTORE_LIMITS = DispatchParams(
    StepTimeouts(margin=40.0, floor_s=1.0, checkpoint_write_gb_per_s=1e-5)
)
"""A restore's limit of about a second; the checkpoint's and the transfer's, with this slow
disk rate and a wide margin, over ten seconds."""
SILENCE_S = 3.0
"""An agent stops answering at least this long: past the limits of :data:`SHORT_LIMITS` and
of a restore in :data:`SHORT_RESTORE_LIMITS` [s]."""


async def test_source_that_stops_answering_at_the_checkpoint_aborts_then_resumes_the_job(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    """alpha stops answering (SIGSTOP) before the gateway asks it for the checkpoint, until
    the migration has aborted: the checkpoint step overruns its limit, the migration aborts and
    releases beta's reservation; once alpha answers again the clean-up resumes the job there.
    (Whether alpha, once it runs again, still acts on the checkpoint call it never answered is
    up to the kernel's buffers: the job then resumes from that checkpoint, else it just trains
    on.)"""
    async with agent_world(session_factory, tmp_path) as world:

        async def answer_once_aborted(_migration_id: str, state: str) -> None:
            if state == "aborted":
                world.alpha.unpause()

        world.alpha.pause()
        migration_id, state, seen = await world.migrate(
            during=answer_once_aborted, params=SHORT_LIMITS
        )
        assert state == "aborted", seen
        migration = world.migration(migration_id)
        assert migration.checkpointing_at is not None and migration.transferring_at is None
        error = migration.error or ""
        assert "checkpointing" in error and "limit" in error, error
        assert world.monitor.unreachable > 0, "the monitor met the silence too"
        await world.assert_settled_at(world.alpha, reference_model, checkpointed=False)
        assert f"finished {STEPS} steps" in job_log(world.alpha)


async def test_target_that_stops_answering_while_restoring_is_waited_for_bit_for_bit(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    """beta stops answering (SIGSTOP) while the job, started there, waits at its resume gate
    before confirming that it loaded its checkpoint: the gateway cannot know whether the job
    runs at beta, so it waits past the restore's limit instead of resuming it at alpha, and
    completes once beta answers again and the job confirms."""
    async with agent_world(session_factory, tmp_path, hold_resume=True) as world:
        silenced: list[float] = []
        overran: list[float] = []

        async def silence_target(_migration_id: str, state: str) -> None:
            if state == "restoring" and not silenced:
                world.beta.pause()  # the restore cannot be done: the job waits at its gate
                silenced.append(time.monotonic())
            elif silenced and not overran and time.monotonic() - silenced[0] >= SILENCE_S:
                overran.append(time.monotonic())  # a whole round runs past the limit ...
            elif overran and world.beta.paused:
                world.beta.unpause()  # ... before beta answers and the job confirms
                assert world.gates.resume is not None
                world.gates.resume.touch()

        migration_id, state, seen = await world.migrate(
            during=silence_target, params=SHORT_RESTORE_LIMITS
        )
        assert silenced and overran, f"the fault never struck: {seen}"
        assert state == "completed", (seen, world.migration(migration_id).error)
        completed_at = world.migration(migration_id).completed_at
        restoring_at = world.migration(migration_id).restoring_at
        assert completed_at is not None and restoring_at is not None
        assert (completed_at - restoring_at).total_seconds() >= SILENCE_S
        await world.assert_settled_at(world.beta, reference_model)


class AgentDaemon(SitesDaemon):
    """``dr-gateway run`` against the two agents: static policy (it plans nothing; it only
    advances the migration the test plans), slow WAN links, beta reached via the proxy. Its
    limits outlast any hold: a held step is never aborted for being late."""

    site_values: ClassVar[dict[str, float]] = {
        "gpus_total": 4,
        "it_power_max_kw": 4.0,
        "wan_bandwidth_gbps": WAN_BANDWIDTH_GBPS,
    }
    planner_extra: ClassVar[dict[str, float]] = {}
    timeout_floor_s = HANG_GUARD_S
    tokens: ClassVar[Mapping[str, str]] = TOKENS


def migration_state(sessions: sessionmaker[Session], migration_id: str) -> str:
    return World.migration_in(sessions, migration_id).state


Hold = Literal["reserve", "checkpoint", "transfer", "resume"]
"""What holds the migration for the kill: the reservation call at the proxy, the job's
checkpoint gate at alpha, the checkpoint stream at the proxy, the job's resume gate at beta."""


@dataclass(frozen=True)
class KillCase:
    """The state the daemon is killed in, what holds the migration there, when the test lets
    it go on, and what the restarted daemon's reconciliation finds (the job always ends at
    beta)."""

    label: str
    state: str
    hold: Hold | None
    """None: the daemon is killed first, then the test commits the planned migration."""
    found: str | None
    """The reconciliation's finding in the restarted daemon's log; None: nothing to
    reconcile."""
    release_after_restart: bool = False
    """Let the held step go on once the restarted daemon has reconciled (False: while the
    daemon is dead, and once its effect is seen at the site)."""
    cut: bool = False
    """Cut the held call instead of letting it go on: it never reaches beta."""


KILL_CASES = (
    # The daemon is killed, then the test commits the planned migration: the state a kill
    # leaves between the planner's commit and the first call (SIGSTOP of the daemon to hold it
    # there deadlocks: the stopped daemon may hold row locks the planning needs).
    KillCase("planned", "planned", None, None),
    # The reservation call reaches beta only once the daemon is dead ...
    KillCase(
        "target_reserved-late",
        "target_reserved",
        "reserve",
        "the job runs at the source, its checkpoint not yet started, continuing from "
        "target_reserved",
    ),
    # ... or never: the restarted daemon's repeat makes the reservation.
    KillCase(
        "target_reserved-lost",
        "target_reserved",
        "reserve",
        "the job runs at the source, its checkpoint not yet started, continuing from "
        "target_reserved",
        cut=True,
    ),
    # The checkpoint is written while the daemon is dead ...
    KillCase(
        "checkpointing-written",
        "checkpointing",
        "checkpoint",
        "the source holds the job's checkpoint, continuing from checkpointing",
    ),
    # ... or still being written when the restarted daemon asks.
    KillCase(
        "checkpointing-writing",
        "checkpointing",
        "checkpoint",
        "the source is writing the checkpoint, continuing from checkpointing",
        release_after_restart=True,
    ),
    KillCase(
        "transferring",
        "transferring",
        "transfer",
        "the source has sent or is sending the checkpoint, continuing from transferring",
        release_after_restart=True,
    ),
    KillCase(
        "restoring",
        "restoring",
        "resume",
        "the target has restored or is restoring the job, continuing from restoring",
        release_after_restart=True,
    ),
)


class HeldMigration:
    """Holds one migration of the kill test in its case's state and lets it go on."""

    def __init__(self, world: World, case: KillCase) -> None:
        self.world = world
        self.case = case
        self.stream: StreamHold | None = None
        if case.hold == "reserve":
            self.stream = world.hold(b"POST /v1/reservations")
        elif case.hold == "transfer":
            self.stream = world.hold_transfer()

    def held(self) -> bool:
        """Whether the held step is waiting at its gate now."""
        if self.stream is not None:
            return self.stream.waiting > 0
        if self.case.hold == "checkpoint":
            return "holding the checkpoint" in job_log(self.world.alpha)
        if self.case.hold == "resume":
            return "holding the resume" in job_log(self.world.beta)
        return True

    async def release(self, migration_id: str) -> None:
        """Let the held step go on (or cut the held call); unless the restarted daemon is to
        find it in progress, wait until the site shows its effect."""
        world, case = self.world, self.case
        if self.stream is not None:
            self.stream.release(cut=case.cut)
        for gate in (world.gates.checkpoint, world.gates.resume):
            if gate is not None:
                gate.touch()
        if case.release_after_restart:
            return
        if case.hold == "reserve":
            reserved = 0 if case.cut else 1
            await wait_for_value(
                lambda: world.gpus_reserved(world.beta), reserved, "beta's reservation"
            )
        elif case.hold == "checkpoint":
            await wait_for_value(
                lambda: world.operation_state(world.alpha, migration_id, "checkpoint"),
                "done",
                "the checkpoint",
                HANG_GUARD_S,
            )


@pytest.mark.parametrize("case", KILL_CASES, ids=[case.label for case in KILL_CASES])
async def test_gateway_killed_in_each_state_with_real_agents_completes_on_restart(
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    reference_model: bytes,
    case: KillCase,
) -> None:
    async with agent_world(
        session_factory,
        tmp_path,
        hold_checkpoint=case.hold == "checkpoint",
        hold_resume=case.hold == "resume",
    ) as world:
        daemon = AgentDaemon(
            tmp_path, database_url, {"alpha": world.alpha.url, "beta": world.proxy.url}
        )
        try:
            await daemon.launch("static")
            await daemon.until(
                lambda: "site beta is online" in daemon.log_path.read_text(), "daemon polls"
            )
            held = HeldMigration(world, case)
            if case.hold is None:
                await daemon.kill()
            dispatcher = Dispatcher(session_factory, world.clients, SystemClock())
            migration_id = dispatcher.create(
                MigrationDecision(
                    JOB_ID, "alpha", "beta", "test", expected_s=5.0, expected_kwh=1e-3
                )
            )
            assert migration_id is not None
            # The daemon advances the migration on its polls until the hold stops it in the
            # case's state; it dies there.
            if case.hold is not None:
                await daemon.until(
                    lambda: (
                        migration_state(session_factory, migration_id) == case.state and held.held()
                    ),
                    f"{case.state}, held",
                )
                await daemon.kill()
            sent_at_kill_bytes = world.proxy.sent_bytes
            assert migration_state(session_factory, migration_id) == case.state
            if case.state == "transferring":
                size = await world.checkpoint_size_bytes(migration_id)
                assert sent_at_kill_bytes < size, "killed mid-transfer"
            if not case.release_after_restart:
                await held.release(migration_id)  # the sites go on without the gateway
            await world.monitor.sample()

            await daemon.launch("static")
            if case.release_after_restart:
                await daemon.until(
                    lambda: f"reconciled {migration_id}" in daemon.log_path.read_text(),
                    "the reconciliation",
                )
                await held.release(migration_id)
            await daemon.until(
                lambda: monitor_ended(session_factory, migration_id), "the migration ended"
            )
            await daemon.stop()
        finally:
            await daemon.close()
        log_text = daemon.log_path.read_text()
        reconciled = [
            line for line in log_text.splitlines() if f"reconciled {migration_id}" in line
        ]
        if case.found is None:
            assert not reconciled, log_text[-3000:]
        else:
            assert len(reconciled) == 1 and case.found in reconciled[0], log_text[-3000:]
        assert migration_state(session_factory, migration_id) == "completed", log_text[-3000:]
        await world.assert_settled_at(world.beta, reference_model)


async def test_gateway_records_the_real_checkpoint_size(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    async with agent_world(session_factory, tmp_path) as world:
        migration_id, state, seen = await world.migrate()
        assert state == "completed", seen
        op = await world.get(world.alpha, f"/v1/operations/{migration_id}/checkpoint")
        recorded = world.migration(migration_id)
        assert recorded.checkpoint_sha256 == op["checkpoint"]["sha256"]
        assert recorded.checkpoint_gb == op["checkpoint"]["size_gb"], (
            f"the gateway recorded {recorded.checkpoint_gb} GB for a checkpoint of "
            f"{op['checkpoint']['size_gb']} GB"
        )

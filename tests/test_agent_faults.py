"""Migrations between two real site agents under faults (issue 5, item 4), on SQLite and PostgreSQL.

Two ``dr-gateway site-agent`` processes serve on loopback; the gateway's Dispatcher, on a real
database, migrates the running example training job from alpha to beta while one fault
strikes: SIGKILL of the source or of the target agent mid-transfer (then a restart on the
same port), a transfer stream cut by a proxy, a target that refuses the restore, an agent that
stops answering (SIGSTOP), and SIGKILL of the gateway's daemon in each state a migration can
be held in with real agents (planned, target_reserved, checkpointing, transferring,
restoring). The sites' WAN bandwidth is set so low that a checkpoint of about 280 kB takes
about two seconds to send, so that a fault lands mid-transfer; a restore is held by a job that
takes a while to confirm it loaded its checkpoint (``{resumed_path}``).

Throughout each test :class:`tests.invariants.InvariantMonitor` asks both agents over their API
(every 20 ms and after every round of the Dispatcher) and checks the three invariants of
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

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
from tests.invariants import HttpProbe, InvariantMonitor, SiteView, _MigrationRow
from tests.test_migration_faults import DaemonProcess, monitor_ended
from tests.test_site_agent import (
    EXAMPLE_JOB,
    HANG_GUARD_S,
    JOB_ID,
    ROOT,
    TOKENS,
    agent_data,
    example_command,
    job_table,
    seed_database,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * HANG_GUARD_S)]

STEPS = 700
"""Steps of the example job: a few seconds of training, migrated a fraction of a second in."""
WIDTH = 512
"""Hidden units of the example job: its checkpoint is about 280 kB."""
WAN_BANDWIDTH_GBPS = 0.001
"""125 kB/s, the least the API accepts: the checkpoint takes about two seconds to send."""
ROUND_S = 0.02
"""Pause between two rounds of the Dispatcher [s]."""


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


def training_job(finish_gate: Path, load_delay_s: float = 0.0) -> dict[str, Any]:
    """The example job; it confirms its resumes (``{resumed_path}``) ``load_delay_s`` [s] after
    loading a checkpoint, which holds a restore that long. It holds before its last step until
    ``finish_gate`` exists: it trains on, wherever it is, until the test lets it finish."""
    command = [*example_command(STEPS), "--width", str(WIDTH), "--resumed-file", "{resumed_path}"]
    command += ["--load-delay-s", str(load_delay_s), "--finish-gate", str(finish_gate)]
    return job_table(command=command)


# ---- agents as processes -------------------------------------------------------------------


@dataclass
class AgentProcess:
    """``dr-gateway site-agent`` as an OS process; it keeps its port across restarts."""

    site_id: str
    root: Path
    jobs: list[dict[str, Any]]
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

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
        data = agent_data(self.root, self.site_id, self.jobs) | {"listen_port": self.port}
        config = write_config(self.root / f"{self.site_id}.toml", data)
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
        deadline = time.monotonic() + 60  # a hang guard: a loaded machine starts slowly
        while not (
            match := re.search(r"serving at http://[\d.]+:(\d+)", self.log_path.read_text())
        ):
            assert self.process.returncode is None, f"agent {self.site_id} exited: {self.logs()}"
            assert time.monotonic() < deadline, f"agent {self.site_id} did not serve"
            await asyncio.sleep(0.02)
        self.port = int(match.group(1))

    def pause(self) -> None:
        """SIGSTOP: the agent stops answering (its connections stay open, its jobs run on)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def unpause(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)

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


# ---- a proxy that cuts a stream ------------------------------------------------------------


@dataclass
class CuttingProxy:
    """A TCP proxy on loopback in front of ``upstream_port``. It counts the bytes sent
    upstream, and closes the first connection that has sent more than ``cut_after_bytes``."""

    upstream_port: int
    cut_after_bytes: int | None = None
    sent_bytes: int = 0
    connection_bytes: list[int] = field(default_factory=list)
    """Bytes sent upstream on each connection, in the order they were opened."""
    cuts: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:
            writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        down = asyncio.create_task(self._pump(up_reader, writer, None))
        await self._pump(reader, up_writer, self)
        for w in (writer, up_writer):
            w.transport.abort()
            self._writers.discard(w)
        await down

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counter: CuttingProxy | None,
    ) -> None:
        connection_bytes = 0
        index = len(self.connection_bytes)
        if counter is not None:
            self.connection_bytes.append(0)
        with suppress(ConnectionError, OSError):
            while data := await reader.read(16 * 1024):
                if counter is not None:
                    limit = counter.cut_after_bytes
                    if limit is not None and counter.cuts == 0:
                        room = limit - connection_bytes
                        if room <= len(data):
                            data = data[: max(room, 0)]
                            counter.cuts += 1
                            writer.write(data)
                            counter.sent_bytes += len(data)
                            with suppress(ConnectionError, OSError):
                                await writer.drain()
                            writer.transport.abort()
                            return
                    connection_bytes += len(data)
                    counter.sent_bytes += len(data)
                    counter.connection_bytes[index] = connection_bytes
                writer.write(data)
                await writer.drain()


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
    finish_gate: Path
    """The job holds before its last step until this file exists (:meth:`let_job_finish`)."""

    def let_job_finish(self) -> None:
        self.finish_gate.touch()

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
        deadline = time.monotonic() + timeout_s
        while (now := await self.job_state(agent)) != state:
            assert time.monotonic() < deadline, f"job at {agent.site_id} is {now}, not {state}"
            await asyncio.sleep(0.05)

    async def assert_settled_at(
        self,
        site: AgentProcess,
        reference_model: bytes,
        checkpointed: bool = True,
        min_samples: int = 10,
    ) -> None:
        """The invariants held throughout; the migration ended with nothing reserved; the job
        lives at ``site`` alone, where the gateway believes it is; it finishes there (resumed
        from a checkpoint if ``checkpointed``) with the model of an uninterrupted run."""
        await self.monitor.sample()
        self.monitor.assert_held()
        assert self.monitor.samples >= min_samples, "the monitor sampled during the test"
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
    load_delay_s: float = 0.0,
) -> AsyncIterator[World]:
    """Both agents running, the job training at alpha, the database seeded with slow WAN
    links; the monitor sampling. The gateway tells alpha to send to beta through a
    :class:`CuttingProxy` (``cut_after_bytes``), so the bytes sent can be counted.
    The job holds before its last step until the test calls :meth:`World.let_job_finish`;
    load_delay_s: how long it takes to confirm a resume [s], to hold a restore."""
    finish_gate = root / "finish-gate"
    alpha = AgentProcess("alpha", root, [training_job(finish_gate, load_delay_s)])
    beta = AgentProcess("beta", root, [])
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
                world = World(sessions, alpha, beta, proxy, http, monitor, clients, finish_gate)
                await wait_log(alpha, "started at step 0")
                await asyncio.sleep(0.2)
                yield world
    finally:
        await proxy.close()
        for agent in (alpha, beta):
            await agent.stop()


def job_log(agent: AgentProcess) -> str:
    path = agent.data_dir / "jobs" / JOB_ID / "job.log"
    return path.read_text() if path.exists() else ""


async def wait_log(agent: AgentProcess, text: str, timeout_s: float = HANG_GUARD_S) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in job_log(agent):
        assert time.monotonic() < deadline, f"not in the job log at {agent.site_id}: {text}"
        await asyncio.sleep(0.02)


def mid_transfer(
    world: World, share: float, fault: Callable[[str, int], Awaitable[None]]
) -> Callable[[str, str], Awaitable[None]]:
    """A ``during`` hook: once the proxy has passed ``share`` of the checkpoint on to the
    target (the target writes in batches of megabytes, so its HEAD would not show progress
    on a small checkpoint), run ``fault(migration_id, size_bytes)`` once."""
    done = False

    async def hook(migration_id: str, state: str) -> None:
        nonlocal done
        if done or state != "transferring":
            return
        size = await world.checkpoint_size_bytes(migration_id)
        if world.proxy.sent_bytes >= share * size:
            assert world.proxy.sent_bytes < size, "the transfer ended before the fault"
            done = True
            await fault(migration_id, size)

    return hook


# ---- the cases -----------------------------------------------------------------------------


async def test_source_agent_killed_mid_transfer_and_restarted_completes_bit_for_bit(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    async with agent_world(session_factory, tmp_path) as world:
        struck: list[int] = []

        async def kill_source(_migration_id: str, _size: int) -> None:
            struck.append(world.proxy.sent_bytes)
            await world.alpha.kill()
            await asyncio.sleep(0.3)
            await world.alpha.start()

        _, state, seen = await world.migrate(during=mid_transfer(world, 0.3, kill_source))
        assert struck and world.alpha.starts == 2, f"the fault never struck: {seen}"
        assert state == "completed", (seen, world.alpha.logs())
        assert "transferring" in seen
        await world.assert_settled_at(world.beta, reference_model)


async def test_target_agent_killed_mid_transfer_and_restarted_resumes_bit_for_bit(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    async with agent_world(session_factory, tmp_path) as world:
        connections_before_kill: list[int] = []
        held_after_restart: list[int] = []

        async def kill_target(migration_id: str, _size: int) -> None:
            await world.beta.kill()
            connections_before_kill.append(len(world.proxy.connection_bytes))
            await world.beta.start()
            held_after_restart.append(await world.held_bytes(migration_id))

        migration_id, state, seen = await world.migrate(
            during=mid_transfer(world, 0.4, kill_target)
        )
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
    # The job holds before its last step until the test lets it finish: it is migrated
    # mid-training however loaded the machine.
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
        released: list[Any] = []

        async def release_reservation(migration_id: str, _size: int) -> None:
            url = f"{world.beta.url}/v1/reservations/{migration_id}"
            async with world.http.delete(url, headers=world.headers("beta")) as response:
                released.append((response.status, await response.json()))

        migration_id, state, seen = await world.migrate(
            during=mid_transfer(world, 0.3, release_reservation)
        )
        assert released == [(200, {"migration_id": migration_id, "state": "released"})]
        assert state == "aborted", seen
        assert "transferring" in seen and "completed" not in seen
        error = world.migration(migration_id).error or ""
        assert "restore" in error and "reservation" in error, error
        await world.assert_settled_at(world.alpha, reference_model)
        assert "resumed from" in job_log(world.alpha)


SHORT_LIMITS = DispatchParams(StepTimeouts(margin=3.0, floor_s=1.0))
"""Step limits of about a second for this small checkpoint (the transfer's, about eight)."""
SILENCE_S = 3.0
"""How long an agent stops answering: past every limit of :data:`SHORT_LIMITS` [s]."""


async def test_source_that_stops_answering_at_the_checkpoint_aborts_then_resumes_the_job(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    """alpha stops answering (SIGSTOP) before the gateway asks it for the checkpoint: the
    checkpoint step overruns its limit, the migration aborts and releases beta's reservation;
    once alpha answers again the clean-up resumes the job there. (Whether alpha, once it
    runs again, still acts on the checkpoint call it never answered is up to the kernel's
    buffers: the job then resumes from that checkpoint, else it just trained on.)"""
    async with agent_world(session_factory, tmp_path) as world:
        world.alpha.pause()
        loop = asyncio.get_running_loop()
        loop.call_later(SILENCE_S, world.alpha.unpause)
        migration_id, state, seen = await world.migrate(params=SHORT_LIMITS)
        assert state == "aborted", seen
        migration = world.migration(migration_id)
        assert migration.checkpointing_at is not None and migration.transferring_at is None
        error = migration.error or ""
        assert "checkpointing" in error and "limit" in error, error
        assert world.monitor.unreachable > 0, "the monitor met the silence too"
        # Each sample during the silence waits for its probe's time-out: fewer samples.
        await world.assert_settled_at(
            world.alpha, reference_model, checkpointed=False, min_samples=5
        )
        assert "finished 700 steps" in job_log(world.alpha)


async def test_target_that_stops_answering_while_restoring_is_waited_for_bit_for_bit(
    session_factory: sessionmaker[Session], tmp_path: Path, reference_model: bytes
) -> None:
    """beta stops answering (SIGSTOP) while the job loads its checkpoint there: the gateway
    cannot know whether the job runs at beta, so it waits past every limit instead of resuming
    it at alpha, and completes once beta answers again."""
    async with agent_world(session_factory, tmp_path, load_delay_s=1.0) as world:
        silenced: list[float] = []

        async def silence_target(_migration_id: str, state: str) -> None:
            if state == "restoring" and not silenced:
                world.beta.pause()
                silenced.append(time.monotonic())
                asyncio.get_running_loop().call_later(SILENCE_S, world.beta.unpause)

        migration_id, state, seen = await world.migrate(during=silence_target, params=SHORT_LIMITS)
        assert silenced, f"the fault never struck: {seen}"
        assert state == "completed", (seen, world.migration(migration_id).error)
        completed_at = world.migration(migration_id).completed_at
        restoring_at = world.migration(migration_id).restoring_at
        assert completed_at is not None and restoring_at is not None
        assert (completed_at - restoring_at).total_seconds() >= SILENCE_S - 0.5
        await world.assert_settled_at(world.beta, reference_model)


class AgentDaemon(DaemonProcess):
    """``dr-gateway run`` against the two agents: static policy (it plans nothing; it only
    advances the migration the test plans), slow WAN links, beta reached via the proxy."""

    site_values: ClassVar[dict[str, float]] = {
        "gpus_total": 4,
        "it_power_max_kw": 4.0,
        "wan_bandwidth_gbps": WAN_BANDWIDTH_GBPS,
    }
    planner_extra = ""
    timeout_floor_s = 10.0
    tokens: ClassVar[Mapping[str, str]] = TOKENS


def migration_state(sessions: sessionmaker[Session], migration_id: str) -> str:
    return World.migration_in(sessions, migration_id).state


@dataclass(frozen=True)
class KillCase:
    """The state the daemon is killed in, how the migration is held there, and what the
    restarted daemon's reconciliation may find (each finding with the site the job ends at)."""

    state: str
    found: Mapping[str, str]
    """Each reconciliation finding the restarted daemon may log, with the site the job ends
    at; empty: no reconciliation (nothing was sent to a site)."""
    silent_target: bool = False
    """beta stops answering (SIGSTOP) before the migration starts, until the daemon is dead:
    the reservation call hangs in ``target_reserved``."""
    load_delay_s: float = 0.0
    """The job takes this long at beta to confirm its resume: the restore is held [s]."""


KILL_CASES = (
    # Planned: the daemon is killed, then the test commits the planned migration: the state a
    # kill leaves between the planner's commit and the first call (SIGSTOP of the daemon to
    # hold it there deadlocks: the stopped daemon may hold row locks the planning needs).
    KillCase("planned", {}),
    KillCase(
        "target_reserved",
        {
            # beta took the reservation call from its buffers when it ran again ...
            "the job runs at the source, its checkpoint not yet started, continuing from "
            "target_reserved": "beta",
            # ... or never saw it: nothing happened, the job runs on at alpha.
            "abort, the target holds no reservation for the job": "alpha",
        },
        silent_target=True,
    ),
    KillCase(
        "checkpointing",
        {
            # The kill lands after the stored state and before, during or after the source's
            # checkpoint: the store is written before the call is sent, so each is a state
            # the kill can leave, and each continues to beta.
            "the job runs at the source, its checkpoint not yet started, continuing from "
            "checkpointing": "beta",
            "the source is writing the checkpoint, continuing from checkpointing": "beta",
            "the source holds the job's checkpoint, continuing from checkpointing": "beta",
        },
    ),
    KillCase(
        "transferring",
        {
            "the source has sent or is sending the checkpoint, continuing from transferring": (
                "beta"
            )
        },
    ),
    KillCase(
        "restoring",
        {
            "the target has restored or is restoring the job, continuing from restoring": "beta",
            # The kill landed after the stored state, before the restore call reached beta:
            # the migration continues from the stored state, the later of the two.
            "the source has sent or is sending the checkpoint, continuing from restoring": "beta",
        },
        load_delay_s=1.5,
    ),
)


@pytest.mark.parametrize("case", KILL_CASES, ids=[case.state for case in KILL_CASES])
async def test_gateway_killed_in_each_state_with_real_agents_completes_on_restart(
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    reference_model: bytes,
    case: KillCase,
) -> None:
    # The job holds before its last step until the test lets it finish: it outlives the
    # daemon's start, its kill and its restart however loaded the machine.
    async with agent_world(session_factory, tmp_path, load_delay_s=case.load_delay_s) as world:
        daemon = AgentDaemon(
            tmp_path, database_url, {"alpha": world.alpha.url, "beta": world.proxy.url}
        )
        try:
            await daemon.launch("static")
            await daemon.until(
                lambda: "site beta is online" in daemon.log_path.read_text(), "daemon polls"
            )
            assert await world.job_state(world.alpha) == "running", "still training"
            if case.silent_target:
                world.beta.pause()
            if case.state == "planned":
                await daemon.kill()
            dispatcher = Dispatcher(session_factory, world.clients, SystemClock())
            migration_id = dispatcher.create(
                MigrationDecision(
                    JOB_ID, "alpha", "beta", "test", expected_s=5.0, expected_kwh=1e-3
                )
            )
            assert migration_id is not None
            # The daemon advances the migration on its polls; it dies in the chosen state.
            if case.state != "planned":
                await daemon.until(
                    lambda: migration_state(session_factory, migration_id) == case.state,
                    case.state,
                )
                await daemon.kill()
            sent_at_kill_bytes = world.proxy.sent_bytes
            assert migration_state(session_factory, migration_id) == case.state
            if case.state == "transferring":
                size = await world.checkpoint_size_bytes(migration_id)
                assert sent_at_kill_bytes < size, "killed mid-transfer"
            world.beta.unpause()
            await asyncio.sleep(0.3)  # the sites go on without the gateway meanwhile
            await world.monitor.sample()

            await daemon.launch("static")
            await daemon.until(
                lambda: monitor_ended(session_factory, migration_id), "the migration ended"
            )
            await daemon.stop()
        finally:
            world.beta.unpause()
            await daemon.close()
        log_text = daemon.log_path.read_text()
        reconciled = [
            line for line in log_text.splitlines() if f"reconciled {migration_id}" in line
        ]
        assert len(reconciled) == (1 if case.found else 0), log_text[-3000:]
        found = [finding for finding in case.found if finding in "".join(reconciled)]
        assert len(found) == (1 if case.found else 0), log_text[-3000:]
        ends_at = world.alpha if found and case.found[found[0]] == "alpha" else world.beta
        outcome = "completed" if ends_at is world.beta else "aborted"
        assert migration_state(session_factory, migration_id) == outcome, log_text[-3000:]
        await world.assert_settled_at(ends_at, reference_model, checkpointed=ends_at is world.beta)


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

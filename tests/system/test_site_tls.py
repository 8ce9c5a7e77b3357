"""TLS and mutual TLS on the site controller API, with real site agents on loopback.

A throwaway PKI is built at test time (``tests/support/pki.py``, EC P-256): the fleet's CA signs
each agent's certificate (server and client: an agent presents it when it sends a manifest and a
checkpoint to another agent) and the gateway's client certificate; another CA signs a stranger's.
Two agents serve HTTPS that requires a client certificate from the fleet's CA; the gateway's
Dispatcher migrates the example job between them through ``SiteControllerClient``s built as the
daemon builds them, and the final model equals an uninterrupted run's, bit for bit. Clients without
a certificate, or with one from another CA, are refused at the handshake and change nothing; a good
certificate with a wrong bearer token still gets ``401``. Ports are OS-assigned.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy.orm import Session, sessionmaker

from gateway.agent.config import AgentSettings, load_agent_settings
from gateway.clock import ManualClock, SystemClock
from gateway.daemon.gateway import Gateway
from gateway.errors import ConfigError, SiteControllerError
from gateway.migration.dispatch import Dispatcher
from gateway.planner.snapshot import MigrationDecision
from gateway.settings import parse_settings
from gateway.sites.client import SiteControllerClient
from gateway.sites.tls import client_context, optional_client_context
from models import FINAL_STATES, Migration
from simulators.hang_guard import HANG_GUARD_S
from tests.support.migrating import cleaned_up
from tests.support.pki import (
    Issuer,
    ca_certificate,
    leaf_certificate,
    new_key,
    write_cert,
    write_key,
)
from tests.support.settings_files import write_toml
from tests.support.waiting import wait_for
from tests.system.test_site_agent import (
    HOLD_AT_STEP,
    JOB_ID,
    SITE,
    TOKENS,
    Api,
    RunningAgent,
    agent_data,
    agent_settings,
    checkpoint_step,
    gated_job,
    held_at_gate,
    idle_job,
    live_processes,
    running_agents,
    seed_database,
    step_gate,
)
from tests.system.test_site_agent import reference_model as reference_model  # the fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * HANG_GUARD_S)]

BOTH = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@dataclass(frozen=True)
class FleetPki:
    """PEM files: ``ca`` signs the fleet's certificates, ``other_ca`` the stranger's."""

    ca: Path
    other_ca: Path
    directory: Path

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"


def _leaf(directory: Path, name: str, issuer: Issuer) -> None:
    key = new_key("ec")
    write_key(directory / f"{name}.key", key)
    cert = leaf_certificate(name, key, issuer, BOTH, loopback_names=True)
    write_cert(directory / f"{name}.pem", cert)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FleetPki:
    directory = tmp_path_factory.mktemp("site-pki")
    ca_key, other_key = new_key("ec"), new_key("ec")
    ca, other = ca_certificate("fleet CA", ca_key), ca_certificate("another CA", other_key)
    for name in ("alpha", "beta", "gateway"):
        _leaf(directory, name, (ca, ca_key))
    _leaf(directory, "stranger", (other, other_key))
    return FleetPki(
        ca=write_cert(directory / "ca.pem", ca),
        other_ca=write_cert(directory / "other-ca.pem", other),
        directory=directory,
    )


def agent_tls(pki: FleetPki, site_id: str, **changes: Any) -> dict[str, Any]:
    """An agent's ``[tls]``: its certificate, the fleet's CA, mutual TLS by default."""
    return {
        "cert_path": str(pki.cert(site_id)),
        "key_path": str(pki.key(site_id)),
        "ca_path": str(pki.ca),
    } | changes


def tls_agent(
    root: Path, pki: FleetPki, site_id: str, jobs: Sequence[dict[str, Any]] = (), **tls: Any
) -> AgentSettings:
    return agent_settings(root, site_id, jobs, tls=agent_tls(pki, site_id, **tls))


def gateway_context(pki: FleetPki) -> ssl.SSLContext:
    """The gateway's context for the fleet, built as the daemon builds it from ``[[site]]``."""
    context = optional_client_context(pki.ca, pki.cert("gateway"), pki.key("gateway"))
    assert context is not None
    return context


@asynccontextmanager
async def gateway_session(context: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        yield http


# ---- a migration over mutual TLS ---------------------------------------------------------------


async def drive_over_tls(
    sessions: sessionmaker[Session],
    agents: Sequence[RunningAgent],
    context: ssl.SSLContext,
    timeout_s: float = HANG_GUARD_S,
) -> tuple[str, list[str], float]:
    """Migrate the job from alpha to beta with the Dispatcher, its clients presenting the
    gateway's certificate, until the migration ended and was cleaned up; (final state, states
    seen, wall time [s]). Checks invariant 1 after every step."""
    async with aiohttp.ClientSession() as http:
        clients = {
            running.site_id: SiteControllerClient(
                running.site_id, running.url, TOKENS[running.site_id], http, ssl_context=context
            )
            for running in agents
        }
        dispatcher = Dispatcher(sessions, clients, SystemClock())
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
            assert len(live_processes(agents)) <= 1, "the job ran at two sites at once"
            if state in FINAL_STATES and cleaned_up(sessions, migration_id):
                return state, seen, time.monotonic() - started
            assert time.monotonic() - started < timeout_s, f"stuck in {seen}"
            await asyncio.sleep(0.01)


async def test_migration_between_two_agents_over_mutual_tls_is_bit_for_bit(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    pki: FleetPki,
    reference_model: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.agent.server")
    async with running_agents(
        tls_agent(tmp_path, pki, "alpha", [gated_job(tmp_path)]), tls_agent(tmp_path, pki, "beta")
    ) as agents:
        alpha, beta = agents
        assert alpha.url.startswith("https://127.0.0.1:") and beta.url.startswith("https://")
        assert f"serving at {alpha.url} (mutual TLS)" in caplog.text
        seed_database(session_factory, {"alpha": alpha.url, "beta": beta.url})
        await held_at_gate(alpha)

        state, seen, _ = await drive_over_tls(session_factory, agents, gateway_context(pki))
        assert state == "completed", seen
        assert "transferring" in seen and "restoring" in seen
        with session_factory() as session:
            recorded_sha256 = session.query(Migration).one().checkpoint_sha256
        [restored] = beta.agent.job_paths(JOB_ID).checkpoints_dir.iterdir()
        assert checkpoint_step(restored) == HOLD_AT_STEP, "moved mid-training"
        assert beta.agent.status().jobs[0].job_id == JOB_ID
        async with gateway_session(gateway_context(pki)) as http:
            api = Api(http, alpha.url, TOKENS["alpha"])
            with session_factory() as session:
                migration_id = session.query(Migration).one().id
            status, transfer = await api.call("GET", f"/v1/operations/{migration_id}/transfer")
        # The source agent sent the manifest and the checkpoint to beta's https:// URL.
        assert status == 200 and transfer["state"] == "done", transfer
        assert transfer["checkpoint"]["sha256"] == recorded_sha256

        step_gate(tmp_path).touch()
        await wait_for(
            lambda: beta.agent.job_state(JOB_ID) == "finished", "job finished", HANG_GUARD_S
        )
        assert beta.model_bytes() == reference_model


# ---- refusals ----------------------------------------------------------------------------------


async def test_a_client_without_a_certificate_is_refused_at_the_handshake(
    tmp_path: Path, pki: FleetPki
) -> None:
    async with running_agents(tls_agent(tmp_path, pki, "alpha")) as [alpha]:
        host, port = alpha.url.removeprefix("https://").split(":")
        # TLS 1.2: the server ends the handshake itself (an alert or a reset).
        tls12 = client_context(pki.ca)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await asyncio.open_connection(host, int(port), ssl=tls12)

        # TLS 1.3: the refusal arrives after the client's last handshake message; a request
        # with the right token gets no answer and reaches nothing.
        async with gateway_session(client_context(pki.ca)) as http:
            api = Api(http, alpha.url, TOKENS["alpha"])
            with pytest.raises(aiohttp.ClientError):
                await api.call("POST", "/v1/jobs", {"job_id": JOB_ID, **_job_fields(idle_job())})
            client = SiteControllerClient("alpha", alpha.url, TOKENS["alpha"], http)
            with pytest.raises(SiteControllerError) as error:
                await client.status()
            assert error.value.transient
        assert alpha.agent.job_state(JOB_ID) is None, "the request reached the API"


def _job_fields(job: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/jobs`` fields of an agent's ``[[job]]`` table."""
    return {
        "gpus": job["gpus"],
        "power_kw": job["power_kw"],
        "checkpoint_gb": job["checkpoint_gb"],
        "work_remaining_gpu_h": job["work_gpu_h"],
        "migratable": job["migratable"],
        "flex_tier": job["flex_tier"],
        "command": job["command"],
    }


async def test_a_client_certificate_from_another_ca_is_refused(
    tmp_path: Path, pki: FleetPki
) -> None:
    async with running_agents(tls_agent(tmp_path, pki, "alpha")) as [alpha]:
        stranger = client_context(pki.ca, pki.cert("stranger"), pki.key("stranger"))
        async with gateway_session(stranger) as http:
            client = SiteControllerClient("alpha", alpha.url, TOKENS["alpha"], http)
            with pytest.raises(SiteControllerError):
                await client.reserve("m-stranger", JOB_ID, 1, 0.5)
        assert alpha.agent.status().gpus_reserved == 0, "the request reached the API"
        assert alpha.agent.status().gpus_free == SITE.gpus_total


async def test_a_good_certificate_with_a_wrong_token_gets_401_json(
    tmp_path: Path, pki: FleetPki
) -> None:
    async with (
        running_agents(tls_agent(tmp_path, pki, "alpha")) as [alpha],
        gateway_session(gateway_context(pki)) as http,
    ):
        api = Api(http, alpha.url, TOKENS["alpha"])
        assert (await api.call("GET", "/v1/status"))[0] == 200
        status, body = await api.call("GET", "/v1/status", token="not-the-alpha-token")
        assert status == 401 and body["error"] == "unauthorized"
        client = SiteControllerClient("alpha", alpha.url, "not-the-alpha-token", http)
        with pytest.raises(SiteControllerError) as error:
            await client.status()
        assert error.value.status == 401 and not error.value.transient


async def test_a_controller_certificate_from_another_ca_is_a_configuration_error(
    tmp_path: Path, pki: FleetPki
) -> None:
    """The gateway trusts only ``controller_ca_path``: a controller whose certificate another
    CA signed fails for good (not transient), naming the key to check."""
    async with running_agents(tls_agent(tmp_path, pki, "alpha")) as [alpha]:
        context = client_context(pki.other_ca, pki.cert("gateway"), pki.key("gateway"))
        async with aiohttp.ClientSession() as http:
            client = SiteControllerClient(
                "alpha", alpha.url, TOKENS["alpha"], http, ssl_context=context
            )
            with pytest.raises(SiteControllerError) as error:
                await client.status()
        assert not error.value.transient
        assert "does not verify" in str(error.value) and "controller_ca_path" in str(error.value)
        assert TOKENS["alpha"] not in str(error.value)


async def test_without_require_client_cert_tls_serves_clients_without_a_certificate(
    tmp_path: Path, pki: FleetPki
) -> None:
    settings = tls_agent(tmp_path, pki, "alpha", require_client_cert=False)
    assert settings.tls is not None and not settings.tls.mutual
    async with running_agents(settings) as [alpha]:
        async with gateway_session(client_context(pki.ca)) as http:
            status, body = await Api(http, alpha.url, TOKENS["alpha"]).call("GET", "/v1/status")
        assert status == 200 and body["site_id"] == "alpha"


# ---- the daemon ------------------------------------------------------------------------------


async def test_the_daemon_polls_a_mutual_tls_agent_with_its_site_certificate(
    session_factory: sessionmaker[Session], tmp_path: Path, pki: FleetPki
) -> None:
    async with running_agents(tls_agent(tmp_path, pki, "alpha", [idle_job()])) as [alpha]:
        site = gateway_site(pki, alpha.url)
        settings = parse_settings({"site": [site]}, "test")
        gateway = Gateway(settings, ManualClock(datetime.now(UTC)), session_factory)
        try:
            await gateway.start(schedule=False, connect_vens=False)
            assert gateway.statuses["alpha"].jobs[0].job_id == JOB_ID
        finally:
            await gateway.stop()

        # The same site without its client certificate: the agent refuses the daemon.
        del site["controller_cert_path"], site["controller_key_path"]
        settings = parse_settings({"site": [site]}, "test")
        gateway = Gateway(settings, ManualClock(datetime.now(UTC)), session_factory)
        try:
            await gateway.start(schedule=False, connect_vens=False)
            assert "alpha" not in gateway.statuses
        finally:
            await gateway.stop()


def gateway_site(pki: FleetPki, url: str, **changes: Any) -> dict[str, Any]:
    """A ``[[site]]`` reaching the alpha agent at ``url`` over mutual TLS."""
    return {
        "id": "alpha",
        "gpus_total": SITE.gpus_total,
        "it_power_max_kw": SITE.it_power_max_kw,
        "wan_bandwidth_gbps": SITE.wan_bandwidth_gbps,
        "controller_url": url,
        "controller_token": TOKENS["alpha"],
        "controller_ca_path": str(pki.ca),
        "controller_cert_path": str(pki.cert("gateway")),
        "controller_key_path": str(pki.key("gateway")),
    } | changes


# ---- configuration errors ----------------------------------------------------------------------


def write_agent_config(tmp_path: Path, tls: dict[str, Any]) -> Path:
    """An agent's TOML file with the ``[tls]`` table ``tls``."""
    path = write_toml(tmp_path / "agent.toml", agent_data(tmp_path, "alpha"))
    lines = ["[tls]"] + [f"{key} = {_toml(value)}" for key, value in tls.items()]
    with path.open("a") as file:
        file.write("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(str(value))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cert_path": "missing.pem"}, "tls.cert_path: no such file (got '{tmp}/missing.pem')"),
        ({"ca_path": "missing.pem"}, "tls.ca_path: no such file (got '{tmp}/missing.pem')"),
        ({"key_path": None}, "tls.key_path: required key is missing"),
        ({"key_path": "beta.key"}, "tls.key_path: {pki}/beta.key is not the key of the"),
        ({"cert_path": "alpha.key"}, "tls.cert_path: {pki}/alpha.key holds no PEM certificate"),
        ({"ca_path": None, "require_client_cert": True}, "tls.require_client_cert: needs ca_path"),
        ({"tls_version": "1.3"}, "tls.tls_version: unknown key"),
    ],
    ids=[
        "missing cert",
        "missing ca",
        "cert without key",
        "other key",
        "not PEM",
        "mtls",
        "unknown",
    ],
)
def test_agent_tls_config_errors_name_the_file_and_the_key(
    tmp_path: Path, pki: FleetPki, change: dict[str, Any], message: str
) -> None:
    tls = agent_tls(pki, "alpha")
    for key, value in change.items():
        if value is None:
            del tls[key]
        elif isinstance(value, str) and value.endswith((".pem", ".key")):
            base = tmp_path if value.startswith("missing") else pki.directory
            tls[key] = str(base / value)
        else:
            tls[key] = value
    path = write_agent_config(tmp_path, tls)
    with pytest.raises(ConfigError) as error:
        load_agent_settings(path)
    expected = message.format(tmp=tmp_path, pki=pki.directory)
    assert str(error.value).startswith(f"{path}: tls."), str(error.value)
    assert expected in str(error.value)


def test_an_encrypted_agent_key_is_refused_at_validation(tmp_path: Path, pki: FleetPki) -> None:
    key = new_key("ec")
    ca_key = new_key("ec")
    issuer = (ca_certificate("ca", ca_key), ca_key)
    cert = write_cert(tmp_path / "c.pem", leaf_certificate("c", key, issuer, BOTH))
    encrypted = write_key(tmp_path / "c.key", key, "a passphrase")
    path = write_agent_config(tmp_path, {"cert_path": cert, "key_path": encrypted})
    with pytest.raises(ConfigError, match=r"tls\.key_path: .*c\.key is encrypted"):
        load_agent_settings(path)


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"controller_key_path": None}, "controller_key_path", "needs controller_cert_path and"),
        ({"controller_url": "http://127.0.0.1:1"}, "controller_url", "http:// carries no TLS"),
        ({"controller_ca_path": "{tmp}/none.pem"}, "controller_ca_path", "no such file"),
        ({"controller_key_path": "{pki}/beta.key"}, "controller_key_path", "is not the key of"),
    ],
    ids=["cert without key", "plain http", "missing ca", "other key"],
)
def test_site_tls_config_errors_name_the_site_and_the_key(
    tmp_path: Path, pki: FleetPki, change: dict[str, Any], key: str, message: str
) -> None:
    site = gateway_site(pki, "https://127.0.0.1:1")
    for name, value in change.items():
        if value is None:
            del site[name]
        else:
            site[name] = value.format(tmp=tmp_path, pki=pki.directory)
    with pytest.raises(ConfigError) as error:
        parse_settings({"site": [site]}, "gateway.toml")
    assert str(error.value).startswith(f"gateway.toml: site[0].{key}: "), str(error.value)
    assert message in str(error.value)


async def test_an_https_site_without_tls_keys_uses_the_system_trust_store(
    tmp_path: Path, pki: FleetPki
) -> None:
    """No controller_ca_path: the controller's certificate must chain to a CA of the system's
    trust store, where the fleet's throwaway CA is not."""
    settings = tls_agent(tmp_path, pki, "alpha", require_client_cert=False)
    async with running_agents(settings) as [alpha]:
        site = gateway_site(pki, alpha.url)
        for key in ("controller_ca_path", "controller_cert_path", "controller_key_path"):
            del site[key]
        cfg = parse_settings({"site": [site]}, "test").site[0]
        context = optional_client_context(
            cfg.controller_ca_path, cfg.controller_cert_path, cfg.controller_key_path
        )
        assert context is None
        async with aiohttp.ClientSession() as http:
            client = SiteControllerClient("alpha", alpha.url, TOKENS["alpha"], http)
            with pytest.raises(SiteControllerError) as error:
                await client.status()
        assert not error.value.transient and "does not verify" in str(error.value)

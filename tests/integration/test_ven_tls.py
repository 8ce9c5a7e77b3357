"""Mutual TLS with XML signatures between the VEN and a simulated VTN on loopback.

A throwaway PKI is built at test time with ``cryptography`` (a CA, a VTN server certificate
for 127.0.0.1 and localhost, a VEN client certificate), once per key type: EC P-256 and
RSA-2048. The VTN serves HTTPS that requires the VEN's client certificate, signs its messages
and checks the VEN's; the VEN checks the VTN's certificate against the CA and its signatures
against ``vtn_fingerprint``. Ports are OS-assigned.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from openleadr import utils as openleadr_utils
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock
from gateway.errors import ConfigError
from gateway.settings import parse_settings
from gateway.settings_vtn import VtnSettings
from gateway.ven.client import VenConnection
from simulators.vtn import SimulatedVtn
from simulators.vtn_tls import VtnTls
from tests.support.pki import (
    KeyType,
    ca_certificate,
    leaf_certificate,
    new_key,
    write_cert,
    write_key,
)
from tests.support.ven import SITES, VTN_ID, Planner, answers, event_spec, versions
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

VEN_NAME = "dr-gateway-tls"
PASSPHRASE = "correct horse battery staple 7f3a"
PASSPHRASE_ENV = "DR_GATEWAY_TEST_VEN_KEY_PASSPHRASE"

# -- a throwaway PKI ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Paths of one throwaway PKI; ``other_ca`` signed nothing here."""

    ca: Path
    other_ca: Path
    vtn_cert: Path
    vtn_key: Path
    ven_cert: Path
    ven_key: Path
    ven_key_encrypted: Path
    """The VEN key encrypted with PASSPHRASE."""

    @property
    def ven_fingerprint(self) -> str:
        return str(openleadr_utils.certificate_fingerprint(self.ven_cert.read_bytes()))

    @property
    def vtn_fingerprint(self) -> str:
        return str(openleadr_utils.certificate_fingerprint(self.vtn_cert.read_bytes()))


def build_pki(directory: Path, key_type: KeyType) -> Pki:
    ca_key = new_key(key_type)
    ca = ca_certificate("dr-gateway test CA", ca_key)
    other_key = new_key(key_type)
    other = ca_certificate("some other CA", other_key)
    vtn_key = new_key(key_type)
    vtn = leaf_certificate(
        "127.0.0.1",
        vtn_key,
        (ca, ca_key),
        [ExtendedKeyUsageOID.SERVER_AUTH],
        loopback_names=True,
    )
    ven_key = new_key(key_type)
    ven = leaf_certificate(VEN_NAME, ven_key, (ca, ca_key), [ExtendedKeyUsageOID.CLIENT_AUTH])
    return Pki(
        ca=write_cert(directory / "ca.pem", ca),
        other_ca=write_cert(directory / "other-ca.pem", other),
        vtn_cert=write_cert(directory / "vtn.pem", vtn),
        vtn_key=write_key(directory / "vtn.key", vtn_key),
        ven_cert=write_cert(directory / "ven.pem", ven),
        ven_key=write_key(directory / "ven.key", ven_key),
        ven_key_encrypted=write_key(directory / "ven-encrypted.key", ven_key, PASSPHRASE),
    )


@pytest.fixture(scope="module", params=["ec", "rsa"], ids=["EC P-256", "RSA-2048"])
def pki(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pki:
    key_type: KeyType = request.param
    return build_pki(tmp_path_factory.mktemp(f"pki-{key_type}"), key_type)


@pytest.fixture(scope="module")
def ec_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One PKI for the tests that do not depend on the key type."""
    return build_pki(tmp_path_factory.mktemp("pki-single"), "ec")


# -- the rig -------------------------------------------------------------------------------------


def vtn_tls(pki: Pki) -> VtnTls:
    return VtnTls(
        cert_path=pki.vtn_cert,
        key_path=pki.vtn_key,
        ca_path=pki.ca,
        ven_fingerprints={VEN_NAME: pki.ven_fingerprint},
    )


def ven_settings(pki: Pki, url: str, **changes: Any) -> VtnSettings:
    fields: dict[str, Any] = {
        "id": VTN_ID,
        "url": url,
        "ven_name": VEN_NAME,
        "cert_path": pki.ven_cert,
        "key_path": pki.ven_key,
        "ca_path": pki.ca,
        "vtn_fingerprint": pki.vtn_fingerprint,
    }
    fields.update(changes)
    return VtnSettings(**fields)


def connection_to(
    settings: VtnSettings,
    clock: ManualClock,
    session_factory: sessionmaker[Session] | None = None,
    planner: Planner | None = None,
) -> VenConnection:
    return VenConnection(
        settings,
        SITES,
        clock,
        session_factory or sessionmaker(),
        planner or Planner(),
        {"site-a": 40.0}.get,
        report_interval_s=1,
    )


@asynccontextmanager
async def tls_vtn(clock: ManualClock, pki: Pki) -> AsyncIterator[SimulatedVtn]:
    vtn = SimulatedVtn(clock, poll_interval_s=1.0, tls=vtn_tls(pki))
    await vtn.start()
    try:
        yield vtn
    finally:
        await vtn.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC))


async def signed_session(
    clock: ManualClock,
    pki: Pki,
    session_factory: sessionmaker[Session],
    **settings: Any,
) -> tuple[SimulatedVtn, VenConnection, Planner]:
    """Register over mutual TLS, issue one event, wait for its optIn; the VTN is stopped."""
    planner = Planner()
    async with tls_vtn(clock, pki) as vtn:
        assert vtn.url.startswith("https://127.0.0.1:")
        connection = connection_to(
            ven_settings(pki, vtn.url, **settings), clock, session_factory, planner
        )
        try:
            await connection.start()
            assert connection.available
            ven_id = connection.ven_id
            assert ven_id is not None and ven_id in vtn.registrations
            vtn.add_event_now(event_spec(clock), event_id="EVT-TLS")
            await wait_for(lambda: vtn.opts_for("EVT-TLS"), "the opt over mutual TLS")
        finally:
            await connection.stop()
    return vtn, connection, planner


# -- (a) an end-to-end session ----------------------------------------------------------------


async def test_signed_mutual_tls_session_registers_stores_the_event_and_opts_in(
    clock: ManualClock, pki: Pki, session_factory: sessionmaker[Session]
) -> None:
    vtn, _, planner = await signed_session(clock, pki, session_factory)

    assert [o.opt_type for o in vtn.opts_for("EVT-TLS")] == ["optIn"]
    assert [e.event_id for e in planner.calls] == ["EVT-TLS"]
    (stored,) = versions(session_factory, "EVT-TLS")
    assert (stored.vtn_id, stored.modification_number) == (VTN_ID, 0)
    assert answers(session_factory, "EVT-TLS") == [(0, "optIn", "enough flexible load")]


async def test_the_tls_vtn_refuses_a_connection_without_a_client_certificate(
    clock: ManualClock, ec_pki: Pki
) -> None:
    """HTTPS with client-certificate verification really is on (openadr-notes pitfall 11)."""
    trusting_the_ca = ssl.create_default_context(cafile=str(ec_pki.ca))
    async with tls_vtn(clock, ec_pki) as vtn, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(
                f"{vtn.url}/EiRegisterParty",
                data="<oadrPayload/>",
                headers={"content-type": "application/xml"},
                ssl=trusting_the_ca,
            ) as response:
                await response.read()
        assert vtn.registrations == {}


# -- (b) a missing CA file -------------------------------------------------------------------


def toml_vtn(pki: Pki, **changes: Any) -> dict[str, Any]:
    vtn: dict[str, Any] = {
        "id": VTN_ID,
        "url": "https://127.0.0.1:8443/OpenADR2/Simple/2.0b",
        "ven_name": VEN_NAME,
        "cert_path": str(pki.ven_cert),
        "key_path": str(pki.ven_key),
        "ca_path": str(pki.ca),
        "vtn_fingerprint": pki.vtn_fingerprint,
    }
    vtn.update(changes)
    return {"vtn": [{k: v for k, v in vtn.items() if v is not None}]}


def test_a_missing_ca_file_is_refused_at_validation_naming_ca_path(
    ec_pki: Pki, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(ConfigError) as exc:
        parse_settings(toml_vtn(ec_pki, ca_path=str(missing)), "gateway.toml")
    assert str(exc.value).startswith("gateway.toml: vtn[0].ca_path: no such file"), exc.value
    assert str(missing) in str(exc.value)


async def test_a_ca_file_gone_after_validation_stops_the_connection_at_start(
    clock: ManualClock, ec_pki: Pki, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(ec_pki.ca.read_bytes())
    connection = connection_to(
        ven_settings(ec_pki, "https://127.0.0.1:9/OpenADR2/Simple/2.0b", ca_path=ca), clock
    )
    ca.unlink()
    with pytest.raises(ConfigError, match=rf"VTN {VTN_ID}: ca_path {ca}: cannot read"):
        await connection.start()
    assert not connection.available


async def test_a_vtn_certificate_from_another_ca_stops_the_connection_naming_ca_path(
    clock: ManualClock, ec_pki: Pki
) -> None:
    async with tls_vtn(clock, ec_pki) as vtn:
        connection = connection_to(ven_settings(ec_pki, vtn.url, ca_path=ec_pki.other_ca), clock)
        with pytest.raises(ConfigError, match=rf"VTN {VTN_ID} .* does not verify against ca_path"):
            await connection.start()
        assert vtn.registrations == {}


async def test_a_vtn_serving_plain_http_at_an_https_url_stops_the_connection(
    clock: ManualClock, ec_pki: Pki
) -> None:
    """openadr-notes pitfall 11: a VTN missing a TLS file silently serves plain HTTP."""
    vtn = SimulatedVtn(clock)
    await vtn.start()
    try:
        https_url = vtn.url.replace("http://", "https://")
        connection = connection_to(ven_settings(ec_pki, https_url), clock)
        with pytest.raises(ConfigError, match=rf"VTN {VTN_ID} at .* does not speak TLS"):
            await connection.start()
    finally:
        await vtn.stop()


# -- (c) a wrong VTN fingerprint --------------------------------------------------------------


async def test_a_wrong_vtn_fingerprint_stops_the_connection_promptly_and_for_good(
    clock: ManualClock, ec_pki: Pki
) -> None:
    wrong = ec_pki.ven_fingerprint  # a well-formed fingerprint of another certificate
    async with tls_vtn(clock, ec_pki) as vtn:
        connection = connection_to(ven_settings(ec_pki, vtn.url, vtn_fingerprint=wrong), clock)
        started = time.monotonic()
        with pytest.raises(ConfigError) as exc:
            await connection.start()
        assert time.monotonic() - started < 10.0
        message = str(exc.value)
        assert message.startswith(f"VTN {VTN_ID} at {vtn.url}: "), message
        assert f"fingerprint is {ec_pki.vtn_fingerprint}, not the configured" in message
        assert "vtn_fingerprint" in message
        assert not connection.available

        # Final: not retried against the VTN. With the VTN gone, a retry would meet a refused
        # connection; the connection gives the same error without asking again.
        await vtn.stop()
        with pytest.raises(ConfigError, match="vtn_fingerprint") as again:
            await connection.start()
        assert str(again.value) == message


# -- (d) no key material in logs or on stdout -------------------------------------------------


async def test_no_key_material_reaches_logs_or_stdout_during_a_session(
    clock: ManualClock,
    ec_pki: Pki,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, PASSPHRASE)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="openleadr")  # openleadr pins its logger to INFO

    await signed_session(
        clock,
        ec_pki,
        session_factory,
        key_path=ec_pki.ven_key_encrypted,
        key_passphrase_env=PASSPHRASE_ENV,
    )

    out, err = capfd.readouterr()
    logged = []
    for record in caplog.records:
        logged.append(record.getMessage())
        if record.exc_info:
            logged.append(logging.Formatter().formatException(record.exc_info))
    everything = "\n".join([out, err, *logged])
    assert any("oadrCreatedEvent" in line for line in logged), "debug logging was captured"
    key_lines = [
        line
        for path in (ec_pki.ven_key, ec_pki.ven_key_encrypted, ec_pki.vtn_key)
        for line in path.read_text().splitlines()
        if "-----" not in line
    ]
    assert "PRIVATE KEY" not in everything
    assert PASSPHRASE not in everything
    assert not [line for line in key_lines if line in everything]
    assert "Fingerprint" not in out, "openleadr's fingerprint banner is off"


async def test_an_encrypted_key_without_its_passphrase_stops_the_connection(
    clock: ManualClock, ec_pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    url = "https://127.0.0.1:9/OpenADR2/Simple/2.0b"
    connection = connection_to(ven_settings(ec_pki, url, key_path=ec_pki.ven_key_encrypted), clock)
    with pytest.raises(ConfigError, match=r"key_path .*encrypted.*key_passphrase_env"):
        await connection.start()
    unset = connection_to(
        ven_settings(
            ec_pki, url, key_path=ec_pki.ven_key_encrypted, key_passphrase_env=PASSPHRASE_ENV
        ),
        clock,
    )
    with pytest.raises(ConfigError, match=f"{PASSPHRASE_ENV}, which is not set"):
        await unset.start()
    monkeypatch.setenv(PASSPHRASE_ENV, "not the passphrase")
    wrong = connection_to(
        ven_settings(
            ec_pki, url, key_path=ec_pki.ven_key_encrypted, key_passphrase_env=PASSPHRASE_ENV
        ),
        clock,
    )
    with pytest.raises(ConfigError) as exc:
        await wrong.start()
    assert "passphrase is wrong" in str(exc.value)
    assert "not the passphrase" not in str(exc.value)


async def test_a_key_that_does_not_match_the_certificate_stops_the_connection(
    clock: ManualClock, ec_pki: Pki
) -> None:
    url = "https://127.0.0.1:9/OpenADR2/Simple/2.0b"
    connection = connection_to(ven_settings(ec_pki, url, key_path=ec_pki.vtn_key), clock)
    with pytest.raises(ConfigError, match=rf"VTN {VTN_ID}: key_path .* is not the key of"):
        await connection.start()


# -- (e) settings validation ------------------------------------------------------------------

SETTINGS_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "partial set",
        {"ca_path": None, "vtn_fingerprint": None},
        "vtn[0].ca_path: mutual TLS needs all of cert_path, key_path, ca_path, vtn_fingerprint; "
        "missing: ca_path, vtn_fingerprint",
    ),
    (
        "only a fingerprint",
        {"cert_path": None, "key_path": None, "ca_path": None, "url": "http://127.0.0.1:8080/"},
        "vtn[0].cert_path: mutual TLS needs all of",
    ),
    ("TLS over http", {"url": "http://127.0.0.1:8080/"}, "vtn[0].url: with mutual TLS"),
    (
        "https without TLS",
        {"cert_path": None, "key_path": None, "ca_path": None, "vtn_fingerprint": None},
        "vtn[0].url: https:// needs mutual TLS",
    ),
    ("fingerprint too short", {"vtn_fingerprint": "AB:CD:EF"}, "vtn[0].vtn_fingerprint: expected"),
    (
        "fingerprint not hex",
        {"vtn_fingerprint": "ZZ:CD:EF:01:23:45:67:89:AB:CD"},
        "vtn[0].vtn_fingerprint: expected",
    ),
    (
        "SHA-1 style fingerprint",
        {"vtn_fingerprint": ":".join(["AB"] * 20)},
        "vtn[0].vtn_fingerprint: expected",
    ),
    ("missing key file", {"key_path": "/nonexistent/ven.key"}, "vtn[0].key_path: no such file"),
    (
        "passphrase variable without TLS",
        {
            "cert_path": None,
            "key_path": None,
            "ca_path": None,
            "vtn_fingerprint": None,
            "url": "http://127.0.0.1:8080/",
            "key_passphrase_env": "SOME_VAR",
        },
        "vtn[0].key_passphrase_env: only meaningful with mutual TLS",
    ),
    (
        "passphrase itself instead of a variable name",
        {"key_passphrase_env": "hunter2 is my passphrase"},
        "vtn[0].key_passphrase_env: String should match pattern",
    ),
]


@pytest.mark.parametrize(
    ("changes", "message"), [c[1:] for c in SETTINGS_CASES], ids=[c[0] for c in SETTINGS_CASES]
)
def test_bad_tls_settings_are_refused_naming_the_key(
    ec_pki: Pki, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings(toml_vtn(ec_pki, **changes), "gateway.toml")
    assert str(exc.value).startswith(f"gateway.toml: {message}"), exc.value


def test_good_tls_settings_validate_and_the_fingerprint_is_normalised(ec_pki: Pki) -> None:
    settings = parse_settings(
        toml_vtn(ec_pki, vtn_fingerprint=ec_pki.vtn_fingerprint.lower()), "gateway.toml"
    )
    (vtn,) = settings.vtn
    assert vtn.tls and vtn.check_hostname
    assert vtn.vtn_fingerprint == ec_pki.vtn_fingerprint
    plain = parse_settings(
        {"vtn": [{"id": VTN_ID, "url": "http://127.0.0.1:8080/", "ven_name": VEN_NAME}]}, "x"
    )
    assert not plain.vtn[0].tls


async def test_the_daemon_stops_a_misconfigured_vtn_and_does_not_retry_it(
    clock: ManualClock,
    ec_pki: Pki,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gateway.daemon.gateway import Gateway

    async with tls_vtn(clock, ec_pki) as vtn:
        vtn_settings = ven_settings(ec_pki, vtn.url, vtn_fingerprint=ec_pki.ven_fingerprint)
        settings = parse_settings(
            {
                "vtn": [vtn_settings.model_dump(mode="json", exclude_none=True)],
                "site": [
                    {
                        "id": "site-a",
                        "gpus_total": 4,
                        "it_power_max_kw": 3.0,
                        "wan_bandwidth_gbps": 1.0,
                        "controller_url": "http://127.0.0.1:9/",
                        "controller_token": "token-of-site-a",
                        "vtn": VTN_ID,
                    }
                ],
            },
            "test",
        )
        gateway = Gateway(settings, clock, session_factory)
        try:
            with caplog.at_level(logging.ERROR, logger="gateway.daemon"):
                await gateway.start(schedule=False)
            assert not gateway.vens[0].available
            assert not gateway.vens[0].supervised, "a configuration error is not retried"
            assert any(f"VTN {VTN_ID} stopped" in r.getMessage() for r in caplog.records)
        finally:
            await gateway.stop()

"""The web server: the token in front of every route, the JSON API's shapes and figures,
``/metrics`` as Prometheus parses it, ``/healthz``, the ``[web]`` settings, and the daemon
serving it all (in process and as ``dr-gateway run``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock, SystemClock
from gateway.daemon.gateway import Gateway
from gateway.db import make_engine, make_session_factory, unit_of_work
from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings, parse_settings
from gateway.settings_web import WebSettings
from gateway.sites.records import JobSpec
from gateway.web.app import make_app
from gateway.web.auth import COOKIE_NAME
from gateway.web.context import DaemonState, VtnState
from models import LedgerRow
from simulators.dashboard_data import (
    FIRST_POLL_AT,
    WEB_TOKEN,
    dashboard_settings,
    migration_row,
    seed_dashboard,
)
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace

ROOT = Path(__file__).resolve().parents[2]

PROTECTED = (
    "/",
    "/static/dashboard.js",
    "/static/dashboard.css",
    "/api/v1/overview",
    "/api/v1/sites",
    "/api/v1/jobs",
    "/api/v1/migrations",
    "/api/v1/events",
    "/api/v1/energy",
    "/healthz",
    "/metrics",
    "/no/such/route",
)


@dataclass
class Served:
    client: TestClient[web.Request, web.Application]
    sessions: sessionmaker[Session]
    settings: Settings


@pytest.fixture
async def served(
    session_factory: sessionmaker[Session], database_url: str
) -> AsyncIterator[Served]:
    settings = dashboard_settings(database_url)
    seed_dashboard(session_factory, settings)
    app = make_app(
        session_factory, settings.web, ManualClock(FIRST_POLL_AT + timedelta(seconds=900))
    )
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield Served(client, session_factory, settings)


BEARER = {"Authorization": f"Bearer {WEB_TOKEN}"}


# -- the token ------------------------------------------------------------------------------


async def test_every_route_refuses_requests_without_the_right_token(served: Served) -> None:
    wrong = "web-test-token-WRONGWRONGWRONG"
    attempts: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("no credential", {}, {}),
        ("wrong bearer", {"Authorization": f"Bearer {wrong}"}, {}),
        ("right token, wrong scheme", {"Authorization": f"Basic {WEB_TOKEN}"}, {}),
        ("wrong cookie", {"Cookie": f"{COOKIE_NAME}={wrong}"}, {}),
        ("wrong query", {}, {"token": wrong}),
        ("a prefix of the token", {"Authorization": f"Bearer {WEB_TOKEN[:-1]}"}, {}),
    ]
    for path in PROTECTED:
        for label, headers, query in attempts:
            async with served.client.get(
                path, headers=headers, params=query, allow_redirects=False
            ) as response:
                assert response.status == 401, (path, label)
                assert response.headers["WWW-Authenticate"].startswith("Bearer ")
                body = await response.json()
                assert body["error"] == "unauthorized", (path, label)
                assert WEB_TOKEN not in await response.text()


async def test_the_token_is_accepted_as_header_cookie_or_query(served: Served) -> None:
    client = served.client
    async with client.get("/api/v1/sites", headers=BEARER) as response:
        assert response.status == 200
    async with client.get("/api/v1/sites", params={"token": WEB_TOKEN}) as response:
        assert response.status == 200
    async with client.get(
        "/api/v1/sites", headers={"Cookie": f"{COOKIE_NAME}={WEB_TOKEN}"}
    ) as response:
        assert response.status == 200


async def test_opening_the_page_with_the_token_trades_it_for_a_cookie(served: Served) -> None:
    client = served.client
    async with client.get("/", params={"token": WEB_TOKEN}, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/"
        cookie = response.cookies[COOKIE_NAME]
        assert cookie.value == WEB_TOKEN
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    # The client keeps the cookie: the page and its script load with nothing else.
    async with client.get("/") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        async with client.get(asset) as response:
            assert response.status == 200, asset


# -- the JSON API ---------------------------------------------------------------------------


async def _get(served: Served, path: str, **params: str) -> Any:
    async with served.client.get(path, headers=BEARER, params=params) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["Cache-Control"] == "no-store"
        return await response.json()


def _ledger_sums(sessions: sessionmaker[Session], site_id: str | None = None) -> dict[str, float]:
    names = ("load_kwh", "renewable_used_kwh", "grid_kwh", "curtailed_kwh", "migration_kwh")
    query = select(*(func.sum(getattr(LedgerRow, n)) for n in names))
    if site_id is not None:
        query = query.where(LedgerRow.site_id == site_id)
    with unit_of_work(sessions) as session:
        row = session.execute(query).one()
    return {name: float(value or 0.0) for name, value in zip(names, row, strict=True)}


async def test_sites_jobs_migrations_and_events(served: Served) -> None:
    sites = (await _get(served, "/api/v1/sites"))["sites"]
    assert [s["site_id"] for s in sites] == ["alpha", "beta"]
    alpha, beta = sites
    assert alpha["online"] is True and beta["online"] is False
    assert alpha["load_kw"] == pytest.approx(2.0 * 1.2)
    assert alpha["renewable_kw"] == pytest.approx(5.0)
    assert alpha["surplus_kw"] == pytest.approx(5.0 - 2.4)
    assert alpha["jobs_running"] == 1 and alpha["gpus_free"] == 6
    assert alpha["last_status_at"] == "2027-06-21T10:10:00Z"

    jobs = (await _get(served, "/api/v1/jobs"))["jobs"]
    assert [(j["job_id"], j["site_id"], j["state"]) for j in jobs] == [
        ("job-a", "alpha", "running"),
        ("job-b", "beta", "running"),
    ]

    migrations = await _get(served, "/api/v1/migrations")
    assert migrations["states"][0] == "planned" and migrations["states"][-1] == "aborted"
    assert migrations["counts"]["completed"] == 1
    assert migrations["counts"]["aborted"] == 1
    assert migrations["counts"]["transferring"] == 1
    assert migrations["counts"]["planned"] == 0
    [flying] = migrations["in_flight"]
    assert flying["migration_id"] == "m-flying" and flying["state"] == "transferring"
    assert flying["state_times"]["transferring"] == "2027-06-21T10:02:02Z"
    assert flying["state_times"]["restoring"] is None
    assert [m["migration_id"] for m in migrations["recent"]] == ["m-aborted", "m-completed"]
    one = await _get(served, "/api/v1/migrations", limit="1")
    assert [m["migration_id"] for m in one["recent"]] == ["m-aborted"]

    events = (await _get(served, "/api/v1/events"))["events"]
    assert [(e["event_id"], e["modification_number"], e["opt"]) for e in events] == [
        ("EVT-2", 0, "optIn"),
        ("EVT-1", 1, "optOut"),
    ]
    evt1 = events[1]
    assert evt1["reason"] == "plan changed" and evt1["resource_ids"] == ["alpha"]
    assert evt1["signals"] == ["LOAD_DISPATCH/delta"]
    assert evt1["start_at"] == "2027-06-22T10:00:00Z"
    assert evt1["end_at"] == "2027-06-22T11:00:00Z"
    assert evt1["sent_at"] is None
    assert events[0]["resource_ids"] == []


async def test_energy_matches_the_ledger(served: Served) -> None:
    energy = await _get(served, "/api/v1/energy")
    fleet_sums = _ledger_sums(served.sessions)
    assert fleet_sums["load_kwh"] > 0
    for name, total in fleet_sums.items():
        assert energy["fleet"][name] == pytest.approx(total), name
    # No surplus event covers the ledger: captured surplus is the renewable energy used.
    assert energy["fleet"]["captured_surplus_kwh"] == pytest.approx(
        fleet_sums["renewable_used_kwh"]
    )
    assert energy["fleet"]["renewable_share"] == pytest.approx(
        fleet_sums["renewable_used_kwh"] / fleet_sums["load_kwh"]
    )
    assert energy["today_since_at"] == "2027-06-21T00:00:00Z"
    assert energy["today"]["load_kwh"] == pytest.approx(fleet_sums["load_kwh"])
    assert sorted(energy["by_site"]) == ["alpha", "beta"]
    for site_id in ("alpha", "beta"):
        site_sums = _ledger_sums(served.sessions, site_id)
        for name, total in site_sums.items():
            assert energy["by_site"][site_id][name] == pytest.approx(total), (site_id, name)


async def test_overview_carries_everything_the_dashboard_draws(served: Served) -> None:
    overview = await _get(served, "/api/v1/overview")
    assert set(overview) == {
        "generated_at",
        "refresh_s",
        "sites",
        "jobs",
        "migrations",
        "events",
        "energy",
    }
    assert overview["generated_at"] == "2027-06-21T10:15:00Z"
    assert overview["refresh_s"] == 1.5
    assert overview["sites"] == (await _get(served, "/api/v1/sites"))["sites"]
    assert overview["migrations"] == await _get(served, "/api/v1/migrations")
    assert overview["energy"] == await _get(served, "/api/v1/energy")


async def test_a_bad_limit_is_a_400_naming_it(served: Served) -> None:
    for path in ("/api/v1/events", "/api/v1/migrations", "/api/v1/overview"):
        for limit in ("0", "1001", "ten", "-3", ""):
            async with served.client.get(path, headers=BEARER, params={"limit": limit}) as response:
                assert response.status == 400, (path, limit)
                body = await response.json()
                assert body["error"] == "bad request", (path, limit)
                assert body["detail"].startswith("limit: expected a whole number"), body


async def test_unknown_routes_answer_json(served: Served) -> None:
    async with served.client.get("/api/v1/nothing", headers=BEARER) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not found"
    async with served.client.post("/api/v1/sites", headers=BEARER) as response:
        assert response.status == 405
        assert (await response.json())["error"] == "method not allowed"


# -- /metrics -------------------------------------------------------------------------------


async def _scrape(client: TestClient[web.Request, web.Application]) -> dict[str, Any]:
    async with client.get("/metrics", headers=BEARER) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _values(family: Any) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


async def test_metrics_parse_and_count_what_the_database_holds(served: Served) -> None:
    families = await _scrape(served.client)
    assert _values(families["dr_gateway_events_received"]) == {(("vtn_id", "utility"),): 2.0}
    assert families["dr_gateway_events_received"].type == "counter"
    assert _values(families["dr_gateway_opts"]) == {
        (("opt", "optIn"), ("vtn_id", "utility")): 2.0,
        (("opt", "optOut"), ("vtn_id", "utility")): 1.0,
    }
    assert _values(families["dr_gateway_migrations"]) == {
        (("outcome", "aborted"),): 1.0,
        (("outcome", "completed"),): 1.0,
    }
    in_flight = _values(families["dr_gateway_migrations_in_flight"])
    assert in_flight[(("state", "transferring"),)] == 1.0
    assert sum(in_flight.values()) == 1.0 and len(in_flight) == 5
    [captured] = families["dr_gateway_energy_captured_kwh"].samples
    assert captured.name == "dr_gateway_energy_captured_kwh_total"
    assert captured.value == pytest.approx(_ledger_sums(served.sessions)["renewable_used_kwh"])
    assert captured.value > 0
    assert _values(families["dr_gateway_sites"]) == {(): 2.0}
    assert _values(families["dr_gateway_sites_online"]) == {(): 1.0}
    assert _values(families["dr_gateway_site_load_kw"])[(("site_id", "alpha"),)] == (
        pytest.approx(2.4)
    )
    assert _values(families["dr_gateway_site_renewable_kw"])[(("site_id", "alpha"),)] == 5.0
    # A registry of its own: nothing of the gateway's lands in the process-wide one.
    assert not [m for m in REGISTRY.collect() if m.name.startswith("dr_gateway")]


async def test_metrics_come_from_the_database_and_survive_a_restart(served: Served) -> None:
    before = await _scrape(served.client)
    with unit_of_work(served.sessions) as session:
        session.add(
            migration_row("m-later", "job-a", "completed", FIRST_POLL_AT + timedelta(seconds=600))
        )
    restarted = make_app(served.sessions, served.settings.web, SystemClock())
    async with TestClient(TestServer(restarted, host="127.0.0.1", port=0)) as client:
        after = await _scrape(client)
    assert set(after) == set(before)
    assert _values(after["dr_gateway_migrations"])[(("outcome", "completed"),)] == 2.0
    assert _values(after["dr_gateway_opts"]) == _values(before["dr_gateway_opts"])


async def test_metrics_in_openmetrics_when_asked(served: Served) -> None:
    headers = {**BEARER, "Accept": "application/openmetrics-text; version=1.0.0"}
    async with served.client.get("/metrics", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await response.text()
    assert text.rstrip().endswith("# EOF")
    assert "dr_gateway_energy_captured_kwh_total" in text


# -- /healthz -------------------------------------------------------------------------------


async def test_healthz_reports_the_database_and_the_daemon(
    session_factory: sessionmaker[Session],
) -> None:
    state = DaemonState(scheduler_running=True, stopping=False, vtns=(VtnState("utility", False),))
    app = make_app(
        session_factory, dashboard_settings().web, ManualClock(FIRST_POLL_AT), lambda: state
    )
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        async with client.get("/healthz", headers=BEARER) as response:
            assert response.status == 200
            body = await response.json()
        assert body["status"] == "ok" and body["checked_at"] == "2027-06-21T10:00:00Z"
        assert body["database"]["reachable"] is True and body["database"]["latency_ms"] >= 0
        assert body["daemon"] == {
            "scheduler_running": True,
            "stopping": False,
            "vtns": [{"vtn_id": "utility", "available": False}],
        }
        state = DaemonState(scheduler_running=False, stopping=True, vtns=())
        async with client.get("/healthz", headers=BEARER) as response:
            assert response.status == 503
            assert (await response.json())["status"] == "unavailable"


async def test_without_a_database_healthz_and_metrics_answer_503(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'gateway.db'}")
    try:
        app = make_app(
            make_session_factory(engine), dashboard_settings().web, ManualClock(FIRST_POLL_AT)
        )
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            async with client.get("/healthz", headers=BEARER) as response:
                assert response.status == 503
                body = await response.json()
            assert body["status"] == "unavailable" and body["daemon"] is None
            assert body["database"]["reachable"] is False
            assert "OperationalError" in body["database"]["error"]
            async with client.get("/metrics", headers=BEARER) as response:
                assert response.status == 503
    finally:
        engine.dispose()


# -- [web] settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("web", "key", "words"),
    [
        ({"enabled": True}, "web.token", "needs a token"),
        ({"enabled": True, "token": "too-short"}, "web.token", "at least 16"),
        ({"token": "has spaces in it, sixteen+"}, "web.token", "at least 16"),
        ({"port": 70000}, "web.port", "less than or equal"),
        ({"token_file": "/no/such/token"}, "web.token_file", "no such file"),
        ({"refresh_s": 0}, "web.refresh_s", "greater than or equal"),
        ({"enabeld": True}, "web.enabeld", "unknown key"),
    ],
)
def test_bad_web_settings_name_the_key(web: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings({"web": web}, "gateway.toml")
    message = str(exc.value)
    assert message.startswith(f"gateway.toml: {key}: "), message
    assert words in message
    assert "sixteen" not in message, "the token itself stays out of the message"


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "web.token"
    path.write_text(f"  {WEB_TOKEN}\n")
    web = WebSettings(enabled=True, token_file=path)
    assert web.bearer_token() == WEB_TOKEN
    assert WEB_TOKEN not in repr(WebSettings(enabled=True, token=WEB_TOKEN))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="token or token_file, not both"):
        parse_settings({"web": {"token": WEB_TOKEN, "token_file": str(path)}}, "gateway.toml")


def test_the_example_configuration_documents_the_web_section() -> None:
    settings = load_settings(ROOT / "config" / "example.toml")
    assert settings.web == WebSettings()
    text = (ROOT / "config" / "example.toml").read_text()
    section = text[text.index("[web]") :]
    for key in WebSettings.model_fields:
        assert re.search(rf"^#? ?{key} = ", section, re.MULTILINE), key


# -- the daemon serves it -------------------------------------------------------------------


async def test_the_daemon_serves_the_web_while_it_runs(
    session_factory: sessionmaker[Session], database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(FIRST_POLL_AT)
    site = SimulatedSite(
        site_id="alpha",
        token="controller-token",
        clock=clock,
        trace=RenewableTrace.constant(5.0),
        gpus_total=8,
        it_power_max_kw=6.0,
        jobs=[JobSpec("job-a", 2, 1.3, 4.0, 50.0)],
    )
    runner, url = await start_site_server(site)
    base = dashboard_settings(database_url)
    settings = base.model_copy(
        update={
            "vtn": [],
            "site": [base.site[0].model_copy(update={"controller_url": url, "vtn": None})],
        }
    )
    gateway = Gateway(settings, clock, session_factory)
    caplog.set_level("INFO", logger="gateway.daemon")
    try:
        await gateway.start(schedule=False, connect_vens=False)
        assert gateway.web is not None and gateway.web.url is not None
        web_url = gateway.web.url
        assert web_url.startswith("http://127.0.0.1:")
        assert f"at {web_url}/" in caplog.text
        async with aiohttp.ClientSession(headers=BEARER) as http:
            async with http.get(f"{web_url}/healthz") as response:
                assert response.status == 200
                health = await response.json()
            assert health["daemon"] == {"scheduler_running": False, "stopping": False, "vtns": []}
            async with http.get(f"{web_url}/api/v1/sites") as response:
                [alpha] = (await response.json())["sites"]
            assert alpha["online"] is True and alpha["renewable_kw"] == 5.0
            async with http.get(f"{web_url}/api/v1/jobs") as response:
                assert [j["job_id"] for j in (await response.json())["jobs"]] == ["job-a"]
    finally:
        await gateway.stop()
        await runner.cleanup()
    assert gateway.web is None
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{web_url}/healthz")

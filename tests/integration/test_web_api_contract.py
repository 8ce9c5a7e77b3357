"""The web API's OpenAPI document (``docs/web-api.openapi.yaml``), and the dashboard's server
checked against it, as ``tests/system/test_site_api_contract.py`` checks the site API.

(a) The document is a valid OpenAPI 3.1 document. (b) Every route the application serves is in it,
and every operation in it is served. (c) Over real HTTP on loopback, on each database backend with
the data of ``tests/integration/test_web.py``, every documented answer of every operation is
produced (200s, 303, 400, 401, 404, 503) and validated against the document (status, headers, JSON
body; ``simulators/openapi_contract.py``); the test fails unless each was seen.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest
from multidict import CIMultiDict
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock
from gateway.db import make_engine, make_session_factory
from gateway.web.app import WebServer, make_app
from gateway.web.context import DaemonState, VtnState
from gateway.web.dashboard import STATIC_FILES
from simulators.dashboard_data import (
    FIRST_POLL_AT,
    WEB_TOKEN,
    dashboard_settings,
    seed_dashboard,
)
from simulators.openapi_contract import (
    WEB_DOCUMENT_PATH,
    Answered,
    Contract,
    ContractClient,
    ContractError,
)

SERVER = "web"


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load(WEB_DOCUMENT_PATH)


def test_rule_web_openapi_document_validates(contract: Contract) -> None:
    validate(dict(contract.document))
    assert contract.document["openapi"].startswith("3.1")


def test_rule_web_openapi_validation_catches_a_broken_document(contract: Contract) -> None:
    broken = copy.deepcopy(dict(contract.document))
    del broken["paths"]["/api/v1/sites"]["get"]["responses"]["200"]["description"]
    with pytest.raises(OpenAPIValidationError, match="description"):
        validate(broken)


def test_rule_every_web_route_is_documented(contract: Contract) -> None:
    app = make_app(
        make_session_factory(make_engine("sqlite://")),
        dashboard_settings().web,
        ManualClock(FIRST_POLL_AT),
    )
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    documented = {(method, template) for method, template, _ in contract.documented(SERVER)}
    implicit_head = {("HEAD", t) for m, t in served if m == "GET"} - documented
    assert served - implicit_head == documented


def test_web_contract_checker_rejects_an_answer_the_document_forbids(contract: Contract) -> None:
    json_type = CIMultiDict({"Content-Type": "application/json", "Cache-Control": "no-store"})
    with pytest.raises(ContractError, match="sites"):
        contract.check(SERVER, "GET", "/api/v1/sites", 200, json_type, b'{"site": []}')
    with pytest.raises(ContractError, match="WWW-Authenticate"):
        body = b'{"error": "unauthorized", "detail": "x"}'
        contract.check(SERVER, "GET", "/healthz", 401, json_type, body)
    with pytest.raises(ContractError, match="Cache-Control"):
        body = b"{}"
        contract.check(SERVER, "GET", "/api/v1/overview", 200, {"Content-Type": "x"}, body)


@pytest.fixture
async def web_url(session_factory: sessionmaker[Session], database_url: str) -> AsyncIterator[str]:
    settings = dashboard_settings(database_url)
    seed_dashboard(session_factory, settings)
    app = make_app(
        session_factory, settings.web, ManualClock(FIRST_POLL_AT + timedelta(seconds=900))
    )
    server = WebServer(app, "127.0.0.1", 0)
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


async def test_rule_every_documented_web_answer_is_produced_and_valid(
    contract: Contract, web_url: str
) -> None:
    seen: set[Answered] = set()
    async with aiohttp.ClientSession() as session:
        client = ContractClient(contract, SERVER, session, web_url, WEB_TOKEN, seen)
        overview = await client.call("GET", "/api/v1/overview", expect=200)
        assert {s["site_id"] for s in overview.body["sites"]} == {"alpha", "beta"}
        assert overview.body["migrations"]["counts"]["completed"] == 1
        for path in ("/sites", "/jobs", "/migrations", "/events", "/energy"):
            await client.call("GET", "/api/v1" + path, expect=200)
        events = await client.call("GET", "/api/v1/events?limit=1", expect=200)
        assert len(events.body["events"]) == 1
        for path in ("/overview", "/migrations", "/events"):
            bad = await client.call("GET", f"/api/v1{path}?limit=0", expect=400)
            assert "limit" in bad.body["detail"]
        await client.call("GET", "/api/v1/sites", expect=401, authorize=False)
        await client.call("GET", "/api/v1/sites", expect=401, token="wrong-token-0123456789")
        for path in ("/api/v1/overview", "/api/v1/jobs", "/api/v1/migrations", "/api/v1/events"):
            await client.call("GET", path, expect=401, authorize=False)
        for path in ("/api/v1/energy", "/healthz", "/metrics", "/", "/static/dashboard.js"):
            await client.call("GET", path, expect=401, authorize=False)
        health = await client.call("GET", "/healthz", expect=200)
        assert health.body["database"]["reachable"] is True
        await client.call("GET", "/metrics", expect=200)
        openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
        await client.call("GET", "/metrics", expect=200, headers=openmetrics)
        await client.call("GET", "/", expect=200)
        for name in sorted(STATIC_FILES):
            await client.call("GET", f"/static/{name}", expect=200)
            await client.call("HEAD", f"/static/{name}", expect=200)
        await client.call("GET", "/static/no-such-file.js", expect=404)
        await client.call("GET", "/static/..%2Fapi.py", expect=404)
        await client.call("GET", "/no/such/route", expect=404)
        await client.call("POST", "/api/v1/sites", expect=405)
        await _cookie_redirect(contract, session, web_url, seen)
    missing = contract.documented(SERVER) - seen - _answers_of_an_unhealthy_gateway()
    assert not missing, sorted(missing)


async def _cookie_redirect(
    contract: Contract, session: aiohttp.ClientSession, web_url: str, seen: set[Answered]
) -> None:
    """``GET /?token=`` answers 303 with the cookie (not followed, to see the answer itself)."""
    async with session.get(f"{web_url}/?token={WEB_TOKEN}", allow_redirects=False) as response:
        raw = await response.read()
        answered, _ = contract.check(SERVER, "GET", "/", response.status, response.headers, raw)
    assert response.status == 303 and response.headers["Location"] == "/"
    seen.add(answered)


def _answers_of_an_unhealthy_gateway() -> set[Answered]:
    return {("GET", "/healthz", "503"), ("GET", "/metrics", "503")}


async def test_rule_an_unhealthy_gateway_answers_as_documented(contract: Contract) -> None:
    """503 from ``/healthz`` (the database does not answer; the daemon is stopping) and from
    ``/metrics`` (the database does not answer), each as the document says."""
    unreachable = make_session_factory(make_engine("sqlite:////nonexistent-dir/gateway.db"))
    stopping = DaemonState(
        scheduler_running=False, stopping=True, vtns=(VtnState("utility", False),)
    )
    seen: set[Answered] = set()
    for sessions, daemon in ((unreachable, None), (_reachable(), stopping)):
        app = make_app(
            sessions,
            dashboard_settings().web,
            ManualClock(FIRST_POLL_AT),
            None if daemon is None else (lambda d=daemon: d),
        )
        server = WebServer(app, "127.0.0.1", 0)
        url = await server.start()
        try:
            async with aiohttp.ClientSession() as session:
                client = ContractClient(contract, SERVER, session, url, WEB_TOKEN, seen)
                health = await client.call("GET", "/healthz", expect=503)
                assert health.body["status"] == "unavailable"
                if daemon is None:
                    assert health.body["database"]["reachable"] is False
                    await client.call("GET", "/metrics", expect=503)
                else:
                    assert health.body["daemon"]["stopping"] is True
        finally:
            await server.stop()
    assert seen == _answers_of_an_unhealthy_gateway()


def _reachable() -> sessionmaker[Session]:
    return make_session_factory(make_engine("sqlite://"))

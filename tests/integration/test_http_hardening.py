"""The three HTTP servers (site agent, simulated site controller, dashboard) under hostile
requests, each sent as raw bytes over a real socket on loopback:

- a malformed credential (a non-ASCII or non-UTF-8 bearer token, a malformed ``Authorization``
  header, a cookie holding bytes that are not ASCII) is ``401`` with a ``WWW-Authenticate``
  challenge (RFC 6750 §3, RFC 9110 §11.6.1), never ``500``;
- an absurdly long target is ``414`` (RFC 9110 §15.5.15) as JSON, a long static file name
  ``404``; a request line beyond the HTTP parser's limit is its ``400``, logged without a
  traceback;
- a client that hangs up mid-body is logged at debug, without a traceback, and the server
  keeps serving; a real failure of a handler still answers a JSON ``500`` and logs its traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from gateway.agent.config import AgentSettings
from gateway.agent.server import start_agent_server
from gateway.agent.transfer import bearer_authorizer, checkpoint_routes
from gateway.clock import ManualClock
from gateway.db import make_engine, make_session_factory
from gateway.http_edge import REQUEST_LINE_MAX_BYTES, SERVER_LOG, TARGET_MAX_BYTES
from gateway.web.app import WebServer, make_app
from simulators.dashboard_data import (
    FIRST_POLL_AT,
    WEB_TOKEN,
    dashboard_settings,
)
from simulators.site_controller import build_app, start_site_server
from simulators.site_fixtures import simulated_site
from tests.support.waiting import wait_for

SITE_TOKEN = "hardening-site-token-0123456789"
START_AT = FIRST_POLL_AT
ANSWER_TIMEOUT_S = 30.0
"""Hang guard for one answer on loopback [s]; never reached when the server answers."""
SERVERS = ("simulator", "agent", "web")


@dataclass(frozen=True)
class Served:
    kind: str
    host: str
    port: int
    token: str
    probe_path: str
    """A route that needs the token and answers 200 with it."""


async def _serve(kind: str, tmp_path: Path) -> AsyncIterator[Served]:
    if kind == "simulator":
        site = simulated_site("hard", SITE_TOKEN, ManualClock(START_AT), [])
        runner, url = await start_site_server(site)
        stop, token, probe = runner.cleanup, SITE_TOKEN, "/v1/status"
    elif kind == "agent":
        settings = AgentSettings(
            site_id="hard",
            token=SITE_TOKEN,
            gpus_total=8,
            it_power_max_kw=8.0,
            idle_kw_per_gpu=0.1,
            wan_bandwidth_gbps=10.0,
            data_dir=tmp_path / "agent",
            checkpoint_timeout_s=5.0,
            stop_timeout_s=5.0,
        )
        runner, url = await start_agent_server(settings)
        stop, token, probe = runner.cleanup, SITE_TOKEN, "/v1/status"
    else:
        # /healthz reads no table: a database without the schema serves it (and is quick).
        engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
        app = make_app(
            make_session_factory(engine),
            dashboard_settings().web,
            ManualClock(FIRST_POLL_AT + timedelta(seconds=60)),
        )
        server = WebServer(app, "127.0.0.1", 0)
        url = await server.start()

        async def stop() -> None:
            await server.stop()
            engine.dispose()

        token, probe = WEB_TOKEN, "/healthz"
    host, _, port = url.removeprefix("http://").rpartition(":")
    try:
        yield Served(kind, host, int(port), token, probe)
    finally:
        await stop()


@pytest.fixture(params=SERVERS)
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    async for one in _serve(request.param, tmp_path):
        yield one


@pytest.fixture(params=SERVERS[:2])
async def site_served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    """The two servers of the site API (the dashboard serves no route that reads a body)."""
    async for one in _serve(request.param, tmp_path):
        yield one


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


async def _raw(served: Served, head: bytes, body: bytes = b"") -> RawAnswer:
    """Send ``head`` (request line and header lines, without the blank line) and ``body``
    on a new connection; read the whole answer (the request asks to close)."""
    reader, writer = await asyncio.open_connection(served.host, served.port)
    try:
        writer.write(head + b"\r\nHost: loopback\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), ANSWER_TIMEOUT_S)
    finally:
        writer.close()
    head_bytes, _, rest = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(lines[0].split()[1]), headers, rest)


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


def _bearer(served: Served) -> bytes:
    return b"Authorization: Bearer " + served.token.encode()


async def test_the_right_token_is_let_in(served: Served) -> None:
    answer = await _raw(
        served, b"GET " + served.probe_path.encode() + b" HTTP/1.1\r\n" + _bearer(served)
    )
    assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    ("label", "header"),
    [
        ("UTF-8 non-ASCII token", "Authorization: Bearer t\u00e9\u00e9-token".encode()),
        ("latin-1 token (not UTF-8)", b"Authorization: Bearer t\xe9\xe9-token"),
        ("bytes after the right token", b"Authorization: Bearer {token}\xff"),
        ("token with a space inside", b"Authorization: Bearer {token} extra"),
        ("token with a comma", b"Authorization: Bearer {token},x"),
        ("Bearer without a token", b"Authorization: Bearer"),
        ("Bearer and spaces only", b"Authorization: Bearer    "),
        ("another scheme", b"Authorization: Basic dXNlcjpwdw=="),
        ("non-ASCII scheme", b"Authorization: B\xe9arer {token}"),
    ],
)
async def test_rule_a_malformed_bearer_credential_is_401_with_a_challenge(
    served: Served, caplog: pytest.LogCaptureFixture, label: str, header: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    header = header.replace(b"{token}", served.token.encode())
    answer = await _raw(served, b"GET " + served.probe_path.encode() + b" HTTP/1.1\r\n" + header)
    assert answer.status == 401, (label, answer.body)
    assert answer.json()["error"] == "unauthorized"
    assert answer.headers["www-authenticate"].startswith('Bearer realm="')
    _no_traceback(caplog)


@pytest.mark.parametrize(
    "cookie",
    [
        b"Cookie: dr_gateway_token=\xe9\xff\x80",
        "Cookie: dr_gateway_token=t\u00e9\u20ac".encode(),
        b'Cookie: dr_gateway_token="unterminated',
        b"Cookie: ;;==;dr_gateway_token",
    ],
)
async def test_rule_a_non_ascii_or_malformed_cookie_is_401(
    served: Served, caplog: pytest.LogCaptureFixture, cookie: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await _raw(served, b"GET " + served.probe_path.encode() + b" HTTP/1.1\r\n" + cookie)
    assert answer.status == 401, answer.body
    assert answer.headers["www-authenticate"].startswith('Bearer realm="')
    _no_traceback(caplog)


async def test_rule_a_wrong_token_gets_the_invalid_token_challenge(served: Served) -> None:
    wrong = b"Authorization: Bearer wrong-token-0123456789"
    answer = await _raw(served, b"GET " + served.probe_path.encode() + b" HTTP/1.1\r\n" + wrong)
    assert answer.status == 401
    assert answer.headers["www-authenticate"].endswith(', error="invalid_token"')
    missing = await _raw(served, b"GET " + served.probe_path.encode() + b" HTTP/1.1")
    assert missing.status == 401 and "error=" not in missing.headers["www-authenticate"]


@pytest.mark.parametrize("authorized", [True, False])
async def test_rule_an_absurdly_long_target_is_414(
    served: Served, caplog: pytest.LogCaptureFixture, authorized: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    target = b"/static/" + b"a" * 5000
    head = b"GET " + target + b" HTTP/1.1" + (b"\r\n" + _bearer(served) if authorized else b"")
    answer = await _raw(served, head)
    assert answer.status == 414, answer.body
    assert "uri" in str(answer.json()["error"])
    _no_traceback(caplog)


async def test_rule_the_target_limit_is_inclusive(served: Served) -> None:
    """A target of exactly TARGET_MAX_BYTES bytes is read (and not found); one more is 414."""
    for size_bytes, status in ((TARGET_MAX_BYTES, 404), (TARGET_MAX_BYTES + 1, 414)):
        target = b"/no-such-route/" + b"x" * (size_bytes - len("/no-such-route/"))
        answer = await _raw(served, b"GET " + target + b" HTTP/1.1\r\n" + _bearer(served))
        assert answer.status == status, (size_bytes, answer.body)


async def test_rule_a_target_longer_than_aiohttps_default_line_is_414(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's parser refuses a request line above 8190 bytes with a plain ``400`` by
    default; these servers read lines up to REQUEST_LINE_MAX_BYTES, so such a target is
    answered ``414`` (RFC 9112 §3); only a longer line is the parser's ``400`` (the next
    test)."""
    caplog.set_level(logging.DEBUG)
    for size_bytes, status in ((20_000, 414), (REQUEST_LINE_MAX_BYTES - 100, 414)):
        target = b"/" + b"y" * (size_bytes - 1)
        answer = await _raw(served, b"GET " + target + b" HTTP/1.1\r\n" + _bearer(served))
        assert answer.status == status, (size_bytes, answer.body[:200])
    _no_traceback(caplog)


@pytest.mark.parametrize("name_chars", [255, 256, 1000])
async def test_rule_a_long_static_file_name_is_404(
    served: Served, caplog: pytest.LogCaptureFixture, name_chars: int
) -> None:
    """Longer than a file name may be (255 bytes): the dashboard served ``/static`` from the
    file system and answered these ``500`` (ENAMETOOLONG)."""
    caplog.set_level(logging.DEBUG)
    target = b"/static/" + b"b" * name_chars
    answer = await _raw(served, b"GET " + target + b" HTTP/1.1\r\n" + _bearer(served))
    assert answer.status == 404, answer.body
    _no_traceback(caplog)


async def test_rule_a_request_line_beyond_the_parser_is_400_without_a_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    line = b"GET /" + b"c" * REQUEST_LINE_MAX_BYTES + b" HTTP/1.1"
    answer = await _raw(served, line + b"\r\n" + _bearer(served))
    assert answer.status == 400
    _no_traceback(caplog)
    assert any(r.name == SERVER_LOG.name and r.levelno == logging.DEBUG for r in caplog.records)


async def test_rule_a_client_that_hangs_up_mid_body_is_logged_at_debug(
    site_served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a JSON body, then the client closes: the handler's read fails, the server logs one
    debug line (no traceback, nothing at WARNING or above) and carries on serving. The
    dashboard has no route that reads a body; its middleware is checked with one of the
    test's own (:func:`test_rule_the_dashboard_logs_a_client_that_left_at_debug`)."""
    served = site_served
    caplog.set_level(logging.DEBUG)
    await _hang_up_mid_body(served, b"POST /v1/reservations")
    await _until_logged(caplog, "client left")
    answer = await _raw(served, b"GET /v1/status HTTP/1.1\r\n" + _bearer(served))
    assert answer.status == 200, answer.body
    _no_traceback(caplog)


async def test_rule_the_dashboard_logs_a_client_that_left_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    app = make_app(
        make_session_factory(engine), dashboard_settings().web, ManualClock(FIRST_POLL_AT)
    )

    async def reads_a_body(request: web.Request) -> web.Response:
        return web.json_response({"size_bytes": len(await request.read())})

    app.router.add_post("/test-only/body", reads_a_body)
    server = WebServer(app, "127.0.0.1", 0)
    host, _, port = (await server.start()).removeprefix("http://").rpartition(":")
    served = Served("web", host, int(port), WEB_TOKEN, "/healthz")
    try:
        await _hang_up_mid_body(served, b"POST /test-only/body")
        await _until_logged(caplog, "client left")
        answer = await _raw(served, b"GET /healthz HTTP/1.1\r\n" + _bearer(served))
    finally:
        await server.stop()
        engine.dispose()
    assert answer.status == 200, answer.body
    _no_traceback(caplog)


async def _hang_up_mid_body(served: Served, request_line_start: bytes) -> None:
    """Announce a 1000-byte JSON body, send 20 bytes of it, close the connection."""
    _, writer = await asyncio.open_connection(served.host, served.port)
    writer.write(
        request_line_start
        + b" HTTP/1.1\r\nHost: loopback\r\n"
        + _bearer(served)
        + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        + b'{"migration_id": "m'
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _until_logged(caplog: pytest.LogCaptureFixture, words: str) -> None:
    """Wait until a record containing ``words`` is logged (the handler runs after the hang-up,
    in its own task); ANSWER_TIMEOUT_S is a hang guard."""
    await wait_for(
        lambda: any(words in r.getMessage() for r in caplog.records),
        f"a record logged with {words!r}",
        ANSWER_TIMEOUT_S,
        0.01,
    )


async def test_rule_a_failing_handler_still_answers_500_and_logs_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The quiet treatment of a client that left is narrow: a handler raising ConnectionError
    while its client is still there is a failure of the server."""
    caplog.set_level(logging.DEBUG)
    app = build_app(simulated_site("hard", SITE_TOKEN, ManualClock(START_AT), []))

    async def broken(request: web.Request) -> web.Response:
        raise ConnectionRefusedError("a dependency of this handler is down")

    app.router.add_get("/v1/broken", broken)
    runner = web.AppRunner(app, access_log=None, logger=SERVER_LOG)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        served = Served("simulator", host, port, SITE_TOKEN, "/v1/broken")
        answer = await _raw(served, b"GET /v1/broken HTTP/1.1\r\n" + _bearer(served))
    finally:
        await runner.cleanup()
    assert answer.status == 500 and answer.json()["error"] == "internal"
    assert [r for r in caplog.records if r.exc_info and r.levelno == logging.ERROR]


@pytest.mark.parametrize("token", ["site token with spaces", "t\u00f6k\u00e9n-12345", "tok,en;!@#"])
async def test_a_site_token_outside_b64token_still_works(token: str) -> None:
    """A site's token is any string of 8 or more characters (``[[site]] controller_token``,
    the agent's ``token``): it is compared as sent, byte for byte, and a near miss is 401."""
    site = simulated_site("hard", token, ManualClock(START_AT), [])
    runner, url = await start_site_server(site)
    host, _, port = url.removeprefix("http://").rpartition(":")
    served = Served("simulator", host, int(port), token, "/v1/status")
    try:
        right = await _raw(served, b"GET /v1/status HTTP/1.1\r\n" + _bearer(served))
        near = await _raw(served, b"GET /v1/status HTTP/1.1\r\n" + _bearer(served) + b"x")
    finally:
        await runner.cleanup()
    assert (right.status, near.status) == (200, 401)


@pytest.mark.parametrize(
    "header",
    [b"Authorization: Bearer t\xe9\xe9-token", b"Authorization: Bearer", b"Cookie: a=\xff"],
)
async def test_rule_the_checkpoint_receiver_refuses_a_malformed_credential_with_401(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, header: bytes
) -> None:
    """The checkpoint routes on their own (``benchmarks/transfer.py`` serves them so, with
    ``bearer_authorizer``): 401 with the challenge, never 500."""
    caplog.set_level(logging.DEBUG)
    app = web.Application()
    app.router.add_routes(checkpoint_routes(tmp_path, bearer_authorizer(SITE_TOKEN)))
    runner = web.AppRunner(app, access_log=None, logger=SERVER_LOG)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        served = Served("agent", host, port, SITE_TOKEN, "/v1/checkpoints/m-1")
        answer = await _raw(served, b"HEAD /v1/checkpoints/m-1 HTTP/1.1\r\n" + header)
    finally:
        await runner.cleanup()
    assert answer.status == 401
    assert answer.headers["www-authenticate"].startswith('Bearer realm="dr-gateway-site"')
    _no_traceback(caplog)

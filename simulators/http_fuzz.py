"""Fuzzing the three HTTP servers with schemathesis: the site agent, the simulated site
controller (both ``docs/site-api.openapi.yaml``) and the dashboard (``docs/web-api.openapi.yaml``).

:class:`ServerThread` runs one real server on loopback (an OS-assigned port) in an event loop
of its own thread, so that schemathesis' synchronous client can talk to it from the caller's
thread; :func:`start_simulator`, :func:`start_agent` and :func:`start_web` start each server.

:func:`fuzz` draws requests for every operation the server serves from the document, in both of
schemathesis' modes (positive: data the document allows; negative: data it does not), with a
hypothesis seed, and sends them with a rotation of credentials: the right token, none, a wrong one,
a non-ASCII one (raw bytes that are not UTF-8), a malformed ``Authorization`` header and, for the
dashboard, the cookie and ``?token=`` (also with bytes that are not ASCII). Each answer is checked
by :class:`simulators.openapi_contract.Contract` (status, headers, JSON body) and by schemathesis'
conformance checks; :class:`FuzzResult` counts requests, 5xx answers, answers the document does not
allow, and tracebacks the server logged. ``tests/system/test_http_fuzz.py`` runs it small;
``benchmarks/fuzz_http.py`` runs it long.

For the agent, a fuzzed job ``command`` is replaced by a harmless one (the agent runs commands
as processes) and a transfer's ``target_url`` by a closed loopback port (nothing leaves the
machine); every other field stays as generated.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import HypothesisException
from multidict import CIMultiDict
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.agent.config import AgentSettings
from gateway.agent.server import start_agent_server
from gateway.clock import ManualClock
from gateway.db import make_engine, make_session_factory, upgrade
from gateway.web.app import WebServer, make_app
from gateway.web.auth import COOKIE_NAME
from simulators.dashboard_data import (
    FIRST_POLL_AT,
    WEB_TOKEN,
    dashboard_settings,
    seed_dashboard,
)
from simulators.hang_guard import HANG_GUARD_S
from simulators.openapi_contract import DOCUMENT_PATH, WEB_DOCUMENT_PATH, Contract
from simulators.site_controller import start_site_server
from simulators.site_fixtures import simulated_site

SITE_TOKEN = "fuzz-site-token-0123456789"
START_AT = datetime(2026, 6, 21, 12, tzinfo=UTC)
HARMLESS_COMMAND = [
    "{python}",
    "-m",
    "gateway.agent.example_job",
    "--steps",
    "20",
    "--width",
    "2",
    "--out",
    "{output_dir}",
    "--checkpoint",
    "{checkpoint_path}",
]
"""The example job, made short: it keeps the job contract and finishes within a second."""
CLOSED_URL = "http://127.0.0.1:9"
"""The discard port on loopback: nothing listens there, a connection is refused at once."""
_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
_PROBLEMS_KEPT = 10

Stop = Callable[[], Coroutine[Any, Any, None]]
Starter = Callable[[], Coroutine[Any, Any, tuple[str, Stop]]]


@dataclass
class FuzzResult:
    """What one server answered to a fuzz run."""

    server: str
    requests: int = 0
    server_errors: int = 0
    """Answers 500 to 599."""
    violations: int = 0
    """Answers the document does not allow (other than 5xx)."""
    tracebacks: int = 0
    """Log records of the server with a traceback."""
    errors_logged: int = 0
    """Log records at ERROR and above (with a traceback or not)."""
    wall_s: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    """Answers by HTTP status."""
    problems: list[str] = field(default_factory=list)
    """The first few 5xx, violations and tracebacks, one line each."""

    def note(self, problem: str) -> None:
        if len(self.problems) < _PROBLEMS_KEPT:
            self.problems.append(problem[:400])


class LogWatch(logging.Handler):
    """Keeps the log records with a traceback, and those at ERROR and above, while installed
    (on the root logger: every logger of the process that propagates)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.tracebacks: list[str] = []
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        line = f"{record.name}: {record.getMessage()} ({exc!r})"
        if exc is not None:
            self.tracebacks.append(line)
        if record.levelno >= logging.ERROR:
            self.errors.append(line)

    @contextmanager
    def installed(self) -> Iterator[LogWatch]:
        root = logging.getLogger()
        root.addHandler(self)
        try:
            yield self
        finally:
            root.removeHandler(self)


class ServerThread:
    """One server in an event loop of its own thread; ``url`` once entered."""

    def __init__(self, start: Starter) -> None:
        self._start = start
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop: Stop | None = None
        self.url = ""

    def __enter__(self) -> ServerThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.url, self._stop = future.result(timeout=HANG_GUARD_S)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._stop is not None:
                stopping = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
                stopping.result(timeout=HANG_GUARD_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=HANG_GUARD_S)
            self._loop.close()


def start_simulator() -> Starter:
    async def start() -> tuple[str, Stop]:
        site = simulated_site("fuzz-site", SITE_TOKEN, ManualClock(START_AT), [])
        runner, url = await start_site_server(site)
        return url, runner.cleanup

    return start


def start_agent(data_dir: Path) -> Starter:
    async def start() -> tuple[str, Stop]:
        agent_settings = AgentSettings(
            site_id="fuzz-agent",
            token=SITE_TOKEN,
            gpus_total=8,
            it_power_max_kw=8.0,
            idle_kw_per_gpu=0.1,
            wan_bandwidth_gbps=10.0,
            data_dir=data_dir,
            checkpoint_timeout_s=5.0,
            stop_timeout_s=5.0,
        )
        runner, url = await start_agent_server(agent_settings)
        return url, runner.cleanup

    return start


def start_web(database_path: Path) -> Starter:
    """The dashboard over a database holding sites, jobs, migrations and events (the data of
    ``simulators.dashboard_data``), so that the API's answers have content to check."""

    async def start() -> tuple[str, Stop]:
        url = f"sqlite:///{database_path}"
        await asyncio.to_thread(upgrade, url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        gateway_settings = dashboard_settings(url)
        await asyncio.to_thread(seed_dashboard, sessions, gateway_settings)
        web_settings = gateway_settings.web
        clock = ManualClock(FIRST_POLL_AT + timedelta(seconds=900))
        server = WebServer(make_app(sessions, web_settings, clock), "127.0.0.1", 0)
        base_url = await server.start()

        async def stop() -> None:
            await server.stop()
            engine.dispose()

        return base_url, stop

    return start


# ---- the requests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """How one request presents (or fails to present) the token."""

    label: str
    headers: dict[str, str | bytes]
    cookies: dict[str, str]
    query: dict[str, str]


def credentials(server: str, token: str) -> tuple[Credential, ...]:
    """The rotation of credentials; about half carry the right token."""
    right = Credential("token", {"Authorization": f"Bearer {token}"}, {}, {})
    rotation = [
        right,
        Credential("none", {}, {}, {}),
        right,
        Credential("wrong", {"Authorization": "Bearer wrong-token-0123456789"}, {}, {}),
        right,
        Credential("non-ascii", {"Authorization": b"Bearer \xe9\xff" + token.encode()}, {}, {}),
        right,
        Credential("malformed", {"Authorization": f"Bearer  {token} extra"}, {}, {}),
    ]
    if server == "web":
        rotation += [
            Credential("cookie", {}, {COOKIE_NAME: token}, {}),
            Credential("query", {}, {}, {"token": token}),
            Credential("cookie non-ascii", {"Cookie": b"dr_gateway_token=\xe9\xfe\x80"}, {}, {}),
            Credential("query non-ascii", {}, {}, {"token": "t\u00e9\u20ac"}),
        ]
    return tuple(rotation)


def _defuse(body: Any) -> Any:
    """A fuzzed agent body with its ``command`` and ``target_url`` made harmless."""
    if not isinstance(body, dict):
        return body
    safe = dict(body)
    if isinstance(safe.get("command"), list):
        safe["command"] = list(HARMLESS_COMMAND)
    if isinstance(safe.get("target_url"), str):
        safe["target_url"] = CLOSED_URL
    return safe


def _served_operations(schema: Any, server: str) -> list[Any]:
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if server in operation.definition.raw.get("x-served-by", ()):
            operations.append(operation)
    return operations


def fuzz(
    server: str,
    base_url: str,
    *,
    requests_wanted: int,
    seed: int,
    examples_per_round: int,
    log_watch: LogWatch,
) -> FuzzResult:
    """Send at least ``requests_wanted`` fuzzed requests to ``server`` (``simulator``,
    ``agent`` or ``web``) at ``base_url``; rounds over every operation and both modes, each
    drawing at most ``examples_per_round`` cases with a seed derived from ``seed``."""
    document = WEB_DOCUMENT_PATH if server == "web" else DOCUMENT_PATH
    contract = Contract.load(document)
    schema = schemathesis.openapi.from_path(str(document))
    operations = _served_operations(schema, server)
    token = WEB_TOKEN if server == "web" else SITE_TOKEN
    rotation = credentials(server, token)
    result = FuzzResult(server)
    session = requests.Session()
    started = time.perf_counter()
    round_number = 0
    while result.requests < requests_wanted:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _run_round(
                    operation,
                    mode,
                    seed=seed * 1_000_003 + round_number,
                    examples=examples_per_round,
                    send=lambda case: _send(
                        case, server, base_url, session, contract, rotation, result
                    ),
                )
        round_number += 1
    session.close()
    result.wall_s = time.perf_counter() - started
    result.tracebacks = len(log_watch.tracebacks)
    result.errors_logged = len(log_watch.errors)
    for line in [*log_watch.tracebacks, *log_watch.errors][:_PROBLEMS_KEPT]:
        result.note(f"log: {line}")
    return result


def _run_round(
    operation: Any, mode: GenerationMode, *, seed: int, examples: int, send: Callable[[Any], None]
) -> None:
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception:  # an operation with nothing to negate: no negative cases
        return

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=strategy)
    def round_(case: Any) -> None:
        send(case)

    try:
        round_()
    except HypothesisException:  # nothing left to generate (e.g. no parameter to negate)
        return


def _send(
    case: Any,
    server: str,
    base_url: str,
    session: requests.Session,
    contract: Contract,
    rotation: tuple[Credential, ...],
    result: FuzzResult,
) -> None:
    credential = rotation[result.requests % len(rotation)]
    result.requests += 1
    if server == "agent":
        case.body = _defuse(case.body)
    query = dict(case.query or {})
    query.update(credential.query)
    case.query = query or None
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = headers or None
    response = case.call(
        base_url=base_url,
        session=session,
        headers=dict(credential.headers),
        cookies=dict(credential.cookies),
        allow_redirects=False,
        timeout=HANG_GUARD_S,
    )
    result.statuses[response.status_code] += 1
    where = f"{server} [{credential.label}] {case.method} {response.request.path_url}"
    if response.status_code >= 500:
        result.server_errors += 1
        result.note(f"5xx: {where} -> {response.status_code}: {response.text[:200]}")
        return
    path = response.request.path_url.partition("?")[0]
    answer_headers = CIMultiDict((k, v) for k, values in response.headers.items() for v in values)
    try:
        contract.check(
            server,
            case.method.upper(),
            path,
            response.status_code,
            answer_headers,
            response.content,
        )
        case.validate_response(response, checks=_CHECKS)
    except Exception as exc:  # ContractError, or schemathesis' failure (group)
        result.violations += 1
        result.note(f"violation: {where} -> {response.status_code}: {' '.join(str(exc).split())}")

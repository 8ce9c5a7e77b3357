"""The site controller API's OpenAPI document, and both controllers checked against it.

(a) ``docs/site-api.openapi.yaml`` is a valid OpenAPI document. (b) Every operation of the
simulator (and of the site agent) is exercised over real HTTP on loopback, happy paths and
documented errors, and every answer's status, headers and JSON body are validated against the
document (``simulators/openapi_contract.py``); the test fails unless every documented answer of
that server was seen. (c) Malformed requests get a documented 4xx JSON error from the
simulator, never a 500 or a traceback.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from yarl import URL

from gateway.agent.config import AgentSettings
from gateway.agent.controller import SiteAgent
from gateway.agent.server import build_app as build_agent_app
from gateway.agent.server import start_agent_server
from gateway.agent.slurm.settings import SlurmSettings
from gateway.clock import ManualClock
from gateway.sites.records import JobSpec
from gateway.sites.routes import (
    SITE_API_ROUTES,
    OperationHandlers,
    route_defs,
    server_route_defs,
)
from simulators.hang_guard import HANG_GUARD_S
from simulators.openapi_contract import Answered, Contract, ContractClient, ContractError
from simulators.site_controller import SimulatedSite, build_app, start_site_server
from simulators.site_fixtures import RESTORE_JOB, restore_body, simulated_site
from simulators.slurm_cluster import SlurmCluster
from tests.support.slurm import slurm_clusters
from tests.support.waiting import wait_for

__all__ = ["slurm_clusters"]  # a fixture, used by name

START_AT = datetime(2026, 6, 21, 12, tzinfo=UTC)
_SIMULATOR_OPERATIONS = [r.operation for r in SITE_API_ROUTES if "simulator" in r.served_by]
TOKEN_A = "contract-token-a"
TOKEN_B = "contract-token-b"
JSON = {"Content-Type": "application/json"}
BAD_ID = "..%2F..%2Fetc%2Fpasswd"
"""A path traversal as a percent-encoded path segment (decoded: ``../../etc/passwd``)."""
TOO_LARGE_BYTES = 1024 * 1024 + 1
"""One byte above the documented 1 MiB limit of a JSON body [bytes]."""


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load()


# ---- (a) the document --------------------------------------------------------------------


def test_rule_openapi_document_validates(contract: Contract) -> None:
    validate(dict(contract.document))
    assert contract.document["openapi"].startswith("3.1")


def test_rule_openapi_validation_catches_a_broken_document(contract: Contract) -> None:
    broken = copy.deepcopy(dict(contract.document))
    del broken["paths"]["/v1/status"]["get"]["responses"]["200"]["description"]
    with pytest.raises(OpenAPIValidationError, match="description"):
        validate(broken)


@pytest.mark.parametrize("server", ["simulator", "agent"])
def test_rule_every_served_route_is_documented(
    contract: Contract, server: str, tmp_path: Path
) -> None:
    if server == "simulator":
        app = build_app(simulated_site("probe", TOKEN_A, ManualClock(START_AT), []))
    else:
        app = build_agent_app(SiteAgent(_agent_settings("probe", TOKEN_A, tmp_path)))
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    documented = {(method, template) for method, template, _ in contract.documented(server)}
    # aiohttp serves HEAD wherever GET is served; the document lists HEAD only where it differs.
    implicit_head = {("HEAD", t) for m, t in served if m == "GET"} - documented
    assert served - implicit_head == documented


def test_rule_route_table_is_the_documents(contract: Contract) -> None:
    documented = {
        (method, route.template, operation["operationId"], frozenset(operation["x-served-by"]))
        for route in contract.routes
        for method, operation in route.operations.items()
    }
    table = {
        (route.method, route.path, route.operation, frozenset(route.served_by))
        for route in SITE_API_ROUTES
    }
    assert table == documented
    assert len({(route.method, route.path) for route in SITE_API_ROUTES}) == len(SITE_API_ROUTES)
    assert len({route.operation for route in SITE_API_ROUTES}) == len(SITE_API_ROUTES)


async def _unused_handler(request: web.Request) -> web.Response:
    raise AssertionError("not called")


@pytest.mark.parametrize(
    ("label", "operations", "problem"),
    [
        ("a served route without handler", ["getStatus"], r"missing \['reserve'"),
        ("a handler for a route not served", [*_SIMULATOR_OPERATIONS, "submitJob"], "submitJob"),
    ],
)
def test_rule_a_server_binds_every_route_it_serves_and_no_other(
    label: str, operations: list[str], problem: str
) -> None:
    bound = OperationHandlers(dict.fromkeys(operations, _unused_handler))
    with pytest.raises(ValueError, match=problem):
        server_route_defs("simulator", bound)


def test_route_defs_refuse_an_operation_the_table_does_not_hold() -> None:
    with pytest.raises(KeyError, match="getWeather"):
        route_defs(OperationHandlers({"getWeather": _unused_handler}))


# ---- the checker itself -------------------------------------------------------------------


def _status_body() -> dict[str, Any]:
    return {
        "site_id": "a",
        "at": "2026-06-21T12:00:00Z",
        "gpus_total": 8,
        "gpus_free": 8,
        "gpus_reserved": 0,
        "it_power_kw": 0.8,
        "renewable_kw": 10.0,
        "forecast_step_s": 900.0,
        "renewable_forecast_kw": [10.0],
        "jobs": [],
    }


@pytest.mark.parametrize(
    ("label", "status", "change", "problem"),
    [
        ("missing field", 200, {"gpus_free": None}, "gpus_free"),
        ("wrong type", 200, {"gpus_total": "8"}, "gpus_total"),
        ("naive timestamp", 200, {"at": "2026-06-21T12:00:00"}, "at /at:"),
        ("unknown field", 200, {"extra": 1}, "extra"),
        ("undocumented status", 204, {}, "not documented"),
    ],
)
def test_contract_checker_rejects_an_answer_the_document_forbids(
    contract: Contract, label: str, status: int, change: dict[str, Any], problem: str
) -> None:
    body = {key: value for key, value in {**_status_body(), **change}.items() if value is not None}
    raw = _json(body)
    headers = {"Content-Type": "application/json"}
    with pytest.raises(ContractError, match=problem):
        contract.check("simulator", "GET", "/v1/status", status, headers, raw)


def test_contract_checker_accepts_a_documented_answer(contract: Contract) -> None:
    raw = _json(_status_body())
    answered, body = contract.check(
        "simulator", "GET", "/v1/status", 200, {"Content-Type": "application/json"}, raw
    )
    assert answered == ("GET", "/v1/status", "200") and body["site_id"] == "a"


@pytest.mark.parametrize(
    ("label", "path", "method", "status", "code"),
    [
        ("wrong error code", "/v1/status", "GET", 401, "not_found"),
        ("no route must be 404", "/v1/nothing", "GET", 400, "bad_request"),
        ("agent-only route at the simulator", "/v1/checkpoints/m1", "PUT", 201, "x"),
        ("wrong method must be 405", "/v1/status", "POST", 404, "not_found"),
    ],
)
def test_contract_checker_rejects_wrong_errors(
    contract: Contract, label: str, path: str, method: str, status: int, code: str
) -> None:
    raw = _json({"error": code, "detail": "d"})
    with pytest.raises(ContractError):
        contract.check("simulator", method, path, status, {"Content-Type": "application/json"}, raw)


# ---- (b) the controllers answer as documented ---------------------------------------------


Settle = Callable[["ContractClient", str, str], Awaitable[dict[str, Any]]]
"""Wait until an operation (migration id, kind) at a controller is no longer in progress."""


@dataclass
class Bench:
    """Two controllers of one kind on loopback: ``a`` runs two jobs, ``b`` is empty."""

    server: str
    a: ContractClient
    b: ContractClient
    url_b: str
    token_b: str
    job_1: str
    job_2: str
    settle: Settle


def _simulator_settle(clock: ManualClock) -> Settle:
    async def settle(client: ContractClient, migration_id: str, kind: str) -> dict[str, Any]:
        path = f"/v1/operations/{migration_id}/{kind}"
        op = (await client.call("GET", path, expect=200)).body
        done_at = datetime.fromisoformat(op["done_at"])
        clock.advance(max(0.0, (done_at - clock.now()).total_seconds()))
        op = (await client.call("GET", path, expect=200)).body
        assert op["state"] != "in_progress"
        return dict(op)

    return settle


@pytest.fixture
async def simulator_bench(contract: Contract, seen: set[Answered]) -> AsyncIterator[Bench]:
    clock = ManualClock(START_AT)
    jobs = [
        JobSpec("job-1", gpus=4, power_kw=2.6, checkpoint_gb=12.0, work_remaining_gpu_h=40.0),
        JobSpec("job-2", gpus=2, power_kw=1.0, checkpoint_gb=6.0, work_remaining_gpu_h=40.0),
    ]
    runner_a, url_a = await start_site_server(simulated_site("site-a", TOKEN_A, clock, jobs))
    runner_b, url_b = await start_site_server(simulated_site("site-b", TOKEN_B, clock, []))
    try:
        async with aiohttp.ClientSession() as session:
            yield Bench(
                server="simulator",
                a=ContractClient(contract, "simulator", session, url_a, TOKEN_A, seen),
                b=ContractClient(contract, "simulator", session, url_b, TOKEN_B, seen),
                url_b=url_b,
                token_b=TOKEN_B,
                job_1="job-1",
                job_2="job-2",
                settle=_simulator_settle(clock),
            )
    finally:
        await runner_a.cleanup()
        await runner_b.cleanup()


@pytest.fixture
def seen() -> set[Answered]:
    return set()


EXAMPLE_COMMAND = [
    "{python}",
    "-m",
    "gateway.agent.example_job",
    "--steps",
    "10000000",
    "--out",
    "{output_dir}",
    "--checkpoint",
    "{checkpoint_path}",
    "--width",
    "4",
    "--step-sleep-s",
    "0.005",
]
"""The example job, made to run until it is checkpointed (small and slow: little CPU)."""
AGENT_SETTLE_TIMEOUT_S = 60.0
AGENT_POLL_S = 0.05


def _agent_settings(site_id: str, token: str, data_dir: Path) -> AgentSettings:
    return AgentSettings(
        site_id=site_id,
        token=token,
        gpus_total=8,
        it_power_max_kw=8.0,
        idle_kw_per_gpu=0.1,
        wan_bandwidth_gbps=10.0,
        data_dir=data_dir,
        checkpoint_timeout_s=30.0,
        stop_timeout_s=10.0,
    )


def _submission(job_id: str, gpus: int, power_kw: float) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "command": EXAMPLE_COMMAND,
        "gpus": gpus,
        "power_kw": power_kw,
        "checkpoint_gb": 0.001,
        "work_remaining_gpu_h": 40.0,
        "migratable": True,
        "flex_tier": 1,
    }


async def _agent_settle(client: ContractClient, migration_id: str, kind: str) -> dict[str, Any]:
    path = f"/v1/operations/{migration_id}/{kind}"
    deadline = asyncio.get_running_loop().time() + AGENT_SETTLE_TIMEOUT_S
    while True:
        op = (await client.call("GET", path, expect=200)).body
        if op["state"] != "in_progress":
            return dict(op)
        assert asyncio.get_running_loop().time() < deadline, f"{kind} of {migration_id}: {op}"
        await asyncio.sleep(AGENT_POLL_S)


@asynccontextmanager
async def _agents_bench(
    contract: Contract,
    seen: set[Answered],
    settings: tuple[AgentSettings, AgentSettings],
    jobs: tuple[tuple[str, int, float], ...],
) -> AsyncIterator[Bench]:
    """Agents a and b of ``settings``; ``jobs`` (id, GPUs, kW) submitted to a."""
    runner_a, url_a = await start_agent_server(settings[0])
    try:
        runner_b, url_b = await start_agent_server(settings[1])
        try:
            async with aiohttp.ClientSession() as session:
                a = ContractClient(contract, "agent", session, url_a, TOKEN_A, seen)
                b = ContractClient(contract, "agent", session, url_b, TOKEN_B, seen)
                for job_id, gpus, power_kw in jobs:
                    body = _submission(job_id, gpus, power_kw)
                    await a.call("POST", "/v1/jobs", expect=201, json_body=body)
                yield Bench(
                    server="agent",
                    a=a,
                    b=b,
                    url_b=url_b,
                    token_b=TOKEN_B,
                    job_1="job-1",
                    job_2="job-2",
                    settle=_agent_settle,
                )
        finally:
            await runner_b.cleanup()
    finally:
        await runner_a.cleanup()


@pytest.fixture
async def agent_bench(
    contract: Contract, seen: set[Answered], tmp_path: Path
) -> AsyncIterator[Bench]:
    settings = (
        _agent_settings("site-a", TOKEN_A, tmp_path / "site-a"),
        _agent_settings("site-b", TOKEN_B, tmp_path / "site-b"),
    )
    jobs = (("job-1", 4, 2.6), ("job-2", 2, 1.0))
    async with _agents_bench(contract, seen, settings, jobs) as bench:
        yield bench


@pytest.fixture
async def slurm_agent_bench(
    contract: Contract,
    seen: set[Answered],
    tmp_path: Path,
    slurm_clusters: dict[str, SlurmCluster],
) -> AsyncIterator[Bench]:
    """Agents in front of two Slurm clusters (their jobs are batch jobs; GPUs from sinfo)."""
    settings = tuple(
        _agent_settings(site_id, token, tmp_path / site_id).model_copy(
            update={
                "gpus_total": None,
                "slurm": SlurmSettings(conf_path=cluster.conf_path, poll_s=0.1),
            }
        )
        for site_id, token, cluster in (
            ("site-a", TOKEN_A, slurm_clusters["east"]),
            ("site-b", TOKEN_B, slurm_clusters["west"]),
        )
    )
    jobs = (("job-1", 1, 2.6), ("job-2", 1, 1.0))
    async with _agents_bench(contract, seen, (settings[0], settings[1]), jobs) as bench:
        # A Slurm job starts when Slurm schedules it: the scenario checkpoints the jobs only
        # once they run and handle SIGTERM (a pending job asked to checkpoint is cancelled,
        # docs/slurm.md, "Limits").
        for job_id, _, _ in jobs:
            log_path = settings[0].data_dir / "jobs" / job_id / "job.log"
            await wait_for(
                lambda path=log_path: path.exists() and "started at step 0" in path.read_text(),
                f"{job_id} started under Slurm",
                HANG_GUARD_S,
            )
        yield bench


def _request_schema(contract: Contract, method: str, template: str) -> dict[str, Any] | None:
    """The JSON request body schema of an operation (resolved one level), or None."""
    route = next(r for r in contract.routes if r.template == template)
    body = route.operations[method].get("requestBody", {}).get("content", {})
    schema = body.get("application/json", {}).get("schema")
    if schema is None:
        return None
    resolved: dict[str, Any] = contract.document["components"]["schemas"][
        schema["$ref"].rpartition("/")[2]
    ]
    return resolved


def _path_parameters(template: str) -> list[str]:
    return [part[1:-1] for part in template.split("/") if part.startswith("{")]


async def _generic_probes(contract: Contract, client: ContractClient, job_id: str) -> None:
    """The answers every operation documents the same way: 401, 400, 405, 413, 415, 404."""
    values = {"job_id": job_id, "migration_id": "contract-probe", "kind": "checkpoint"}
    await client.call("GET", "/v1/no-such-route", expect=404)
    for route in contract.routes:
        operations = contract.served(route, client.server)
        if not operations:
            continue
        path = route.template.format(**values)
        await client.call("PATCH", path, expect=405)
        for method in operations:
            await client.call(method, path, expect=401, authorize=False)
            await client.call(method, path, expect=401, token="wrong-token")
            parameters = _path_parameters(route.template)
            schema = _request_schema(contract, method, route.template)
            body: dict[str, Any] | None = {} if schema is not None else None
            for name in parameters:
                bad = route.template.format(**{**values, name: BAD_ID})
                answer = await client.call(method, bad, expect=400, json_body=body)
                if method != "HEAD":
                    assert name in answer.body["detail"], answer.body
            if schema is None:
                continue
            answer = await client.call(method, path, expect=400, json_body={})
            assert any(field in answer.body["detail"] for field in schema["required"])
            await client.call(
                method, path, expect=415, data=b"{}", headers={"Content-Type": "text/plain"}
            )
            padding = b" " * TOO_LARGE_BYTES
            await client.call(method, path, expect=413, data=b"{}" + padding, headers=JSON)


def _job_spec(status: dict[str, Any], job_id: str) -> dict[str, Any]:
    job = next(job for job in status["jobs"] if job["job_id"] == job_id)
    return {key: value for key, value in job.items() if key not in ("job_id", "state")}


async def _scenario(bench: Bench) -> None:
    """Every operation's happy path and its documented 404 and 409, on real controllers."""
    a, b, job_1, job_2 = bench.a, bench.b, bench.job_1, bench.job_2
    status = (await a.call("GET", "/v1/status", expect=200)).body
    spec = _job_spec(status, job_1)
    gpus, power_kw = spec["gpus"], spec["power_kw"]
    await a.call("GET", "/v1/operations/m-1/checkpoint", expect=404)

    reserve = {"migration_id": "m-1", "job_id": job_1, "gpus": gpus, "power_kw": power_kw}
    assert (await b.call("POST", "/v1/reservations", expect=200, json_body=reserve)).body[
        "state"
    ] == "reserved"
    await b.call("POST", "/v1/reservations", expect=200, json_body=reserve)
    await b.call("POST", "/v1/reservations", expect=409, json_body={**reserve, "gpus": gpus + 1})
    too_many = {"migration_id": "m-big", "job_id": job_1, "gpus": 1000, "power_kw": 1.0}
    await b.call("POST", "/v1/reservations", expect=409, json_body=too_many)

    m_1 = {"migration_id": "m-1"}
    await a.call("POST", "/v1/jobs/no-such-job/checkpoint", expect=404, json_body=m_1)
    await a.call("POST", f"/v1/jobs/{job_1}/checkpoint", expect=202, json_body=m_1)
    await a.call("POST", f"/v1/jobs/{job_1}/checkpoint", expect=202, json_body=m_1)
    other = {"migration_id": "m-other"}
    await a.call("POST", f"/v1/jobs/{job_1}/checkpoint", expect=409, json_body=other)
    checkpoint = (await bench.settle(a, "m-1", "checkpoint"))["checkpoint"]
    assert checkpoint is not None
    await a.call("POST", f"/v1/jobs/{job_1}/release", expect=409, json_body=m_1)

    transfer = {
        "migration_id": "m-1",
        "target_site_id": "site-b",
        "target_url": bench.url_b,
        "bandwidth_gbps": 10.0,
        "target_token": bench.token_b,
    }
    await a.call("POST", "/v1/jobs/no-such-job/transfer", expect=404, json_body=transfer)
    await a.call("POST", f"/v1/jobs/{job_1}/transfer", expect=202, json_body=transfer)
    changed = {**transfer, "bandwidth_gbps": 5.0}
    await a.call("POST", f"/v1/jobs/{job_1}/transfer", expect=409, json_body=changed)
    assert (await bench.settle(a, "m-1", "transfer"))["state"] == "done"

    restore = {
        "migration_id": "m-1",
        "source_site_id": "site-a",
        "checkpoint": checkpoint,
        "job": spec,
    }
    unreserved = {**restore, "migration_id": "m-unreserved"}
    await b.call("POST", f"/v1/jobs/{job_1}/restore", expect=409, json_body=unreserved)
    await b.call("POST", f"/v1/jobs/{job_1}/restore", expect=202, json_body=restore)
    assert (await bench.settle(b, "m-1", "restore"))["state"] == "done"
    released = await a.call("POST", f"/v1/jobs/{job_1}/release", expect=200, json_body=m_1)
    assert released.body == {"job_id": job_1, "state": "released"}
    await a.call("POST", f"/v1/jobs/{job_1}/release", expect=200, json_body=m_1)

    # An abort: job 2 is checkpointed, its GPUs are taken, then freed, then it resumes.
    m_2 = {"migration_id": "m-2"}
    await a.call("POST", "/v1/jobs/no-such-job/resume", expect=404, json_body=m_2)
    await a.call("POST", f"/v1/jobs/{job_2}/checkpoint", expect=202, json_body=m_2)
    await bench.settle(a, "m-2", "checkpoint")
    free = (await a.call("GET", "/v1/status", expect=200)).body["gpus_free"]
    hold = {"migration_id": "m-hold", "job_id": "other-job", "gpus": free, "power_kw": 0.0}
    await a.call("POST", "/v1/reservations", expect=200, json_body=hold)
    await a.call("POST", f"/v1/jobs/{job_2}/resume", expect=409, json_body=m_2)
    await a.call("DELETE", "/v1/reservations/m-hold", expect=200)
    resumed = await a.call("POST", f"/v1/jobs/{job_2}/resume", expect=200, json_body=m_2)
    assert resumed.body["state"] == "running"

    await b.call("DELETE", "/v1/reservations/m-1", expect=200)
    await b.call("DELETE", "/v1/reservations/m-never", expect=200)
    late = {"migration_id": "m-never", "job_id": job_2, "gpus": 1, "power_kw": 0.5}
    answer = await b.call("POST", "/v1/reservations", expect=200, json_body=late)
    assert answer.body["state"] == "released"


def _missing(contract: Contract, server: str, seen: set[Answered]) -> list[Answered]:
    return sorted(contract.documented(server) - seen)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    """A body sent chunked (no Content-Length), as a cut upload's first part arrives."""
    yield data


async def _agent_only_routes(bench: Bench) -> None:
    """Job submission, manifests and the checkpoint upload, at real agents."""
    a, b = bench.a, bench.b
    again = _submission(bench.job_2, 1, 0.1)
    await a.call("POST", "/v1/jobs", expect=409, json_body=again)
    unknown_placeholder = {**_submission("job-3", 1, 0.1), "command": ["{python}", "{nope}"]}
    answer = await a.call("POST", "/v1/jobs", expect=400, json_body=unknown_placeholder)
    assert "command[1]" in answer.body["detail"]

    manifest = {"job_id": "job-9", "command": EXAMPLE_COMMAND, "source_site_id": "site-a"}
    path = "/v1/manifests/m-manifest"
    await b.call("PUT", path, expect=201, json_body=manifest)
    await b.call("PUT", path, expect=200, json_body=manifest)
    await b.call("PUT", path, expect=409, json_body={**manifest, "job_id": "job-8"})

    data = b"checkpoint bytes " * 100
    size, held = len(data), 700
    headers = {
        "X-Checkpoint-Sha256": hashlib.sha256(data).hexdigest(),
        "X-Checkpoint-Size": str(size),
    }
    path = "/v1/checkpoints/m-upload"
    await b.call("HEAD", path, expect=404)
    partial = await b.call("PUT", path, expect=202, data=_chunks(data[:held]), headers=headers)
    assert partial.body["received_bytes"] == held
    head = await b.call("HEAD", path, expect=200)
    assert (head.headers["X-Received-Bytes"], head.headers["X-Checkpoint-Complete"]) == (
        str(held),
        "false",
    )
    from_zero = {**headers, "Content-Range": f"bytes 0-{size - 1}/{size}"}
    refused = await b.call("PUT", path, expect=416, data=data, headers=from_zero)
    assert refused.headers["X-Received-Bytes"] == str(held)
    rest = {**headers, "Content-Range": f"bytes {held}-{size - 1}/{size}"}
    assert (await b.call("PUT", path, expect=201, data=data[held:], headers=rest)).body[
        "state"
    ] == "complete"
    await b.call("PUT", path, expect=200, data=data, headers=headers)
    other = {**headers, "X-Checkpoint-Sha256": "0" * 64}
    await b.call("PUT", path, expect=409, data=data, headers=other)
    await b.call("PUT", "/v1/checkpoints/m-corrupt", expect=422, data=data, headers=other)
    await b.call("HEAD", "/v1/checkpoints/m-corrupt", expect=404)
    not_hex = {**headers, "X-Checkpoint-Sha256": "zz"}
    answer = await b.call("PUT", "/v1/checkpoints/m-bad", expect=400, data=data, headers=not_hex)
    assert "X-Checkpoint-Sha256" in answer.body["detail"]
    teapot = {**headers, "Expect": "teapot"}
    await b.call("PUT", "/v1/checkpoints/m-expect", expect=417, data=data, headers=teapot)


async def _levers(bench: Bench) -> None:
    """Pause and unpause of job 2 at a (agent only), idempotent by lever id."""
    a, job = bench.a, bench.job_2
    p_1, u_1 = {"lever_id": "p-1"}, {"lever_id": "u-1"}

    async def state() -> str:
        status = (await a.call("GET", "/v1/status", expect=200)).body
        return str(next(j["state"] for j in status["jobs"] if j["job_id"] == job))

    paused = await a.call("POST", f"/v1/jobs/{job}/pause", expect=200, json_body=p_1)
    assert paused.body["state"] == "paused"
    await a.call("POST", f"/v1/jobs/{job}/pause", expect=200, json_body=p_1)
    checkpoint = {"migration_id": "m-paused"}
    await a.call("POST", f"/v1/jobs/{job}/checkpoint", expect=409, json_body=checkpoint)
    await a.call("POST", "/v1/jobs/no-such-job/pause", expect=404, json_body={"lever_id": "p-2"})
    await a.call("POST", f"/v1/jobs/{job}/unpause", expect=409, json_body=p_1)
    running = await a.call("POST", f"/v1/jobs/{job}/unpause", expect=200, json_body=u_1)
    assert running.body["state"] == "running"
    await a.call("POST", f"/v1/jobs/{job}/pause", expect=200, json_body=p_1)
    assert await state() == "running", "a repeated pause does not pause again"
    await a.call("POST", "/v1/jobs/no-such-job/unpause", expect=404, json_body=u_1)
    await a.call("POST", f"/v1/jobs/{job}/pause", expect=409, json_body=u_1)


@pytest.mark.integration
async def test_rule_simulator_answers_as_the_document_says(
    contract: Contract, simulator_bench: Bench, seen: set[Answered]
) -> None:
    await _generic_probes(contract, simulator_bench.a, simulator_bench.job_1)
    await _scenario(simulator_bench)
    assert _missing(contract, "simulator", seen) == []


@pytest.mark.integration
async def test_rule_agent_answers_as_the_document_says(
    contract: Contract, agent_bench: Bench, seen: set[Answered]
) -> None:
    await _generic_probes(contract, agent_bench.a, agent_bench.job_1)
    await _generic_probes(contract, agent_bench.b, agent_bench.job_1)
    await _scenario(agent_bench)
    await _agent_only_routes(agent_bench)
    await _levers(agent_bench)
    assert _missing(contract, "agent", seen) == []


@pytest.mark.integration
async def test_rule_slurm_controller_answers_as_the_document_says(
    contract: Contract, slurm_agent_bench: Bench, seen: set[Answered]
) -> None:
    """The site agent with ``[slurm]``: the same API and answers, its jobs Slurm batch jobs."""
    bench = slurm_agent_bench
    await _generic_probes(contract, bench.a, bench.job_1)
    await _generic_probes(contract, bench.b, bench.job_1)
    await _scenario(bench)
    await _agent_only_routes(bench)
    await _levers(bench)
    assert _missing(contract, "agent", seen) == []


# ---- (c) robustness: malformed requests ---------------------------------------------------


_RESERVE = {"migration_id": "m-1", "job_id": "job-1", "gpus": 1, "power_kw": 1.0}
_TRANSFER = {
    "migration_id": "m-1",
    "target_site_id": "site-b",
    "target_url": "http://127.0.0.1:9/",
    "bandwidth_gbps": 10.0,
}


def _raw(text: str) -> bytes:
    return text.encode()


def _json(document: object) -> bytes:
    return json.dumps(document).encode()


# fmt: off
MALFORMED: list[tuple[str, str, str, dict[str, str], bytes, int, str]] = [
    # (label, method, path, headers, body, status, what the detail names)
    ("bad JSON", "POST", "/v1/reservations", JSON, b"{nope", 400, "JSON"),
    ("truncated JSON", "POST", "/v1/reservations", JSON, b'{"migration_id": "m-1"', 400, "JSON"),
    ("empty body", "POST", "/v1/jobs/job-1/checkpoint", JSON, b"", 400, "JSON"),
    ("JSON null", "POST", "/v1/jobs/job-1/checkpoint", JSON, b"null", 400, "body"),
    ("JSON string", "POST", "/v1/jobs/job-1/resume", JSON, b'"m-1"', 400, "body"),
    ("JSON array", "POST", "/v1/jobs/job-1/release", JSON, b'["m-1"]', 400, "body"),
    ("not UTF-8", "POST", "/v1/reservations", JSON, b'{"job_id": "\xff"}', 400, "UTF-8"),
    ("nested too deeply", "POST", "/v1/reservations", JSON, b"[" * 100_000, 400, "nested"),
    ("twice the same key", "POST", "/v1/jobs/job-1/checkpoint", JSON,
     b'{"migration_id": "m-1", "migration_id": "m-2"}', 400, "migration_id"),
    # wrong types
    ("number for id", "POST", "/v1/jobs/job-1/checkpoint", JSON,
     _json({"migration_id": 5}), 400, "migration_id"),
    ("string for integer", "POST", "/v1/reservations", JSON,
     _json({**_RESERVE, "gpus": "4"}), 400, "gpus"),
    ("fraction for integer", "POST", "/v1/reservations", JSON,
     _json({**_RESERVE, "gpus": 2.5}), 400, "gpus"),
    ("bool for number", "POST", "/v1/reservations", JSON,
     _json({**_RESERVE, "power_kw": True}), 400, "power_kw"),
    ("string for bool", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(job={**RESTORE_JOB, "migratable": "yes"})), 400, "job.migratable"),
    ("list for object", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(checkpoint=[12.0, "ab"])), 400, "checkpoint"),
    ("string for object", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(job="big")), 400, "job"),
    ("number for token", "POST", "/v1/jobs/job-1/transfer", JSON,
     _json({**_TRANSFER, "target_token": 7}), 400, "target_token"),
    # missing fields
    ("missing migration id", "POST", "/v1/jobs/job-1/checkpoint", JSON, b"{}", 400,
     "migration_id"),
    ("missing job id", "POST", "/v1/reservations", JSON,
     _json({k: v for k, v in _RESERVE.items() if k != "job_id"}), 400, "job_id"),
    ("missing target url", "POST", "/v1/jobs/job-1/transfer", JSON,
     _json({k: v for k, v in _TRANSFER.items() if k != "target_url"}), 400, "target_url"),
    ("missing nested field", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(job={k: v for k, v in RESTORE_JOB.items() if k != "flex_tier"})), 400,
     "job.flex_tier"),
    ("null for field", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(source_site_id=None)), 400, "source_site_id"),
    # huge numbers
    ("float overflow", "POST", "/v1/reservations", JSON,
     _raw('{"migration_id": "m-1", "job_id": "job-1", "gpus": 1, "power_kw": 1e400}'), 400,
     "power_kw"),
    ("integer too large for a float", "POST", "/v1/reservations", JSON,
     _raw('{"migration_id": "m-1", "job_id": "job-1", "gpus": 1, "power_kw": 1' + "0" * 400
          + "}"), 400, "power_kw"),
    ("integer of 5000 digits", "POST", "/v1/reservations", JSON,
     _raw('{"migration_id": "m-1", "job_id": "job-1", "gpus": 1' + "0" * 5000
          + ', "power_kw": 1}'), 400, "JSON"),
    ("NaN", "POST", "/v1/reservations", JSON,
     _raw('{"migration_id": "m-1", "job_id": "job-1", "gpus": 1, "power_kw": NaN}'), 400,
     "power_kw"),
    ("Infinity", "POST", "/v1/jobs/job-1/transfer", JSON,
     _raw('{"migration_id": "m-1", "target_site_id": "b", "target_url": "http://b",'
          ' "bandwidth_gbps": Infinity}'), 400, "bandwidth_gbps"),
    ("tiniest bandwidth", "POST", "/v1/jobs/job-1/transfer", JSON,
     _json({**_TRANSFER, "bandwidth_gbps": 5e-324}), 400, "bandwidth_gbps"),
    ("huge checkpoint", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(checkpoint={"size_gb": 1e300, "sha256": "0" * 64})), 400,
     "checkpoint.size_gb"),
    ("huge job checkpoint", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(job={**RESTORE_JOB, "checkpoint_gb": 1e300})), 400, "job.checkpoint_gb"),
    # negative values
    ("negative GPUs", "POST", "/v1/reservations", JSON,
     _json({**_RESERVE, "gpus": -1}), 400, "gpus"),
    ("negative power", "POST", "/v1/reservations", JSON,
     _json({**_RESERVE, "power_kw": -0.5}), 400, "power_kw"),
    ("negative bandwidth", "POST", "/v1/jobs/job-1/transfer", JSON,
     _json({**_TRANSFER, "bandwidth_gbps": -10}), 400, "bandwidth_gbps"),
    ("negative work", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(job={**RESTORE_JOB, "work_remaining_gpu_h": -1})), 400,
     "job.work_remaining_gpu_h"),
    ("negative flex tier", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(job={**RESTORE_JOB, "flex_tier": -1})), 400, "job.flex_tier"),
    ("negative checkpoint size", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(checkpoint={"size_gb": -1, "sha256": "0" * 64})), 400,
     "checkpoint.size_gb"),
    # unknown fields
    ("unknown field", "POST", "/v1/reservations", JSON,
     _json({**_RESERVE, "priority": 9}), 400, "priority"),
    ("unknown nested field", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(job={**RESTORE_JOB, "nodes": 2})), 400, "job.nodes"),
    ("unknown checkpoint field", "POST", "/v1/jobs/job-1/restore", JSON,
     _json(restore_body(checkpoint={"size_gb": 1.0, "sha256": "ab", "path": "/etc"})), 400,
     "checkpoint.path"),
    # wrong content type
    ("text/plain", "POST", "/v1/jobs/job-1/checkpoint", {"Content-Type": "text/plain"},
     _json({"migration_id": "m-1"}), 415, "text/plain"),
    ("form", "POST", "/v1/reservations",
     {"Content-Type": "application/x-www-form-urlencoded"}, b"gpus=4", 415, "Content-Type"),
    ("no content type", "POST", "/v1/jobs/job-1/checkpoint", {},
     _json({"migration_id": "m-1"}), 415, "Content-Type"),
    ("octet-stream", "POST", "/v1/jobs/job-1/checkpoint",
     {"Content-Type": "application/octet-stream"}, _json({"migration_id": "m-1"}), 415,
     "octet-stream"),
    ("latin-1 charset", "POST", "/v1/jobs/job-1/checkpoint",
     {"Content-Type": "application/json; charset=latin-1"}, _json({"migration_id": "m-1"}),
     415, "charset"),
    ("unknown charset", "POST", "/v1/jobs/job-1/checkpoint",
     {"Content-Type": "application/json; charset=nope"}, _json({"migration_id": "m-1"}), 415,
     "charset"),
    ("body above 1 MiB", "POST", "/v1/reservations", JSON,
     _json({**_RESERVE, "job_id": "j" * TOO_LARGE_BYTES}), 413, ""),
    # ids: traversal, bytes that are not allowed, length
    ("traversal in job id", "POST", f"/v1/jobs/{BAD_ID}/checkpoint", JSON,
     _json({"migration_id": "m-1"}), 400, "job_id"),
    ("traversal in migration id", "DELETE", f"/v1/reservations/{BAD_ID}", {}, b"", 400,
     "migration_id"),
    ("dot-dot migration id", "GET", "/v1/operations/%2E%2E/checkpoint", {}, b"", 400,
     "migration_id"),
    ("NUL in job id", "POST", "/v1/jobs/job%00-1/resume", JSON,
     _json({"migration_id": "m-1"}), 400, "job_id"),
    ("space in job id", "POST", "/v1/jobs/job%201/release", JSON,
     _json({"migration_id": "m-1"}), 400, "job_id"),
    ("traversal in body id", "POST", "/v1/reservations", JSON,
     _json({**_RESERVE, "migration_id": "../../m-1"}), 400, "migration_id"),
    ("id of 129 characters", "POST", "/v1/jobs/job-1/checkpoint", JSON,
     _json({"migration_id": "m" * 129}), 400, "migration_id"),
    ("empty id", "POST", "/v1/jobs/job-1/checkpoint", JSON,
     _json({"migration_id": ""}), 400, "migration_id"),
    ("unknown operation kind", "GET", "/v1/operations/m-1/teleport", {}, b"", 400, "kind"),
    ("file URL", "POST", "/v1/jobs/job-1/transfer", JSON,
     _json({**_TRANSFER, "target_url": "file:///etc/passwd"}), 400, "target_url"),
    ("relative URL", "POST", "/v1/jobs/job-1/transfer", JSON,
     _json({**_TRANSFER, "target_url": "site-b"}), 400, "target_url"),
    # routes and methods
    ("unknown route", "GET", "/v1/jobs", {}, b"", 404, ""),
    ("traversal out of /v1", "GET", "/v1/%2E%2E/%2E%2E/etc/passwd", {}, b"", 404, ""),
    ("wrong method", "PUT", "/v1/status", JSON, b"{}", 405, ""),
    ("agent-only route", "PUT", "/v1/checkpoints/m-1", {}, b"bytes", 404, ""),
]
# fmt: on


@pytest.fixture
async def simulator_site() -> AsyncIterator[tuple[aiohttp.ClientSession, str, SimulatedSite]]:
    jobs = [JobSpec("job-1", gpus=4, power_kw=2.6, checkpoint_gb=12.0, work_remaining_gpu_h=40.0)]
    site = simulated_site("site-a", TOKEN_A, ManualClock(START_AT), jobs)
    runner, url = await start_site_server(site)
    try:
        async with aiohttp.ClientSession() as session:
            yield session, url, site
    finally:
        await runner.cleanup()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("label", "method", "path", "headers", "body", "status", "names"),
    MALFORMED,
    ids=[case[0] for case in MALFORMED],
)
async def test_rule_malformed_requests_get_a_4xx_json_error(
    contract: Contract,
    simulator_site: tuple[aiohttp.ClientSession, str, SimulatedSite],
    caplog: pytest.LogCaptureFixture,
    label: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    names: str,
) -> None:
    session, url, site = simulator_site
    caplog.set_level(logging.ERROR)
    sent = {"Authorization": f"Bearer {TOKEN_A}", **headers}
    async with session.request(
        method,
        URL(url + path, encoded=True),
        data=body or None,
        headers=sent,
        skip_auto_headers=("Content-Type",),
    ) as response:
        raw = await response.read()
        answer_headers = response.headers.copy()
        assert response.status == status, raw[:300]
    assert b"Traceback" not in raw and b'File "' not in raw
    contract.check("simulator", method, path, response.status, answer_headers, raw)
    document = json.loads(raw)
    assert names in document["detail"], document
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the simulator failed"
    assert site.job_state("job-1") == "running", "a refused request changed the site"
    async with session.get(f"{url}/v1/status", headers=sent) as still_serving:
        assert still_serving.status == 200

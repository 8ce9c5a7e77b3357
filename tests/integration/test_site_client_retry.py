"""The site controller client's retries, its reservation probe and the transfer's
``target_token``, against a simulated site controller on loopback."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.clock import ManualClock
from gateway.errors import SiteControllerError
from gateway.sites.client import RetryPolicy, SiteControllerClient
from gateway.sites.records import JobSpec
from simulators.site_controller import SimulatedSite, build_app
from simulators.traces import RenewableTrace

pytestmark = pytest.mark.integration

TOKEN = "token-of-the-site"
POLICY = RetryPolicy(attempts=4, initial_s=0.1, max_s=0.3)


@dataclass
class Controller:
    clock: ManualClock
    site: SimulatedSite
    url: str
    session: aiohttp.ClientSession
    bodies: list[dict[str, Any]]
    """JSON bodies of the transfer requests, as received."""
    sleeps: list[float] = field(default_factory=list)

    def client(self, retry: RetryPolicy = POLICY, url: str | None = None) -> SiteControllerClient:
        async def record(delay_s: float) -> None:
            self.sleeps.append(delay_s)

        return SiteControllerClient(
            "site",
            url or self.url,
            TOKEN,
            self.session,
            timeout_s=2.0,
            retry=retry,
            rng=random.Random(7),
            sleep=record,
        )


@pytest.fixture
async def controller() -> AsyncIterator[Controller]:
    clock = ManualClock(datetime(2026, 6, 21, tzinfo=UTC))
    site = SimulatedSite(
        site_id="site",
        token=TOKEN,
        clock=clock,
        trace=RenewableTrace.constant(5.0),
        gpus_total=4,
        it_power_max_kw=4.0,
        jobs=[JobSpec("job-1", 1, 0.6, 2.0, 10.0)],
    )
    app = build_app(site)
    bodies: list[dict[str, Any]] = []

    async def capture(request: web.Request, _response: web.StreamResponse) -> None:
        if request.path.endswith("/transfer"):
            bodies.append(await request.json())

    app.on_response_prepare.append(capture)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        yield Controller(clock, site, f"http://{host}:{port}", session, bodies)
    await runner.cleanup()


def _assert_backoff(sleeps: list[float]) -> None:
    """Doubling from initial_s up to max_s, each varied by +-50 % and never above max_s."""
    for n, delay_s in enumerate(sleeps):
        base_s = min(POLICY.initial_s * 2**n, POLICY.max_s)
        assert 0.5 * base_s <= delay_s <= min(1.5 * base_s, POLICY.max_s), (n, delay_s)


async def test_transient_failures_are_retried_with_backoff_until_an_answer(
    controller: Controller,
) -> None:
    controller.site.fail_next("status", count=3)
    status = await controller.client().status()
    assert status.site_id == "site"
    assert len(controller.sleeps) == 3
    _assert_backoff(controller.sleeps)


async def test_retries_are_bounded_then_the_error_is_transient(controller: Controller) -> None:
    controller.site.fail_next("status", count=10)
    with pytest.raises(SiteControllerError) as error:
        await controller.client().status()
    assert (error.value.status, error.value.transient) == (503, True)
    assert "gave up after 4 attempts" in str(error.value)
    assert len(controller.sleeps) == POLICY.attempts - 1
    _assert_backoff(controller.sleeps)


async def test_an_unreachable_controller_is_retried(controller: Controller) -> None:
    probe = web.AppRunner(web.Application())
    await probe.setup()
    await web.TCPSite(probe, "127.0.0.1", 0).start()
    host, port = probe.addresses[0][:2]
    await probe.cleanup()  # nothing listens there now
    with pytest.raises(SiteControllerError) as error:
        await controller.client(url=f"http://{host}:{port}").status()
    assert (error.value.status, error.value.transient) == (None, True)
    assert len(controller.sleeps) == POLICY.attempts - 1


@pytest.mark.parametrize("status", [400, 401, 404, 409])
async def test_4xx_answers_are_not_retried(controller: Controller, status: int) -> None:
    controller.site.fail_next("checkpoint", status=status)
    with pytest.raises(SiteControllerError) as error:
        await controller.client().checkpoint("job-1", "m1")
    assert (error.value.status, error.value.transient) == (status, False)
    assert controller.sleeps == []
    assert controller.site.job_state("job-1") == "running", "the refused call did nothing"


async def test_a_lost_answer_is_retried_and_the_repeat_does_nothing_twice(
    controller: Controller,
) -> None:
    controller.site.fail_next("checkpoint", lose_reply=True)
    op = await controller.client().checkpoint("job-1", "m1")
    assert (op.migration_id, op.kind, op.state) == ("m1", "checkpoint", "in_progress")
    assert list(controller.site.operations) == [("m1", "checkpoint")]
    assert len(controller.sleeps) == 1


async def test_without_a_policy_a_call_is_tried_once(controller: Controller) -> None:
    controller.site.fail_next("status")
    with pytest.raises(SiteControllerError) as error:
        await controller.client(RetryPolicy(attempts=1)).status()
    assert "gave up" not in str(error.value)
    assert controller.sleeps == []


async def test_reservation_probe_reports_each_state(controller: Controller) -> None:
    client = controller.client()
    assert await client.reservation("m1", "job-9", 2, 1.2) == "reserved"
    assert await client.reservation("m1", "job-9", 2, 1.2) == "reserved", "a repeat holds once"
    assert (await client.status()).gpus_reserved == 2
    await client.release_reservation("m1")
    assert await client.reservation("m1", "job-9", 2, 1.2) == "released"
    assert await client.reservation("m2", "job-9", 8, 1.2) is None, "8 GPUs never fit"
    with pytest.raises(SiteControllerError) as error:
        await client.reserve("m1", "job-9", 2, 1.2)
    assert (error.value.status, error.value.transient) == (409, False)


@pytest.mark.parametrize("target_token", [None, "token-of-the-target"])
async def test_transfer_carries_the_target_token_when_given(
    controller: Controller, target_token: str | None
) -> None:
    client = controller.client()
    await client.checkpoint("job-1", "m1")
    controller.clock.advance(60)  # the checkpoint is written
    await client.transfer(
        "job-1", "m1", "target", "http://127.0.0.1:9", 10.0, target_token=target_token
    )
    [body] = controller.bodies
    assert body.get("target_token") == target_token
    assert ("target_token" in body) == (target_token is not None)

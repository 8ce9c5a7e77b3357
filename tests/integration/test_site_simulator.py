"""The simulated site controller and the gateway's client, over real HTTP on loopback.

Two simulated sites share one ManualClock; nothing waits on wall time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from gateway.clock import ManualClock
from gateway.errors import SiteControllerError
from gateway.sites.client import SiteControllerClient
from gateway.sites.records import (
    Checkpoint,
    JobSpec,
    JobState,
    parse_operation,
    parse_status,
    status_to_wire,
)
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.site_fixtures import (
    CHECKPOINT_WRITE_GB_PER_S,
    EFFICIENCY,
    IDLE_KW_PER_GPU,
    RESTORE_GB_PER_S,
    RESTORE_JOB,
    restore_body,
    simulated_site,
)

START_AT = datetime(2026, 6, 21, 12, tzinfo=UTC)
TOKEN_A = "secret-token-a"
TOKEN_B = "secret-token-b"
JOB = JobSpec("j1", gpus=4, power_kw=2.6, checkpoint_gb=12.0, work_remaining_gpu_h=40.0)
CHECKPOINT_S = 12.0 / CHECKPOINT_WRITE_GB_PER_S
TRANSFER_S = 8 * 12.0 / (EFFICIENCY * 10.0)
RESTORE_S = 12.0 / RESTORE_GB_PER_S


@dataclass
class Fleet:
    clock: ManualClock
    site_a: SimulatedSite
    site_b: SimulatedSite
    url_a: str
    url_b: str
    a: SiteControllerClient
    b: SiteControllerClient
    session: aiohttp.ClientSession


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    clock = ManualClock(START_AT)
    site_a = simulated_site("nc-greensboro", TOKEN_A, clock, [JOB])
    site_b = simulated_site("fl-miami", TOKEN_B, clock, [])
    runner_a, url_a = await start_site_server(site_a)
    runner_b, url_b = await start_site_server(site_b)
    try:
        async with aiohttp.ClientSession() as session:
            yield Fleet(
                clock=clock,
                site_a=site_a,
                site_b=site_b,
                url_a=url_a,
                url_b=url_b,
                a=SiteControllerClient(site_a.site_id, url_a, TOKEN_A, session),
                b=SiteControllerClient(site_b.site_id, url_b, TOKEN_B, session),
                session=session,
            )
    finally:
        await runner_a.cleanup()
        await runner_b.cleanup()


async def _states(fleet: Fleet, job_id: str = "j1") -> tuple[JobState | None, JobState | None]:
    """The job's state at A and at B, checking the invariants on the way."""
    states: list[JobState | None] = []
    for client in (fleet.a, fleet.b):
        job = (await client.status()).job(job_id)
        states.append(None if job is None else job.state)
    assert states.count("running") <= 1, f"job runs at two sites: {states}"
    assert any(state is not None for state in states), "job is lost"
    return states[0], states[1]


async def _migrate_to_checkpointed(fleet: Fleet, migration_id: str = "m1") -> Checkpoint:
    await fleet.b.reserve(migration_id, "j1", 4, 2.6)
    await fleet.a.checkpoint("j1", migration_id)
    fleet.clock.advance(CHECKPOINT_S)
    op = await fleet.a.operation(migration_id, "checkpoint")
    assert op is not None and op.checkpoint is not None
    return op.checkpoint


# ---- the migration protocol --------------------------------------------------------------


async def test_full_migration_moves_the_job_and_never_runs_it_twice(fleet: Fleet) -> None:
    seen = [await _states(fleet)]

    await fleet.b.reserve("m1", "j1", 4, 2.6)
    status_b = await fleet.b.status()
    assert (status_b.gpus_reserved, status_b.gpus_free) == (4, 4)

    op = await fleet.a.checkpoint("j1", "m1")
    assert (op.kind, op.state, op.checkpoint) == ("checkpoint", "in_progress", None)
    assert op.expected_s == pytest.approx(CHECKPOINT_S)
    seen.append(await _states(fleet))

    fleet.clock.advance(CHECKPOINT_S)
    done = await fleet.a.operation("m1", "checkpoint")
    assert done is not None and done.state == "done" and done.checkpoint is not None
    assert done.checkpoint.size_gb == 12.0 and len(done.checkpoint.sha256) == 64
    seen.append(await _states(fleet))

    op = await fleet.a.transfer("j1", "m1", "fl-miami", fleet.url_b, 10.0)
    assert op.expected_s == pytest.approx(TRANSFER_S)
    assert op.checkpoint == done.checkpoint
    fleet.clock.advance(TRANSFER_S)
    transferred = await fleet.a.operation("m1", "transfer")
    assert transferred is not None and transferred.state == "done"
    seen.append(await _states(fleet))

    job_at_a = (await fleet.a.status()).job("j1")
    assert job_at_a is not None
    op = await fleet.b.restore(job_at_a.spec(), "m1", "nc-greensboro", done.checkpoint)
    assert op.state == "in_progress"
    assert op.expected_s == pytest.approx(RESTORE_S)
    status_b = await fleet.b.status()
    assert (status_b.gpus_reserved, status_b.gpus_free) == (0, 4)  # reservation consumed
    seen.append(await _states(fleet))

    fleet.clock.advance(RESTORE_S)
    restored = await fleet.b.operation("m1", "restore")
    assert restored is not None and restored.state == "done"
    seen.append(await _states(fleet))

    await fleet.a.release_job("j1", "m1")
    await fleet.b.release_reservation("m1")
    seen.append(await _states(fleet))

    assert seen == [
        ("running", None),
        ("checkpointing", None),
        ("checkpointed", None),
        ("checkpointed", None),
        ("checkpointed", "restoring"),
        ("checkpointed", "running"),
        (None, "running"),
    ]
    job_at_b = (await fleet.b.status()).job("j1")
    assert job_at_b is not None and job_at_b.work_remaining_gpu_h == pytest.approx(40.0)


async def test_work_restarts_when_restore_completes_not_when_asked(fleet: Fleet) -> None:
    checkpoint = await _migrate_to_checkpointed(fleet)
    await fleet.a.transfer("j1", "m1", "fl-miami", fleet.url_b, 10.0)
    fleet.clock.advance(TRANSFER_S)
    await fleet.b.restore(JOB, "m1", "nc-greensboro", checkpoint)
    fleet.clock.advance(RESTORE_S + 3600.0)
    job = (await fleet.b.status()).job("j1")
    assert job is not None and job.state == "running"
    assert job.work_remaining_gpu_h == pytest.approx(40.0 - 4 * 1.0)


# ---- idempotency -------------------------------------------------------------------------


async def test_repeated_calls_return_the_same_operation_and_reserve_once(fleet: Fleet) -> None:
    await fleet.b.reserve("m1", "j1", 4, 2.6)
    await fleet.b.reserve("m1", "j1", 4, 2.6)
    assert (await fleet.b.status()).gpus_reserved == 4

    first = await fleet.a.checkpoint("j1", "m1")
    assert await fleet.a.checkpoint("j1", "m1") == first
    fleet.clock.advance(CHECKPOINT_S + 5.0)
    again = await fleet.a.checkpoint("j1", "m1")
    assert (again.state, again.started_at, again.done_at) == (
        "done",
        first.started_at,
        first.done_at,
    )
    assert fleet.site_a.job_state("j1") == "checkpointed"

    assert again.checkpoint is not None
    await fleet.a.transfer("j1", "m1", "fl-miami", fleet.url_b, 10.0)
    fleet.clock.advance(TRANSFER_S)
    restore = await fleet.b.restore(JOB, "m1", "nc-greensboro", again.checkpoint)
    fleet.clock.advance(RESTORE_S)
    repeated = await fleet.b.restore(JOB, "m1", "nc-greensboro", again.checkpoint)
    assert (repeated.started_at, repeated.state) == (restore.started_at, "done")
    await fleet.b.reserve("m1", "j1", 4, 2.6)  # consumed: still fine, reserves nothing
    status_b = await fleet.b.status()
    assert (status_b.gpus_reserved, len(status_b.jobs)) == (0, 1)


async def test_same_migration_id_with_other_arguments_is_a_conflict(fleet: Fleet) -> None:
    fleet.site_a.add_job(
        JobSpec("j2", gpus=2, power_kw=1.3, checkpoint_gb=5.0, work_remaining_gpu_h=9.0)
    )
    await fleet.b.reserve("m1", "j1", 4, 2.6)
    with pytest.raises(SiteControllerError) as reserve_error:
        await fleet.b.reserve("m1", "j1", 2, 2.6)
    await fleet.a.checkpoint("j1", "m1")
    with pytest.raises(SiteControllerError) as checkpoint_error:
        await fleet.a.checkpoint("j2", "m1")
    for error in (reserve_error.value, checkpoint_error.value):
        assert (error.status, error.transient) == (409, False)
        assert "other arguments" in str(error)
    assert fleet.site_a.job_state("j2") == "running"


# ---- capacity and refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "gpus", "power_kw", "why"),
    [("too many GPUs", 9, 1.0, "GPUs free"), ("over the power cap", 4, 9.0, "kW committed")],
)
async def test_reserve_is_409_when_capacity_lacks(
    fleet: Fleet, label: str, gpus: int, power_kw: float, why: str
) -> None:
    with pytest.raises(SiteControllerError) as error:
        await fleet.b.reserve("m1", "j1", gpus, power_kw)
    assert (error.value.status, error.value.transient) == (409, False)
    assert why in str(error.value)
    assert (await fleet.b.status()).gpus_reserved == 0


async def test_reservations_count_against_capacity(fleet: Fleet) -> None:
    await fleet.b.reserve("m1", "j1", 6, 3.0)
    with pytest.raises(SiteControllerError) as error:
        await fleet.b.reserve("m2", "j9", 4, 1.0)
    assert error.value.status == 409


async def test_restore_without_a_reservation_is_409(fleet: Fleet) -> None:
    checkpoint = Checkpoint(size_gb=12.0, sha256="0" * 64)
    with pytest.raises(SiteControllerError) as error:
        await fleet.b.restore(JOB, "m1", "nc-greensboro", checkpoint)
    assert (error.value.status, error.value.transient) == (409, False)
    assert fleet.site_b.job_state("j1") is None


async def test_transfer_needs_a_checkpointed_job(fleet: Fleet) -> None:
    with pytest.raises(SiteControllerError) as error:
        await fleet.a.transfer("j1", "m1", "fl-miami", fleet.url_b, 10.0)
    assert error.value.status == 409
    with pytest.raises(SiteControllerError) as missing:
        await fleet.a.checkpoint("nope", "m1")
    assert (missing.value.status, missing.value.transient) == (404, False)


# ---- abort, resume, release --------------------------------------------------------------


async def test_resume_during_checkpoint_fails_the_operation(fleet: Fleet) -> None:
    await fleet.a.checkpoint("j1", "m1")
    fleet.clock.advance(CHECKPOINT_S / 2)
    await fleet.a.resume("j1", "m1")
    assert await _states(fleet) == ("running", None)
    op = await fleet.a.operation("m1", "checkpoint")
    assert op is not None and op.state == "failed" and op.error is not None
    fleet.clock.advance(CHECKPOINT_S)
    assert fleet.site_a.job_state("j1") == "running"


async def test_resume_after_checkpoint_and_during_transfer(fleet: Fleet) -> None:
    await _migrate_to_checkpointed(fleet)
    await fleet.a.transfer("j1", "m1", "fl-miami", fleet.url_b, 10.0)
    await fleet.a.resume("j1", "m1")
    await fleet.b.release_reservation("m1")
    assert await _states(fleet) == ("running", None)
    transfer = await fleet.a.operation("m1", "transfer")
    assert transfer is not None and transfer.state == "failed"
    assert (await fleet.b.status()).gpus_reserved == 0
    # a repeat of the resume repeats nothing, even after a new checkpoint started
    await fleet.a.checkpoint("j1", "m2")
    await fleet.a.resume("j1", "m1")
    assert fleet.site_a.job_state("j1") == "checkpointing"


async def test_resume_is_409_when_the_gpus_were_taken(fleet: Fleet) -> None:
    await _migrate_to_checkpointed(fleet)
    await fleet.a.reserve("m9", "other", 8, 4.0)
    with pytest.raises(SiteControllerError) as error:
        await fleet.a.resume("j1", "m1")
    assert error.value.status == 409
    assert fleet.site_a.job_state("j1") == "checkpointed"


async def test_release_reservation_is_idempotent_and_final(fleet: Fleet) -> None:
    await fleet.b.reserve("m1", "j1", 4, 2.6)
    await fleet.b.release_reservation("m1")
    await fleet.b.release_reservation("m1")
    await fleet.b.release_reservation("never-reserved")
    assert (await fleet.b.status()).gpus_free == 8
    for migration_id in ("m1", "never-reserved"):
        with pytest.raises(SiteControllerError) as error:
            await fleet.b.reserve(migration_id, "j1", 4, 2.6)
        assert (error.value.status, error.value.transient) == (409, False)
    assert (await fleet.b.status()).gpus_reserved == 0


async def test_release_job_only_after_its_transfer(fleet: Fleet) -> None:
    with pytest.raises(SiteControllerError) as running:
        await fleet.a.release_job("j1", "m1")
    assert running.value.status == 409
    await _migrate_to_checkpointed(fleet)
    with pytest.raises(SiteControllerError) as not_sent:
        await fleet.a.release_job("j1", "m1")
    assert not_sent.value.status == 409
    await fleet.a.transfer("j1", "m1", "fl-miami", fleet.url_b, 10.0)
    fleet.clock.advance(TRANSFER_S)
    await fleet.a.release_job("j1", "m1")
    await fleet.a.release_job("j1", "m1")
    assert fleet.site_a.job_state("j1") is None


# ---- time and power ----------------------------------------------------------------------


async def test_jobs_progress_and_finish_with_the_clock(fleet: Fleet) -> None:
    fleet.site_b.add_job(
        JobSpec("short", gpus=4, power_kw=2.4, checkpoint_gb=3.0, work_remaining_gpu_h=2.0)
    )
    fleet.clock.advance(15 * 60)
    job = (await fleet.b.status()).job("short")
    assert job is not None and job.state == "running"
    assert job.work_remaining_gpu_h == pytest.approx(1.0)
    fleet.clock.advance(60 * 60)
    status = await fleet.b.status()
    job = status.job("short")
    assert job is not None and (job.state, job.work_remaining_gpu_h) == ("finished", 0.0)
    assert status.gpus_free == 8
    assert status.it_power_kw == pytest.approx(8 * IDLE_KW_PER_GPU)


async def test_power_accounting_follows_job_states(fleet: Fleet) -> None:
    running_kw = 2.6 + 4 * IDLE_KW_PER_GPU
    all_idle_kw = 8 * IDLE_KW_PER_GPU
    status = await fleet.a.status()
    assert status.it_power_kw == pytest.approx(running_kw)
    assert (status.gpus_free, status.renewable_kw) == (4, 10.0)
    await fleet.a.checkpoint("j1", "m1")
    status = await fleet.a.status()  # checkpointing: the job's GPUs are held but idle
    assert status.it_power_kw == pytest.approx(all_idle_kw)
    assert status.gpus_free == 4
    fleet.clock.advance(CHECKPOINT_S)
    status = await fleet.a.status()  # checkpointed: the GPUs are free
    assert status.it_power_kw == pytest.approx(all_idle_kw)
    assert status.gpus_free == 8
    await fleet.a.resume("j1", "m1")
    assert (await fleet.a.status()).it_power_kw == pytest.approx(running_kw)
    await fleet.b.reserve("m2", "j1", 4, 2.6)
    status_b = await fleet.b.status()  # reserved GPUs draw idle power until the restore
    assert status_b.it_power_kw == pytest.approx(all_idle_kw)
    assert status_b.gpus_free == 4


async def test_status_carries_a_day_of_forecast(fleet: Fleet) -> None:
    status = await fleet.a.status()
    assert status.at == START_AT
    assert status.forecast_step_s == 900.0
    assert len(status.renewable_forecast_kw) == 96
    assert status.renewable_forecast_kw[0] == status.renewable_kw


async def test_unknown_operation_is_none(fleet: Fleet) -> None:
    assert await fleet.a.operation("m404", "transfer") is None


# ---- faults and transport errors ---------------------------------------------------------


async def test_fail_next_gives_a_transient_error_then_recovers(fleet: Fleet) -> None:
    fleet.site_a.fail_next("status", count=2)
    for _ in range(2):
        with pytest.raises(SiteControllerError) as error:
            await fleet.a.status()
        assert (error.value.status, error.value.transient) == (503, True)
    assert (await fleet.a.status()).site_id == "nc-greensboro"


async def test_lost_reply_then_retry_reserves_once(fleet: Fleet) -> None:
    fleet.site_b.fail_next("reserve", lose_reply=True)
    with pytest.raises(SiteControllerError) as error:
        await fleet.b.reserve("m1", "j1", 4, 2.6)
    assert error.value.transient
    await fleet.b.reserve("m1", "j1", 4, 2.6)
    assert (await fleet.b.status()).gpus_reserved == 4


async def test_unreachable_controller_is_transient(fleet: Fleet) -> None:
    site = simulated_site("gone", "t", fleet.clock, [])
    runner, url = await start_site_server(site)
    await runner.cleanup()
    client = SiteControllerClient("gone", url, "t", fleet.session, timeout_s=2.0)
    with pytest.raises(SiteControllerError) as error:
        await client.status()
    assert (error.value.status, error.value.transient) == (None, True)


async def test_wrong_site_id_is_a_configuration_error(fleet: Fleet) -> None:
    client = SiteControllerClient("somewhere-else", fleet.url_a, TOKEN_A, fleet.session)
    with pytest.raises(SiteControllerError) as error:
        await client.status()
    assert not error.value.transient


# ---- authentication and bad requests ------------------------------------------------------


async def test_missing_or_wrong_token_is_401(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    async with fleet.session.get(f"{fleet.url_a}/v1/status") as response:
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"
    caplog.set_level(logging.DEBUG)
    client = SiteControllerClient("nc-greensboro", fleet.url_a, TOKEN_B, fleet.session)
    with pytest.raises(SiteControllerError) as error:
        await client.status()
    assert (error.value.status, error.value.transient) == (401, False)
    assert TOKEN_B not in str(error.value) and TOKEN_B not in caplog.text
    assert TOKEN_B not in repr(client)


@pytest.mark.parametrize(
    ("label", "method", "path", "body", "field"),
    [
        ("not JSON", "POST", "/v1/reservations", b"{nope", "JSON"),
        ("not an object", "POST", "/v1/reservations", b"[1, 2]", "body"),
        (
            "missing field",
            "POST",
            "/v1/reservations",
            {"migration_id": "m1", "job_id": "j1", "power_kw": 1.0},
            "gpus",
        ),
        (
            "string for integer",
            "POST",
            "/v1/reservations",
            {"migration_id": "m1", "job_id": "j1", "gpus": "4", "power_kw": 1.0},
            "gpus",
        ),
        (
            "bool for number",
            "POST",
            "/v1/reservations",
            {"migration_id": "m1", "job_id": "j1", "gpus": 4, "power_kw": True},
            "power_kw",
        ),
        (
            "empty migration id",
            "POST",
            "/v1/jobs/j1/checkpoint",
            {"migration_id": ""},
            "migration_id",
        ),
        (
            "zero bandwidth",
            "POST",
            "/v1/jobs/j1/transfer",
            {
                "migration_id": "m1",
                "target_site_id": "b",
                "target_url": "http://b",
                "bandwidth_gbps": 0,
            },
            "bandwidth_gbps",
        ),
        (
            "nested job field",
            "POST",
            "/v1/jobs/j1/restore",
            restore_body(job={**RESTORE_JOB, "gpus": 2.5}),
            "job.gpus",
        ),
        (
            "nested checkpoint field",
            "POST",
            "/v1/jobs/j1/restore",
            restore_body(checkpoint={"size_gb": 12.0}),
            "checkpoint.sha256",
        ),
        ("unknown operation kind", "GET", "/v1/operations/m1/teleport", None, "kind"),
    ],
)
async def test_malformed_requests_are_400_naming_the_field(
    fleet: Fleet, label: str, method: str, path: str, body: object, field: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN_A}", "Content-Type": "application/json"}
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with fleet.session.request(
        method, fleet.url_a + path, headers=headers, **kwargs
    ) as response:
        assert response.status == 400
        answer = await response.json()
    assert answer["error"] == "bad_request"
    assert field in answer["detail"]


async def test_unknown_route_and_method_answer_json(fleet: Fleet) -> None:
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    async with fleet.session.get(f"{fleet.url_a}/v1/nothing", headers=headers) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"
    async with fleet.session.put(f"{fleet.url_a}/v1/status", headers=headers) as response:
        assert response.status == 405
        assert (await response.json())["error"] == "method_not_allowed"


# ---- the schema adapter ------------------------------------------------------------------


async def test_status_round_trips_through_the_wire(fleet: Fleet) -> None:
    status = fleet.site_a.status()
    assert parse_status(status_to_wire(status)) == status


@pytest.mark.parametrize(
    ("label", "change", "field"),
    [
        ("missing site id", {"site_id": None}, "site_id"),
        ("naive timestamp", {"at": "2026-06-21T12:00:00"}, "at"),
        (
            "bad job state",
            {"jobs": [{**RESTORE_JOB, "job_id": "j1", "state": "dancing"}]},
            "jobs[0].state",
        ),
        ("forecast not numbers", {"renewable_forecast_kw": [1.0, "x"]}, "renewable_forecast_kw[1]"),
    ],
)
async def test_malformed_status_is_a_permanent_error_naming_the_field(
    fleet: Fleet, label: str, change: dict[str, Any], field: str
) -> None:
    document = {**status_to_wire(fleet.site_a.status()), **change}
    if change.get("site_id", "") is None:
        del document["site_id"]
    with pytest.raises(SiteControllerError) as error:
        parse_status(document)
    assert not error.value.transient
    assert field in str(error.value)


def test_malformed_operation_names_the_field() -> None:
    with pytest.raises(SiteControllerError, match="expected_s"):
        parse_operation(
            {
                "migration_id": "m1",
                "kind": "checkpoint",
                "job_id": "j1",
                "state": "done",
                "started_at": "2026-06-21T12:00:00Z",
                "done_at": "2026-06-21T12:00:20Z",
                "expected_s": "20",
                "checkpoint": None,
                "error": None,
            }
        )

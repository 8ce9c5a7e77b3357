"""The campaign's stepped clock, and a simulated site driven by it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gateway.sites.records import JobSpec
from simulators.campaign_clock import SteppedClock
from simulators.site_controller import SimulatedSite
from simulators.traces import RenewableTrace

START_AT = datetime(2030, 6, 1, tzinfo=UTC)


async def test_time_moves_only_when_stepped() -> None:
    clock = SteppedClock(START_AT)
    await asyncio.sleep(0.01)
    assert clock.now() == START_AT
    assert await clock.advance(120) == START_AT + timedelta(seconds=120)
    assert clock.elapsed_s == 120


async def test_sleep_waits_for_the_steps_and_does_not_move_time() -> None:
    clock = SteppedClock(START_AT)
    sleeper = asyncio.create_task(clock.sleep(300))
    await asyncio.sleep(0)  # the sleep starts at the start
    await clock.advance(120)
    await asyncio.sleep(0)
    assert not sleeper.done()
    assert clock.now() == START_AT + timedelta(seconds=120)
    await clock.advance(180)
    await asyncio.wait_for(sleeper, timeout=1)


async def test_the_clock_does_not_run_backwards() -> None:
    clock = SteppedClock(START_AT)
    await clock.advance(60)
    with pytest.raises(ValueError, match="backwards"):
        await clock.set(START_AT)


async def test_a_simulated_site_runs_its_jobs_on_the_stepped_clock() -> None:
    clock = SteppedClock(START_AT)
    site = SimulatedSite(
        site_id="s",
        token="campaign-token",
        clock=clock,
        trace=RenewableTrace.constant(5.0),
        gpus_total=8,
        it_power_max_kw=6.0,
    )
    site.add_job(JobSpec("j", gpus=2, power_kw=1.3, checkpoint_gb=1.0, work_remaining_gpu_h=3.0))
    assert site.status().jobs[0].work_remaining_gpu_h == pytest.approx(3.0)
    await clock.advance(3600)
    assert site.status().jobs[0].work_remaining_gpu_h == pytest.approx(1.0)
    await clock.advance(1800)
    (job,) = site.status().jobs
    assert (job.state, job.work_remaining_gpu_h) == ("finished", 0.0)

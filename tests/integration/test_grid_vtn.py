"""The grid-signal VTN (simulators/grid_vtn.py): its pure parts, then the real daemon against it.

The daemon test runs ``gateway.daemon.gateway.Gateway`` on a real database (SQLite and PostgreSQL),
two aiohttp site controllers and the grid VTN (an openleadr VTN on an OS-assigned port) on a
ManualClock: the gateway's offers reach the VTN, a LOAD_DISPATCH event sized from them is
issued for a high-MOER hour and answered, the gateway sheds by migrating, and the record of
asked versus delivered comes from the gateway's own TELEMETRY_USAGE readings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock, next_midnight_utc
from gateway.daemon.gateway import Gateway
from gateway.db import unit_of_work
from gateway.errors import InputError
from gateway.settings import parse_settings
from gateway.sites.records import JobSpec
from models import Migration
from models import Offer as OfferRow
from simulators.grid_vtn import (
    MOER_PATH,
    GridVtn,
    MoerTrace,
    Outcome,
    classify,
    delivered,
    load_moer,
)
from simulators.site_controller import SimulatedSite, start_site_server
from simulators.traces import RenewableTrace
from simulators.vtn import SimulatedVtn
from tests.support.waiting import wait_for

T = datetime(2026, 6, 1, 12, tzinfo=UTC)


# -- pure parts ------------------------------------------------------------------------------

CLASSIFY = {
    "zero MOER is surplus": (0.0, "surplus"),
    "at the surplus threshold": (0.05, "surplus"),
    "just above it: neither": (0.0501, None),
    "middling: neither": (0.25, None),
    "at the curtailment threshold": (0.42, "curtailment"),
    "above it": (0.66, "curtailment"),
}


@pytest.mark.parametrize("moer,kind", CLASSIFY.values(), ids=CLASSIFY.keys())
def test_classify(moer: float, kind: str | None) -> None:
    assert classify(moer, 0.05, 0.42) == kind


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


ISSUED, START, END = at(0), at(10), at(70)
DELIVERED = {
    "shed: baseline before the issue, mean inside the hour": (
        [(at(-20), 9.0), (at(-10), 4.0), (at(0), 6.0), (at(5), 1.0), (at(10), 2.0), (at(40), 3.0)],
        Outcome(baseline_kw=5.0, during_kw=2.5, delivered_kw=-2.5, readings_during=2),
    ),
    "absorb: positive delivery": (
        [(at(-1), 2.0), (at(20), 5.0)],
        Outcome(baseline_kw=2.0, during_kw=5.0, delivered_kw=3.0, readings_during=1),
    ),
    "the event's end is exclusive, readings after the issue are not baseline": (
        [(at(-1), 2.0), (at(1), 0.0), (at(69), 4.0), (at(70), 100.0)],
        Outcome(baseline_kw=2.0, during_kw=4.0, delivered_kw=2.0, readings_during=1),
    ),
    "no reading inside the hour yet": ([(at(-1), 2.0), (at(5), 1.0)], None),
    "no baseline": ([(at(-16), 2.0), (at(20), 1.0)], None),
}


@pytest.mark.parametrize("usage,expected", DELIVERED.values(), ids=DELIVERED.keys())
def test_delivered(usage: list[tuple[datetime, float]], expected: Outcome | None) -> None:
    assert delivered(usage, ISSUED, START, END, baseline_s=900.0) == expected


def test_moer_trace_maps_simulated_time_onto_the_trace_and_wraps() -> None:
    values = np.array([0.1, 0.2, 0.3], dtype=np.float64)
    first = datetime(2001, 1, 1, tzinfo=UTC)
    trace = MoerTrace(values, first, sim_start_at=T, trace_start_at=first + timedelta(hours=1))
    assert trace.at(T) == 0.2
    assert trace.at(T + timedelta(minutes=59)) == 0.2
    assert trace.at(T + timedelta(hours=1)) == 0.3
    assert trace.at(T + timedelta(hours=2)) == 0.1  # wrapped around


def test_the_bundled_trace_is_read_per_area() -> None:
    first = datetime(2001, 1, 1, tzinfo=UTC)
    pge = load_moer("SGIP_CAISO_PGE", sim_start_at=T, trace_start_at=first)
    sce = load_moer("SGIP_CAISO_SCE", sim_start_at=T, trace_start_at=first)
    assert len(pge.values) == 8760
    # the first rows of data/traces/caiso-moer-hourly.csv.gz
    assert (pge.at(T), sce.at(T)) == (0.2454, 0.1686)
    assert pge.at(T + timedelta(hours=1)) == 0.2547
    with pytest.raises(InputError, match="MOER area 'CAISO'"):
        load_moer("CAISO", sim_start_at=T, trace_start_at=first)


def test_bad_thresholds_are_refused() -> None:
    trace = MoerTrace(np.zeros(2), T, T, T)
    vtn = SimulatedVtn(ManualClock(T))
    with pytest.raises(InputError, match="surplus_moer_kg_per_kwh must be below"):
        GridVtn(vtn, trace, surplus_moer_kg_per_kwh=0.5, curtail_moer_kg_per_kwh=0.4)
    with pytest.raises(InputError, match="dispatch_fraction"):
        GridVtn(vtn, trace, dispatch_fraction=0.0)


# -- the daemon against the grid VTN ---------------------------------------------------------

TOKENS = {"west": "token-of-west-site", "east": "token-of-east-site"}
LEAD_S = 300.0
"""The clock starts this long before the first offered hour."""


@dataclass
class World:
    clock: ManualClock
    sites: dict[str, SimulatedSite]
    grid: GridVtn
    gateway: Gateway
    sessions: sessionmaker[Session]
    hour: datetime
    """The first offered hour, a high-MOER hour of the trace."""


def first_curtailment_hour(threshold: float) -> datetime:
    """The first trace hour (in 2001) whose PG&E MOER is at least ``threshold``."""
    first = datetime(2001, 1, 1, tzinfo=UTC)
    trace = load_moer("SGIP_CAISO_PGE", sim_start_at=first, trace_start_at=first, path=MOER_PATH)
    index = int(np.flatnonzero(trace.values >= threshold)[0])
    return first + timedelta(hours=index)


@pytest.fixture
async def world(session_factory: sessionmaker[Session], database_url: str) -> AsyncIterator[World]:
    hour = next_midnight_utc(datetime.now(UTC)) + timedelta(days=1)
    clock = ManualClock(hour - timedelta(seconds=LEAD_S))
    sites = {
        site_id: SimulatedSite(
            site_id=site_id,
            token=TOKENS[site_id],
            clock=clock,
            trace=RenewableTrace.constant(kw),
            gpus_total=8,
            it_power_max_kw=6.0,
        )
        for site_id, kw in (("west", 10.0), ("east", 20.0))
    }
    # Both sites are green: the job moves only when the grid asks.
    sites["west"].add_job(JobSpec("job-1", 2, 1.3, 4.88, work_remaining_gpu_h=100.0))
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}
    for site_id, site in sites.items():
        runner, urls[site_id] = await start_site_server(site)
        runners.append(runner)
    vtn = SimulatedVtn(clock, vtn_id="GRID-VTN", poll_interval_s=1)
    await vtn.start()
    grid = GridVtn(
        vtn,
        load_moer(
            "SGIP_CAISO_PGE",
            sim_start_at=hour,
            trace_start_at=first_curtailment_hour(0.42),
        ),
        lookahead_hours=1,
    )
    settings = parse_settings(
        {
            "database": {"url": database_url},
            "planner": {"min_residence_s": 0.0, "offer_hours": 3},
            "vtn": [{"id": "grid", "url": vtn.url, "ven_name": "gateway", "report_interval_s": 1}],
            "site": [
                {
                    "id": site_id,
                    "gpus_total": 8,
                    "it_power_max_kw": 6.0,
                    "pue": 1.2,
                    "wan_bandwidth_gbps": 10.0,
                    "controller_url": url,
                    "controller_token": TOKENS[site_id],
                    "vtn": "grid",
                }
                for site_id, url in urls.items()
            ],
        },
        "test",
    )
    gateway = Gateway(settings, clock, session_factory)
    try:
        await gateway.start(schedule=False)
        yield World(clock, sites, grid, gateway, session_factory, hour)
    finally:
        await gateway.stop()
        await vtn.stop()
        for runner in runners:
            await runner.cleanup()


NET_KW = 1.3 - 2 * 0.11
"""What the 1.3 kW job on 2 GPUs takes off its site's IT load: its GPUs then draw idle power."""
OFFER_KW = NET_KW * 1.2 / (1 + 0.25)
"""What a site offers: the job's net power at PUE 1.2, less the default delivery margin (the
planner keeps 25 % over an ask, so a dispatch of the whole offer is opted in) [kW]."""


def facility_kw(site: SimulatedSite) -> float:
    return site.status().it_power_kw * 1.2


async def test_grid_vtn_dispatches_against_the_offers_and_records_what_was_delivered(
    world: World,
) -> None:
    clock, sites, grid, gateway, hour = (
        world.clock, world.sites, world.grid, world.gateway, world.hour,
    )  # fmt: skip
    vtn = grid.vtn
    assert grid.moer.at(hour) >= 0.42 > grid.moer.at(hour - timedelta(hours=1))
    await wait_for(lambda: gateway.vens[0].available, "registration")
    ven_id = gateway.vens[0].ven_id
    assert ven_id is not None
    load_before_kw = facility_kw(sites["west"])

    # A plan round moves nothing (both sites are green) and stores an offer per site and hour.
    assert await gateway.plan_once() == []
    with unit_of_work(world.sessions) as session:
        stored = {
            (row.site_id, row.interval_start_at): row for row in session.scalars(select(OfferRow))
        }
        assert len(stored) == 2 * 3
        west = stored["west", hour]
        assert west.shed_kw == pytest.approx(OFFER_KW)
        assert 0 < west.notice_s < LEAD_S
        assert stored["east", hour].absorb_kw == pytest.approx(OFFER_KW)
        shed_kw, notice_s = west.shed_kw, west.notice_s

    # The offers reach the VTN as projected readings.
    await wait_for(lambda: (ven_id, "west", hour) in grid.offers(), "the offers")
    offer = grid.offers()[ven_id, "west", hour]
    assert (offer.shed_kw, offer.notice_s) == pytest.approx((shed_kw, notice_s))
    assert grid.offers()[ven_id, "east", hour].absorb_kw == pytest.approx(OFFER_KW)
    await wait_for(lambda: grid.usage(ven_id, "west"), "usage readings")

    # The high-MOER hour gets one curtailment event, sized from the offer, for west only.
    [dispatch] = grid.step()
    assert (dispatch.kind, dispatch.resource_id, dispatch.start_at) == ("curtailment", "west", hour)
    assert dispatch.requested_kw == pytest.approx(-shed_kw)
    assert dispatch.offered_kw == pytest.approx(shed_kw)
    assert grid.step() == [], "once per site and hour"
    [issued] = vtn.issued
    assert (issued.spec.signal_name, issued.spec.signal_type) == ("LOAD_DISPATCH", "delta")
    assert issued.spec.intervals == (dispatch.requested_kw,)
    await wait_for(lambda: grid.answer(dispatch) is not None, "the opt")
    assert grid.answer(dispatch) == "optIn"

    # The gateway sheds when the hour starts (earlier would lower the baseline): it plans at
    # that instant and moves the job to east.
    await wait_for(lambda: gateway.next_plan_at is not None, "the round the optIn asked for")
    assert gateway.next_plan_at == hour
    clock.set(hour)
    await gateway.poll_once()
    assert len(await gateway.plan_once()) == 1
    for _ in range(20):
        clock.advance(10)
        await gateway.poll_once()
        if sites["east"].job_state("job-1") == "running":
            break
    assert sites["east"].job_state("job-1") == "running"
    with unit_of_work(world.sessions) as session:
        [migration] = session.scalars(select(Migration).where(Migration.job_id == "job-1"))
        assert (migration.source_site_id, migration.target_site_id) == ("west", "east")
        assert migration.event_ref == f"grid/{dispatch.event_id}"
        assert migration.checkpointing_at is not None
        assert migration.checkpointing_at.replace(tzinfo=UTC) == hour

    # Inside the hour, the VEN's telemetry says what west delivered (the readings after the
    # shed: one taken at the hour's first instant may still see the job).
    clock.advance(60)
    await gateway.poll_once()
    load_after_kw = facility_kw(sites["west"])
    after = hour + timedelta(seconds=60)
    await wait_for(
        lambda: any(at >= after for at, _ in grid.usage(ven_id, "west")), "readings in the hour"
    )
    outcome = delivered(
        grid.usage(ven_id, "west"), dispatch.issued_at, after, dispatch.end_at, grid.baseline_s
    )
    assert outcome is not None
    assert outcome.baseline_kw == pytest.approx(load_before_kw)
    assert outcome.during_kw == pytest.approx(load_after_kw)
    assert outcome.delivered_kw == pytest.approx(load_after_kw - load_before_kw)
    # The job's draw left; its GPUs now idle at the site's idle power.
    assert outcome.delivered_kw == pytest.approx(-(1.3 - 2 * 0.11) * 1.2)

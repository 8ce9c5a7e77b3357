"""The VEN's reports against a real openleadr VTN on loopback: telemetry, status and offers.

Every connected test runs on SQLite and on PostgreSQL (the ``session_factory`` fixture: the
VEN stores its registration). The VTN asks for every offered point at the fastest offered
rate (1 s here); the values come from readers the test controls.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openleadr import enums
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock
from gateway.planner.offers import SiteOffer
from gateway.settings_vtn import VtnSettings
from gateway.ven import ei_report
from gateway.ven.client import VenConnection
from gateway.ven.ei_report import REPORTS, ResourceStatus
from simulators.vtn import SimulatedVtn
from tests.integration.test_ven_tls import Pki, build_pki, ven_settings, vtn_tls
from tests.support.ven import POLL_S, SITES, VTN_ID, Planner
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

UP = enums.REPORT_TYPE.UP_REGULATION_CAPACITY_AVAILABLE
DOWN = enums.REPORT_TYPE.DOWN_REGULATION_CAPACITY_AVAILABLE


@pytest.fixture
def clock() -> ManualClock:
    """Simulated time starting at the present: openleadr judges event status on the wall."""
    return ManualClock(datetime.now(UTC))


@dataclass
class Fleet:
    """What the readers say; the tests change it while the VEN runs."""

    power_kw: dict[str, float] = field(default_factory=dict)
    status: dict[str, ResourceStatus] = field(default_factory=dict)
    offers: dict[str, tuple[SiteOffer, ...]] = field(default_factory=dict)

    def offers_of(self, site_id: str) -> tuple[SiteOffer, ...]:
        return self.offers.get(site_id, ())


@asynccontextmanager
async def connected(
    clock: ManualClock,
    session_factory: sessionmaker[Session],
    fleet: Fleet,
    settings: VtnSettings | None = None,
    vtn: SimulatedVtn | None = None,
) -> AsyncIterator[tuple[SimulatedVtn, VenConnection]]:
    own_vtn = vtn is None
    if vtn is None:
        vtn = SimulatedVtn(clock, poll_interval_s=POLL_S)
        await vtn.start()
    connection = VenConnection(
        settings or VtnSettings(id=VTN_ID, url=vtn.url, ven_name="dr-gateway-reports"),
        SITES,
        clock,
        session_factory,
        Planner(),
        fleet.power_kw.get,
        report_interval_s=1,
        status=fleet.status.get,
        offers=fleet.offers_of,
    )
    try:
        await connection.start()
        yield vtn, connection
    finally:
        await connection.stop()
        if own_vtn:
            await vtn.stop()


def offer(
    site_id: str, start_at: datetime, shed_kw: float, absorb_kw: float, notice_s: float
) -> SiteOffer:
    return SiteOffer(site_id, start_at, start_at + timedelta(hours=1), shed_kw, absorb_kw, notice_s)


def hour_after(at: datetime, hours: int = 1) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours)


# -- the table -------------------------------------------------------------------------------


def test_rule_report_rows_use_2_0b_names_types_and_reading_types() -> None:
    for point in REPORTS:
        assert point.report_name in enums.REPORT_NAME.values, point
        for value, allowed in (
            (point.report_type, enums.REPORT_TYPE.values),
            (point.reading_type, enums.READING_TYPE.values),
        ):
            assert value in allowed or value.startswith("x-"), point
    by_source = {point.source: point for point in REPORTS}
    assert by_source["status"].report_name == "TELEMETRY_STATUS"
    assert by_source["status"].report_type == enums.REPORT_TYPE.X_RESOURCE_STATUS
    for source in ("shed_kw", "absorb_kw", "notice_s"):
        assert by_source[source].reading_type == enums.READING_TYPE.PROJECTED
        assert by_source[source].reading_duration_s == 3600.0
    assert len({point.source for point in REPORTS}) == len(REPORTS), "one rID per source"


def test_rule_shedding_is_up_regulation_and_absorbing_is_down_regulation() -> None:
    """Grid convention: up-regulation raises net supply, which a load gives by shedding."""
    by_source = {point.source: point for point in REPORTS}
    assert by_source["shed_kw"].report_type == UP
    assert by_source["absorb_kw"].report_type == DOWN
    assert (by_source["notice_s"].measurement, by_source["notice_s"].unit) == ("notice", "s")


def test_a_report_whose_reader_is_missing_is_not_offered() -> None:
    only_usage = ei_report.Readers(power_kw=lambda site_id: 1.0)
    assert {p.source for p in ei_report.offered(only_usage)} == {"power_kw"}
    everything = ei_report.Readers(lambda s: 1.0, lambda s: None, lambda s: ())
    assert {p.source for p in ei_report.offered(everything)} == {p.source for p in REPORTS}


# -- over the wire ---------------------------------------------------------------------------


async def test_rule_status_reaches_the_vtn_as_oadr_payload_resource_status(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    fleet = Fleet(
        power_kw={"site-a": 40.0},
        status={
            "site-a": ResourceStatus(online=True, manual_override=False),
            "site-b": ResourceStatus(online=False, manual_override=True),
        },
    )
    async with connected(clock, session_factory, fleet) as (vtn, connection):

        def status_of(resource_id: str) -> list[tuple[bool, bool]]:
            return [
                (s.online, s.manual_override) for s in vtn.statuses if s.resource_id == resource_id
            ]

        await wait_for(lambda: status_of("site-a") and status_of("RES-B"), "both statuses")
        assert status_of("site-a")[0] == (True, False)
        assert status_of("RES-B")[0] == (False, True)
        first = vtn.statuses[0]
        assert (first.ven_id, first.at) == (connection.ven_id, clock.now())
        assert not [r for r in vtn.telemetry if r.report_name == "TELEMETRY_STATUS"], (
            "a status went out as a plain float"
        )

        fleet.status["site-a"] = ResourceStatus(online=False, manual_override=True)
        clock.advance(5)
        await wait_for(lambda: status_of("site-a")[-1] == (False, True), "the new status")
        del fleet.status["site-b"]  # unknown: no status reading, no report for site-b
        seen = len(status_of("RES-B"))
        clock.advance(5)
        await wait_for(lambda: any(s.at == clock.now() for s in vtn.statuses), "a later cycle")
        assert len(status_of("RES-B")) <= seen + 1  # at most one already in flight


async def test_offers_reach_the_vtn_as_projected_capacity_with_notice(
    clock: ManualClock, session_factory: sessionmaker[Session]
) -> None:
    h1, h2 = hour_after(clock.now()), hour_after(clock.now(), 2)
    past = hour_after(clock.now(), -1)  # ended at the top of this hour: not sent
    fleet = Fleet(
        power_kw={"site-a": 40.0},
        offers={
            "site-a": (
                offer("site-a", past, 9.0, 9.0, 9.0),
                offer("site-a", h1, 3.0, 1.5, 12.0),
                offer("site-a", h2, 2.0, 0.0, 30.0),
            )
        },
    )
    async with connected(clock, session_factory, fleet) as (vtn, _):
        # Telemetry and the projections travel in reports of their own: wait for both.
        await wait_for(
            lambda: (
                vtn.readings(report_type="x-notice")
                and vtn.readings(report_type="reading", resource_id="site-a")
            ),
            "the notice readings and site-a's telemetry",
        )

        def projected(report_type: str) -> set[tuple[datetime, float]]:
            return {(r.at, r.value) for r in vtn.readings(report_type=report_type)}

        assert projected(UP) == {(h1, 3.0), (h2, 2.0)}, "shed as up-regulation"
        assert projected(DOWN) == {(h1, 1.5), (h2, 0.0)}, "absorb as down-regulation"
        assert projected("x-notice") == {(h1, 12.0), (h2, 30.0)}
        for reading in vtn.readings(reading_type="Projected"):
            assert reading.resource_id == "site-a"  # site-b has no offers: nothing for RES-B
            assert reading.report_name == "TELEMETRY_USAGE"
            assert reading.duration_s == 3600.0
            assert reading.r_id in {"site-a-shed_kw", "site-a-absorb_kw", "site-a-notice_s"}
        units = {(r.report_type, r.measurement, r.unit) for r in vtn.readings(resource_id="site-a")}
        assert units == {
            ("reading", "RealPower", "kW"),
            (UP, "RealPower", "kW"),
            (DOWN, "RealPower", "kW"),
            ("x-notice", "notice", "s"),
        }
        usage = vtn.readings(report_type="reading")
        assert usage and {(r.at, r.value, r.reading_type) for r in usage} == {
            (clock.now(), 40.0, "Direct Read")
        }


async def test_rule_each_report_request_polls_only_its_own_points(
    clock: ManualClock, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    """openleadr shares one rID list among the requests of an oadrCreateReport; unfixed, every
    cycle logs "No callback found" once per point of the other reports."""
    fleet = Fleet(
        power_kw={"site-a": 1.0, "site-b": 2.0},
        status={"site-a": ResourceStatus(True, False), "site-b": ResourceStatus(True, False)},
        offers={"site-a": (offer("site-a", hour_after(clock.now()), 1.0, 1.0, 1.0),)},
    )
    caplog.set_level(logging.INFO, logger="openleadr")
    async with connected(clock, session_factory, fleet) as (vtn, _):
        await wait_for(lambda: len(vtn.statuses) >= 6, "three report cycles")
        await wait_for(lambda: len(vtn.readings(report_type=UP)) >= 3, "three offer cycles")
    assert not [r for r in caplog.records if "No callback found" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(Path(tmp_path_factory.mktemp("pki-reports")), "ec")


async def test_status_and_offers_are_signed_over_mutual_tls(
    clock: ManualClock, session_factory: sessionmaker[Session], pki: Pki
) -> None:
    """The status template is rendered before openleadr signs: the TLS VTN verifies both."""
    fleet = Fleet(
        status={"site-a": ResourceStatus(True, True)},
        offers={"site-a": (offer("site-a", hour_after(clock.now()), 4.0, 2.0, 60.0),)},
    )
    vtn = SimulatedVtn(clock, poll_interval_s=POLL_S, tls=vtn_tls(pki))
    await vtn.start()
    try:
        settings = ven_settings(pki, vtn.url)
        async with connected(clock, session_factory, fleet, settings, vtn):
            await wait_for(lambda: vtn.statuses, "a signed status report")
            await wait_for(lambda: vtn.readings(report_type=UP), "a signed offers report")
    finally:
        await vtn.stop()
    assert (vtn.statuses[0].online, vtn.statuses[0].manual_override) == (True, True)
    assert [r.value for r in vtn.readings(report_type=UP)][:1] == [4.0]

"""Flexibility offers per site and hour (gateway/planner/offers.py): table-driven, pure."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from gateway.feasibility import FeasibilityParams
from gateway.planner.offers import SiteOffer, first_offer_at, hourly_offers
from gateway.planner.params import PolicyParams
from gateway.planner.snapshot import JobView, SiteView, Snapshot

NOW = datetime(2026, 6, 21, 18, 10, tzinfo=UTC)
"""The first offered hour starts at 19:00: 3000 s of lead time."""
STEP_S = 900.0
IDLE_KW = 2 * 0.11
"""The idle draw of a job's 2 GPUs: what stays on a site's meter when the job leaves [kW]."""
PARAMS = PolicyParams(
    feasibility=FeasibilityParams(alpha=0.1, efficiency=0.9, network_kwh_per_gb=0.01, idle_kw=0.11),
    checkpoint_write_gb_per_s=0.5,
    restore_gb_per_s=1.0,
    delivery_margin=0.0,  # the cases check the moves' arithmetic; the margin has its own test
)


def site(
    site_id: str,
    forecast_kw: float | list[float],
    *,
    it_power_kw: float = 0.0,
    gpus_free: int = 8,
    pue: float = 1.0,
    online: bool = True,
) -> SiteView:
    forecast = (
        (float(forecast_kw),) * 48 if isinstance(forecast_kw, int | float) else tuple(forecast_kw)
    )
    return SiteView(
        site_id=site_id,
        resource_id=site_id,
        vtn_id="vtn",
        gpus_total=8,
        gpus_free=gpus_free,
        it_power_max_kw=6.0,
        it_power_kw=it_power_kw,
        pue=pue,
        wan_bandwidth_gbps=10.0,
        renewable_kw=forecast[0],
        forecast_step_s=STEP_S,
        renewable_forecast_kw=forecast,
        online=online,
    )


def job(job_id: str, site_id: str, power_kw: float = 1.0, gb: float = 5.0, **kw: object) -> JobView:
    fields: dict[str, object] = {
        "job_id": job_id,
        "site_id": site_id,
        "gpus": 2,
        "power_kw": power_kw,
        "checkpoint_gb": gb,
        "migratable": True,
        "state": "running",
        "arrived_at_site_at": NOW - timedelta(hours=2),
    }
    fields.update(kw)
    return JobView(**fields)  # type: ignore[arg-type]


# A 5 GB checkpoint: written in 10 s, sent in 8 * 5 / (0.9 * 10) = 4.44 s, restored in 5 s.
WRITE_5GB_S = 10.0
MOVE_5GB_S = 10.0 + 40.0 / 9.0 + 5.0
# 1000 GB: 2000 s + 888.9 s + 1000 s = 3888.9 s: more than the first hour's lead (3000 s),
# less than the second's (6600 s); inside alpha (0.1) of a window of 38 889 s or more.
WRITE_1000GB_S = 2000.0
MOVE_1000GB_S = 2000.0 + 8000.0 / 9.0 + 1000.0


@dataclass(frozen=True)
class Case:
    sites: tuple[SiteView, ...]
    jobs: tuple[JobView, ...]
    expected: dict[tuple[str, int], tuple[float, float, float]]
    """(site, hour index) -> (shed [kW], absorb [kW], notice [s])."""
    hours: int = 1
    overridden: frozenset[str] = field(default_factory=frozenset)


CASES = {
    "a dark site's job can leave for a green site; the green site can take it in": Case(
        sites=(site("dark", 0.0), site("sunny", 20.0)),
        jobs=(job("j1", "dark", power_kw=1.3),),
        expected={
            ("dark", 0): (1.3 - IDLE_KW, 0.0, WRITE_5GB_S),
            ("sunny", 0): (0.0, 1.3 - IDLE_KW, MOVE_5GB_S),
        },
    ),
    "no renewable window at any target: nothing to shed, absorbing still possible": Case(
        sites=(site("dark", 0.0), site("also-dark", 0.0)),
        jobs=(job("j1", "dark", power_kw=1.3),),
        expected={
            ("dark", 0): (0.0, 0.0, 0.0),
            ("also-dark", 0): (0.0, 1.3 - IDLE_KW, MOVE_5GB_S),
        },
    ),
    "a move longer than the lead time counts from the hour it can complete by": Case(
        sites=(site("dark", 0.0), site("sunny", [20.0] * 64)),  # 16 h of forecast
        jobs=(job("big", "dark", power_kw=2.0, gb=1000.0),),
        hours=2,
        expected={
            ("dark", 0): (0.0, 0.0, 0.0),
            ("sunny", 0): (0.0, 0.0, 0.0),
            # 6600 s of lead; the window from 20:15 (the first forecast step at or after
            # 20:00) is the 14 h of forecast left: 50 400 s >= 38 889 s
            ("dark", 1): (2.0 - IDLE_KW, 0.0, WRITE_1000GB_S),
            # a one-hour window allows 360 s of migration: never absorbed
            ("sunny", 1): (0.0, 0.0, 0.0),
        },
    ),
    "a target window too short for alpha: no shed": Case(
        # green for 8 h from now, then dark: from 20:15 the window is 6 h < 38 889 s
        sites=(site("dark", 0.0), site("sunny", [20.0] * 32 + [0.0] * 16)),
        jobs=(job("big", "dark", power_kw=2.0, gb=1000.0),),
        hours=2,
        expected={
            ("dark", 0): (0.0, 0.0, 0.0),
            ("sunny", 0): (0.0, 0.0, 0.0),
            ("dark", 1): (0.0, 0.0, 0.0),
            ("sunny", 1): (0.0, 0.0, 0.0),
        },
    ),
    "the renewable window must cover the target's own load and the job's": Case(
        sites=(site("dark", 0.0), site("busy", 4.0, it_power_kw=3.5)),
        jobs=(job("j1", "dark", power_kw=1.0),),
        expected={("dark", 0): (0.0, 0.0, 0.0), ("busy", 0): (0.0, 1.0 - IDLE_KW, MOVE_5GB_S)},
    ),
    "a target without free GPUs takes nothing": Case(
        sites=(site("dark", 0.0), site("full", 20.0, gpus_free=1)),
        jobs=(job("j1", "dark"),),
        expected={("dark", 0): (0.0, 0.0, 0.0), ("full", 0): (0.0, 0.0, 0.0)},
    ),
    "largest job first, while the target's IT power lasts; shed at facility power": Case(
        sites=(site("dark", 0.0, pue=1.5), site("sunny", 20.0, it_power_kw=3.5)),
        jobs=(job("small", "dark", power_kw=1.0), job("large", "dark", power_kw=2.0)),
        expected={
            # 2.5 kW of IT headroom at sunny: the 2 kW job goes, the 1 kW one no longer fits
            ("dark", 0): ((2.0 - IDLE_KW) * 1.5, 0.0, WRITE_5GB_S),
            # sunny's offer: 2.5 kW of room takes the 1 kW job then not the 2 kW one (quickest
            # first; both take equally long, so in listed order)
            ("sunny", 0): (0.0, 1.0 - IDLE_KW, MOVE_5GB_S),
        },
    ),
    "jobs that cannot move count for nothing": Case(
        sites=(site("dark", 0.0), site("sunny", 20.0)),
        jobs=(
            job("pinned", "dark", migratable=False),
            job("moving", "dark", in_flight=True),
            job("paused", "dark", state="checkpointed"),
        ),
        expected={("dark", 0): (0.0, 0.0, 0.0), ("sunny", 0): (0.0, 0.0, 0.0)},
    ),
    "a site under manual override offers zero and is no target": Case(
        sites=(site("dark", 0.0), site("sunny", 20.0), site("other", 20.0)),
        jobs=(job("j1", "dark"), job("j2", "sunny")),
        overridden=frozenset({"sunny"}),
        expected={
            ("dark", 0): (
                1.0 - IDLE_KW,
                1.0 - IDLE_KW,
                MOVE_5GB_S,
            ),  # j1 goes to other; j2 could come in
            ("sunny", 0): (0.0, 0.0, 0.0),
            ("other", 0): (0.0, 2 * (1.0 - IDLE_KW), MOVE_5GB_S),
        },
    ),
    "an offline site gets no offer and takes no job": Case(
        sites=(site("dark", 0.0), site("sunny", 20.0, online=False)),
        jobs=(job("j1", "dark"),),
        expected={("dark", 0): (0.0, 0.0, 0.0)},
    ),
    "beyond the forecast no renewable power is assumed": Case(
        sites=(site("dark", 0.0), site("short-forecast", [20.0] * 3)),
        jobs=(job("j1", "dark"),),
        expected={
            ("dark", 0): (0.0, 0.0, 0.0),
            ("short-forecast", 0): (0.0, 1.0 - IDLE_KW, MOVE_5GB_S),
        },
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hourly_offers(case: Case) -> None:
    snapshot = Snapshot(at=NOW, sites=case.sites, jobs=case.jobs)
    offers = hourly_offers(snapshot, PARAMS, case.hours, overridden=case.overridden)
    start_at = datetime(2026, 6, 21, 19, tzinfo=UTC)
    got = {}
    for offer in offers:
        k = int((offer.interval_start_at - start_at) / timedelta(hours=1))
        assert offer.interval_end_at - offer.interval_start_at == timedelta(hours=1)
        got[offer.site_id, k] = (offer.shed_kw, offer.absorb_kw, offer.notice_s)
    assert got.keys() == case.expected.keys()
    for key, expected in case.expected.items():
        assert got[key] == pytest.approx(expected), key


def test_an_offer_keeps_the_delivery_margin_so_that_a_dispatch_of_it_is_opted_in() -> None:
    case = CASES["a dark site's job can leave for a green site; the green site can take it in"]
    snapshot = Snapshot(at=NOW, sites=case.sites, jobs=case.jobs)
    with_margin = replace(PARAMS, delivery_margin=0.25)
    raw = hourly_offers(snapshot, PARAMS, case.hours)
    kept = hourly_offers(snapshot, with_margin, case.hours)
    assert any(o.shed_kw > 0 for o in raw) and any(o.absorb_kw > 0 for o in raw)
    for full, offer in zip(raw, kept, strict=True):
        assert offer.shed_kw == pytest.approx(full.shed_kw / 1.25)
        assert offer.absorb_kw == pytest.approx(full.absorb_kw / 1.25)
        assert offer.notice_s == full.notice_s


FIRST_HOUR_CASES = {
    "just after the hour": (datetime(2026, 1, 1, 10, 0, 1, tzinfo=UTC), 11),
    "on the hour: the next one": (datetime(2026, 1, 1, 10, tzinfo=UTC), 11),
    "just before the hour": (datetime(2026, 1, 1, 10, 59, 59, tzinfo=UTC), 11),
    "across midnight": (datetime(2026, 1, 1, 23, 30, tzinfo=UTC), 0),
}


@pytest.mark.parametrize("at,hour", FIRST_HOUR_CASES.values(), ids=FIRST_HOUR_CASES.keys())
def test_offers_start_at_the_first_full_hour_after_now(at: datetime, hour: int) -> None:
    start = first_offer_at(at)
    assert start > at and start.hour == hour and (start.minute, start.second) == (0, 0)


def test_one_offer_per_site_and_hour_in_order() -> None:
    snapshot = Snapshot(at=NOW, sites=(site("a", 0.0), site("b", 20.0)), jobs=())
    offers = hourly_offers(snapshot, PARAMS, 3)
    assert [(o.site_id, o.interval_start_at.hour) for o in offers] == [
        ("a", 19), ("b", 19), ("a", 20), ("b", 20), ("a", 21), ("b", 21),
    ]  # fmt: skip
    assert hourly_offers(snapshot, PARAMS, 0) == []
    with pytest.raises(ValueError, match="hours must be >= 0"):
        hourly_offers(snapshot, PARAMS, -1)


def test_offers_are_a_pure_function_of_their_inputs() -> None:
    snapshot = Snapshot(
        at=NOW, sites=(site("dark", 0.0), site("sunny", 20.0)), jobs=(job("j", "dark"),)
    )
    first = hourly_offers(snapshot, PARAMS, 4)
    assert hourly_offers(snapshot, PARAMS, 4) == first
    later = replace(snapshot, at=NOW + timedelta(hours=1))
    assert [o.interval_start_at for o in hourly_offers(later, PARAMS, 4)][::2] == [
        o.interval_start_at + timedelta(hours=1) for o in first[::2]
    ]
    assert all(isinstance(o, SiteOffer) for o in first)


def test_a_site_offers_nothing_for_the_hours_of_its_maintenance() -> None:
    first_hour = NOW.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    window = (first_hour + timedelta(hours=1, minutes=30), first_hour + timedelta(hours=2))
    snapshot = Snapshot(
        at=NOW,
        sites=(replace(site("dark", 0.0), maintenance=(window,)), site("sunny", 20.0)),
        jobs=(job("j", "dark"),),
    )
    dark = [o for o in hourly_offers(snapshot, PARAMS, 3) if o.site_id == "dark"]
    assert [o.shed_kw > 0 for o in dark] == [True, False, True]
    assert (dark[1].absorb_kw, dark[1].notice_s) == (0.0, 0.0)
    overridden = replace(snapshot, sites=(replace(site("dark", 0.0), manual_override=True),))
    assert all((o.shed_kw, o.absorb_kw) == (0.0, 0.0) for o in hourly_offers(overridden, PARAMS, 2))

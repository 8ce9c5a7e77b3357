"""Builders of the planner's inputs for the tests: a fleet snapshot's sites and jobs, a
DR event, the policy parameters; all at the fixed instant ``NOW``.

The planner's unit tests and the tests that put the planner behind a VEN build from these.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.events import DrEvent, EventInterval, EventSignal, EventTarget
from gateway.feasibility import FeasibilityParams
from gateway.planner.params import PolicyParams
from gateway.planner.signals import SignalPolicy
from gateway.planner.snapshot import JobView, SiteView, Snapshot

NOW = datetime(2026, 6, 21, 18, tzinfo=UTC)
STEP_S = 900.0
PARAMS = PolicyParams(
    feasibility=FeasibilityParams(alpha=0.1, efficiency=0.9, network_kwh_per_gb=0.01, idle_kw=0.11),
    min_residence_s=3600.0,
    min_gain_s=1800.0,
    max_migrations=4,
    horizon_s=12 * 3600.0,
    step_s=STEP_S,
)
SIGNALS = SignalPolicy()


def site(
    site_id: str,
    forecast_kw: list[float] | float,
    *,
    it_power_kw: float = 0.0,
    gpus_free: int = 16,
    bandwidth_gbps: float = 10.0,
) -> SiteView:
    if isinstance(forecast_kw, float | int):
        forecast = (float(forecast_kw),) * 48
    else:
        forecast = tuple(forecast_kw)
    return SiteView(
        site_id=site_id,
        resource_id=site_id,
        vtn_id="vtn",
        gpus_total=16,
        gpus_free=gpus_free,
        it_power_max_kw=11.0,
        it_power_kw=it_power_kw,
        pue=1.0,
        wan_bandwidth_gbps=bandwidth_gbps,
        renewable_kw=forecast[0],
        forecast_step_s=STEP_S,
        renewable_forecast_kw=forecast,
    )


def job(job_id: str, site_id: str, *, gb: float = 5.0, power_kw: float = 1.3, age_h: float = 2.0,
        gpus: int = 2, migratable: bool = True) -> JobView:  # fmt: skip
    return JobView(
        job_id=job_id,
        site_id=site_id,
        gpus=gpus,
        power_kw=power_kw,
        checkpoint_gb=gb,
        migratable=migratable,
        state="running",
        arrived_at_site_at=NOW - timedelta(hours=age_h),
    )


def event(
    name: str = "LOAD_DISPATCH",
    kind: str = "delta",
    values: tuple[float, ...] = (-3.0,),
    *,
    start_in_h: float = 1.0,
    duration_h: float = 2.0,
    resources: tuple[str, ...] = ("a",),
    test_event: bool = False,
) -> DrEvent:
    each_s = duration_h * 3600.0 / len(values)
    return DrEvent(
        vtn_id="vtn",
        event_id="e1",
        modification_number=0,
        status="far",
        market_context="oadr://ctx",
        start_at=NOW + timedelta(hours=start_in_h),
        duration_s=duration_h * 3600.0,
        signals=(
            EventSignal(
                "s1", name, kind, tuple(EventInterval(i, each_s, v) for i, v in enumerate(values))
            ),
        ),
        targets=tuple(EventTarget("resource_id", r) for r in resources),
        test_event=test_event,
    )


def fleet_for_opt(*, room_gpus: int = 16) -> Snapshot:
    return Snapshot(
        at=NOW,
        sites=(site("a", 0.0, it_power_kw=5.2), site("b", 0.0, gpus_free=room_gpus)),
        jobs=(job("j1", "a"), job("j2", "a"), job("j3", "a"), job("j4", "a")),
    )


def site_view(site_id: str, vtn_id: str = "VTN") -> SiteView:
    """A site of 8 GPUs with 4 free, at 30 kW of 60 kW and no renewable supply, as the event
    rules see it."""
    return SiteView(
        site_id=site_id,
        resource_id=site_id,
        vtn_id=vtn_id,
        gpus_total=8,
        gpus_free=4,
        it_power_max_kw=60.0,
        it_power_kw=30.0,
        pue=1.0,
        wan_bandwidth_gbps=10.0,
        renewable_kw=0.0,
        forecast_step_s=900.0,
        renewable_forecast_kw=(0.0,) * 8,
    )

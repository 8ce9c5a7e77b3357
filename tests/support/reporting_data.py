"""Builders for the reporting tests: a small fleet, site statuses, events and ledger rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.events import DrEvent, EventInterval, EventSignal, EventTarget
from gateway.settings import Settings, parse_settings
from gateway.sites.records import JobStatus, SiteStatus
from models import EnergyRollupDay, EnergyRollupHour, LedgerRow

VTN_ID = "utility"
IT_POWER_MAX_KW = 10.0
PUE = 1.25


def fleet_settings(database_url: str, site_ids: Sequence[str]) -> Settings:
    """Sites behind one VTN, each with resource id ``res-<site id>``."""
    return parse_settings(
        {
            "database": {"url": database_url},
            "vtn": [
                {
                    "id": VTN_ID,
                    "url": "http://127.0.0.1:9/OpenADR2/Simple/2.0b",
                    "ven_name": "reporting-test",
                }
            ],
            "site": [
                {
                    "id": site_id,
                    "gpus_total": 8,
                    "it_power_max_kw": IT_POWER_MAX_KW,
                    "pue": PUE,
                    "wan_bandwidth_gbps": 10.0,
                    "controller_url": f"http://127.0.0.1:9/{site_id}",
                    "controller_token": "controller-token",
                    "vtn": VTN_ID,
                    "resource_id": f"res-{site_id}",
                }
                for site_id in site_ids
            ],
        },
        "test",
    )


def site_status(site_id: str, at: datetime, it_power_kw: float, renewable_kw: float) -> SiteStatus:
    return SiteStatus(
        site_id=site_id,
        at=at,
        gpus_total=8,
        gpus_free=4,
        gpus_reserved=0,
        it_power_kw=it_power_kw,
        renewable_kw=renewable_kw,
        forecast_step_s=900.0,
        renewable_forecast_kw=(),
        jobs=(JobStatus(f"job-{site_id}", 4, 2.6, 4.0, 50.0, True, 1, "running"),),
    )


def dr_event(
    event_id: str,
    start_at: datetime,
    signal: tuple[str, str],
    intervals: Iterable[tuple[float, float]],
    *,
    sites: Sequence[str] = (),
    modification: int = 0,
    status: str = "far",
    test_event: bool = False,
    cancel_effective_at: datetime | None = None,
) -> DrEvent:
    """An event of the test VTN; ``intervals``: (duration [s], value); ``sites``: the
    site ids it targets by resource id (none: every site)."""
    spans = tuple(intervals)
    return DrEvent(
        vtn_id=VTN_ID,
        event_id=event_id,
        modification_number=modification,
        status=status,  # type: ignore[arg-type]
        market_context="http://utility.example/dr",
        start_at=start_at,
        duration_s=sum(duration for duration, _value in spans),
        signals=(
            EventSignal(
                "sig-0",
                signal[0],
                signal[1],
                tuple(EventInterval(i, d, v) for i, (d, v) in enumerate(spans)),
            ),
        ),
        targets=tuple(EventTarget("resource_id", f"res-{s}") for s in sites),
        test_event=test_event,
        cancel_effective_at=cancel_effective_at,
    )


def ledger_row(
    site_id: str, start_at: datetime, duration_s: float, load_kwh: float, renewable_kwh: float
) -> LedgerRow:
    """A ledger row with the accounting's identities (used = min of load and renewable)."""
    used = min(load_kwh, renewable_kwh)
    return LedgerRow(
        site_id=site_id,
        interval_start_at=start_at,
        interval_end_at=start_at + timedelta(seconds=duration_s),
        load_kwh=load_kwh,
        renewable_kwh=renewable_kwh,
        renewable_used_kwh=used,
        grid_kwh=load_kwh - used,
        curtailed_kwh=renewable_kwh - used,
        migration_kwh=0.0,
    )


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(at: datetime) -> datetime:
    return hour_of(at).replace(hour=0)


@dataclass
class Sums:
    """Expected sums of one site and period."""

    rows: int = 0
    load_kwh: float = 0.0
    renewable_kwh: float = 0.0
    renewable_used_kwh: float = 0.0
    grid_kwh: float = 0.0
    curtailed_kwh: float = 0.0
    migration_kwh: float = 0.0
    captured_surplus_kwh: float = 0.0
    emissions_kg: float = 0.0
    emissions_rows: int = 0


ROLLUP_FIELDS = (
    "load_kwh",
    "renewable_kwh",
    "renewable_used_kwh",
    "grid_kwh",
    "curtailed_kwh",
    "migration_kwh",
    "captured_surplus_kwh",
    "emissions_kg",
)


def stored_rollups(
    session: Session, model: type[EnergyRollupHour] | type[EnergyRollupDay]
) -> dict[tuple[str, datetime], Sums]:
    out = {}
    for row in session.scalars(select(model)):
        sums = Sums(rows=row.ledger_rows, emissions_rows=row.emissions_rows)
        for name in ROLLUP_FIELDS:
            setattr(sums, name, getattr(row, name))
        out[(row.site_id, row.period_start_at)] = sums
    return out


def group_ledger(
    rows: Iterable[LedgerRow],
    period_of: Callable[[datetime], datetime],
    in_surplus: Callable[[str, datetime], bool] | None = None,
    intensity: Callable[[str, datetime], float | None] | None = None,
) -> dict[tuple[str, datetime], Sums]:
    """Plain GROUP BY of ledger rows (in Python) by site and ``period_of(interval start)``.

    in_surplus(site_id, at): whether a surplus event addresses the site at ``at``;
    intensity(site_id, at): the carbon intensity in force [g CO2/kWh] or None.
    """
    out: dict[tuple[str, datetime], Sums] = defaultdict(Sums)
    for row in rows:
        sums = out[(row.site_id, period_of(row.interval_start_at))]
        sums.rows += 1
        for name in ROLLUP_FIELDS[:6]:
            setattr(sums, name, getattr(sums, name) + getattr(row, name))
        surplus = in_surplus is not None and in_surplus(row.site_id, row.interval_start_at)
        sums.captured_surplus_kwh += row.renewable_used_kwh + (row.grid_kwh if surplus else 0.0)
        g = None if intensity is None else intensity(row.site_id, row.interval_start_at)
        if g is not None:
            sums.emissions_kg += row.grid_kwh * g / 1000.0
            sums.emissions_rows += 1
    return dict(out)

"""Energy accounting between two samples of a site: pure functions.

Power is sampled at both ends of an interval; energy is the trapezoid of each quantity. The
renewable power used is the trapezoid of min(load, renewable), so that per interval

    renewable_used_kwh + grid_kwh      == load_kwh
    renewable_used_kwh + curtailed_kwh == renewable_kwh

hold exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class PowerSample:
    at: datetime
    load_kw: float
    """Facility power drawn [kW]."""
    renewable_kw: float
    """Renewable power the site's plant could deliver [kW]."""


@dataclass(frozen=True)
class LedgerEntry:
    site_id: str
    interval_start_at: datetime
    interval_end_at: datetime
    load_kwh: float
    renewable_kwh: float
    renewable_used_kwh: float
    grid_kwh: float
    curtailed_kwh: float
    migration_kwh: float


def ledger_entry(
    site_id: str, start: PowerSample, end: PowerSample, migration_kwh: float = 0.0
) -> LedgerEntry:
    """Energy of one site between two samples.

    migration_kwh: energy of migrations out of this site that ended in the interval [kWh];
    recorded beside the others, not added to load (the site's power already includes it).
    """
    duration_h = (end.at - start.at).total_seconds() / 3600.0
    if duration_h <= 0:
        raise ValueError(f"samples of {site_id} out of order: {start.at} .. {end.at}")
    for sample in (start, end):
        if sample.load_kw < 0 or sample.renewable_kw < 0:
            raise ValueError(f"negative power in a sample of {site_id} at {sample.at}")
    load_kwh = 0.5 * (start.load_kw + end.load_kw) * duration_h
    renewable_kwh = 0.5 * (start.renewable_kw + end.renewable_kw) * duration_h
    used_kwh = (
        0.5
        * (min(start.load_kw, start.renewable_kw) + min(end.load_kw, end.renewable_kw))
        * duration_h
    )
    return LedgerEntry(
        site_id=site_id,
        interval_start_at=start.at,
        interval_end_at=end.at,
        load_kwh=load_kwh,
        renewable_kwh=renewable_kwh,
        renewable_used_kwh=used_kwh,
        grid_kwh=load_kwh - used_kwh,
        curtailed_kwh=renewable_kwh - used_kwh,
        migration_kwh=migration_kwh,
    )

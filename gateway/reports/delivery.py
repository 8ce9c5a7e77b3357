"""What the gateway promised against what the meter saw: the delivery of opted-in events.

A utility credits what its meter sees and claws back a shortfall, so an optIn is a promise.
This module scores the promises from the delivery views (``event_delivery``, one row per event
and site, see ``docs/views.md``):

- only optIn answers count, and only where the event asked for energy (``requested_kwh`` > 0);
- per event and site the **credited** energy is what was delivered, at least 0 and at most
  what was asked: over-delivery at one site does not make up for a shortfall at another;
- an event **meets** its promise when its credited energy is at least ``threshold`` (90 %
  by default) of its request; the fleet's **energy ratio** is the credited energy of all
  opted-in events over their requested energy.

Pure arithmetic on a frame (:func:`score_events`) and one reader (:func:`read_delivery`); the
demo, the campaign and the soak all judge the fleet with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Connection

from gateway.reports.frames import event_report

THRESHOLD = 0.9
"""A promise is kept when at least this share of the requested energy is delivered [-]."""


@dataclass(frozen=True)
class EventScore:
    """One opted-in event, summed over the sites it asked."""

    vtn_id: str
    event_id: str
    requested_kwh: float
    delivered_kwh: float
    """As the meter saw it against the baseline, over-delivery included [kWh]."""
    credited_kwh: float
    """Delivered, per site at least 0 and at most what was asked there [kWh]."""
    sites: tuple[str, ...]

    @property
    def ratio(self) -> float:
        """Credited over requested [-]."""
        return self.credited_kwh / self.requested_kwh

    def met(self, threshold: float = THRESHOLD) -> bool:
        return self.ratio + 1e-9 >= threshold


@dataclass(frozen=True)
class DeliverySummary:
    events: tuple[EventScore, ...]
    threshold: float = THRESHOLD

    @property
    def opted_in(self) -> int:
        return len(self.events)

    @property
    def met(self) -> int:
        return sum(1 for e in self.events if e.met(self.threshold))

    @property
    def requested_kwh(self) -> float:
        return sum(e.requested_kwh for e in self.events)

    @property
    def credited_kwh(self) -> float:
        return sum(e.credited_kwh for e in self.events)

    @property
    def share_met(self) -> float | None:
        """Share of opted-in events that met their promise; None without any [-]."""
        return self.met / self.opted_in if self.events else None

    @property
    def energy_ratio(self) -> float | None:
        """Credited over requested energy of all opted-in events; None without any [-]."""
        return self.credited_kwh / self.requested_kwh if self.requested_kwh > 0 else None

    @property
    def short(self) -> tuple[EventScore, ...]:
        """The opted-in events that fell short of the threshold."""
        return tuple(e for e in self.events if not e.met(self.threshold))


def score_events(frame: pd.DataFrame, threshold: float = THRESHOLD) -> DeliverySummary:
    """Score the rows of a delivery view (columns ``vtn_id, event_id, site_id, opt,
    requested_kwh, delivered_kwh``; one row per event and site, or per event, site and
    interval: rows of one event add up)."""
    totals: dict[tuple[str, str], list[float]] = {}
    sites: dict[tuple[str, str], set[str]] = {}
    for row in frame.itertuples(index=False):
        requested = _number(row.requested_kwh)
        if row.opt != "optIn" or requested is None or requested <= 0:
            continue
        delivered = _number(row.delivered_kwh) or 0.0
        key = (str(row.vtn_id), str(row.event_id))
        acc = totals.setdefault(key, [0.0, 0.0, 0.0])
        acc[0] += requested
        acc[1] += delivered
        acc[2] += min(requested, max(0.0, delivered))
        sites.setdefault(key, set()).add(str(row.site_id))
    events = tuple(
        EventScore(vtn, event, req, dlv, cred, tuple(sorted(sites[vtn, event])))
        for (vtn, event), (req, dlv, cred) in totals.items()
    )
    return DeliverySummary(events, threshold)


def read_delivery(conn: Connection, threshold: float = THRESHOLD) -> DeliverySummary:
    """Score every event in the ``event_delivery`` view."""
    return score_events(event_report(conn), threshold)


def describe(summary: DeliverySummary) -> list[str]:
    """Lines for a person: each opted-in event, then the totals."""
    lines = [
        f"  {e.event_id:<12} {','.join(e.sites):<28} requested {e.requested_kwh:8.2f} kWh  "
        f"delivered {e.delivered_kwh:8.2f} kWh  credited {100 * e.ratio:6.1f} %"
        + ("" if e.met(summary.threshold) else "  SHORT")
        for e in summary.events
    ]
    if summary.share_met is None or summary.energy_ratio is None:
        return [*lines, "  no opted-in event asked for energy"]
    lines.append(
        f"  {summary.met} of {summary.opted_in} opted-in events delivered at least "
        f"{100 * summary.threshold:.0f} % of their request; "
        f"{summary.credited_kwh:.2f} of {summary.requested_kwh:.2f} kWh requested "
        f"({100 * summary.energy_ratio:.1f} %)"
    )
    return lines


def _number(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number

"""Scoring a campaign from the gateway's database: requested against delivered, per interval.

Two functions read the database; the rest is pure arithmetic on their rows.

- :func:`fetch_intervals` returns one :class:`IntervalRow` per event (latest version), site
  and signal interval, from the per-interval view ``event_interval_delivery`` (columns
  ``vtn_id, event_id, modification_number, site_id, interval_index, start_at, end_at, kind,
  requested_kw, requested_kwh, baseline_kw, baseline_kwh, actual_kwh, delivered_kwh,
  delivery_ratio, baseline_method, opt``; ``docs/views.md``).
- :func:`fetch_predictions` returns the planner's prediction per event [kW]: the
  ``event_responses.predicted_kw`` of its latest answer (``gateway.planner.opt``).

Delivered energy is at the facility meter against the view's baseline; an event-site's
credited energy is its delivered energy clipped to ``[0, requested]`` (more at one site does
not make up for less at another).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

DELIVERED_SHARE = 0.9
"""An opted-in event counts as delivered when it delivers at least this share [-]."""

EventKey = tuple[str, str]
"""(vtn_id, event_id)."""
SiteKey = tuple[str, str, str]
"""(vtn_id, event_id, site_id)."""


@dataclass(frozen=True)
class IntervalRow:
    """One interval of one event at one site (units as in ``docs/views.md``)."""

    vtn_id: str
    event_id: str
    modification_number: int
    site_id: str
    interval_index: int
    start_at: datetime | None
    end_at: datetime | None
    kind: str | None
    requested_kw: float | None
    requested_kwh: float | None
    baseline_kw: float | None
    baseline_kwh: float | None
    actual_kwh: float | None
    delivered_kwh: float | None
    delivery_ratio: float | None
    baseline_method: str | None
    opt: str | None


INTERVAL_COLUMNS = (
    "vtn_id, event_id, modification_number, site_id, interval_index, start_at, end_at, kind, "
    "requested_kw, requested_kwh, baseline_kw, baseline_kwh, actual_kwh, delivered_kwh, "
    "delivery_ratio, baseline_method, opt"
)


def fetch_intervals(connection: Connection) -> list[IntervalRow]:
    """Every interval's requested and delivered energy (``event_interval_delivery``)."""
    rows = connection.execute(
        text(f"SELECT {INTERVAL_COLUMNS} FROM event_interval_delivery")
    ).mappings()
    return [IntervalRow(**_typed(dict(r))) for r in rows]


def fetch_predictions(connection: Connection) -> dict[SiteKey, float]:
    """The planner's predicted delivery of each event at its latest answer that has one,
    keyed (vtn_id, event_id, "*") [kW]."""
    rows = connection.execute(
        text(
            """
            SELECT e.vtn_id, e.event_id, r.predicted_kw
            FROM event_responses AS r JOIN events AS e ON e.id = r.event_pk
            WHERE r.predicted_kw IS NOT NULL
            ORDER BY e.vtn_id, e.event_id, e.modification_number, r.responded_at, r.id
            """
        )
    ).all()
    return {(vtn_id, event_id, "*"): float(kw) for vtn_id, event_id, kw in rows}


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    for name in ("start_at", "end_at"):
        value = row.get(name)
        if isinstance(value, str):
            row[name] = datetime.fromisoformat(value)
    row["modification_number"] = int(row["modification_number"])
    row["interval_index"] = int(row["interval_index"])
    return row


# --- pure scoring ------------------------------------------------------------------------


@dataclass(frozen=True)
class EventScore:
    """One event (latest version) over all its sites and intervals.

    requested_kwh, delivered_kwh, credited_kwh [kWh]; predicted_kw: the planner's predicted
    delivery at its latest answer [kW]; None where not known.
    """

    vtn_id: str
    event_id: str
    modification_number: int
    kind: str | None
    opt: str | None
    sites: int
    intervals: int
    requested_kwh: float
    delivered_kwh: float | None
    credited_kwh: float | None
    predicted_kw: float | None

    @property
    def ratio(self) -> float | None:
        if self.delivered_kwh is None or self.requested_kwh <= 0:
            return None
        return self.delivered_kwh / self.requested_kwh


@dataclass(frozen=True)
class Scores:
    """The campaign's figures (see :func:`score`)."""

    events_issued: int
    events_scored: int
    opted_in: int
    opted_out: int
    unanswered: int
    nothing_requested: int
    """Events asking for no energy (cancelled before their start) [count]."""
    unmeasured: int
    """Opted-in events with a request the ledger did not cover [count]."""
    delivered_90: int
    """Opted-in events delivering at least 90 % of their request [count]."""
    delivered_90_share: float | None
    requested_kwh: float
    delivered_kwh: float
    credited_kwh: float
    energy_share: float | None
    """Credited over requested energy of the measured opted-in events [-]."""
    opted_out_deliverable: int
    """Opted-out events whose request the fleet's flexible power at the start covered."""
    opted_out_estimated: int
    events: tuple[EventScore, ...]


def event_scores(
    rows: Iterable[IntervalRow], predictions: Mapping[SiteKey, float]
) -> list[EventScore]:
    """Sum each event's interval rows (latest modification only) over its sites."""
    latest: dict[EventKey, int] = {}
    grouped: dict[EventKey, list[IntervalRow]] = defaultdict(list)
    for row in rows:
        grouped[row.vtn_id, row.event_id].append(row)
        key = (row.vtn_id, row.event_id)
        latest[key] = max(latest.get(key, row.modification_number), row.modification_number)
    out = []
    for key, event_rows in sorted(grouped.items()):
        current = [r for r in event_rows if r.modification_number == latest[key]]
        by_site: dict[str, list[IntervalRow]] = defaultdict(list)
        for r in current:
            by_site[r.site_id].append(r)
        requested_kwh = sum(r.requested_kwh or 0.0 for r in current)
        delivered: float | None = 0.0
        credited: float | None = 0.0
        for site_rows in by_site.values():
            site_requested = sum(r.requested_kwh or 0.0 for r in site_rows)
            if site_requested <= 0:
                continue
            if any(r.delivered_kwh is None for r in site_rows if r.requested_kwh):
                delivered = credited = None
                break
            site_delivered = sum(r.delivered_kwh or 0.0 for r in site_rows)
            assert delivered is not None and credited is not None
            delivered += site_delivered
            credited += min(max(site_delivered, 0.0), site_requested)
        named = [predictions[(*key, s)] for s in by_site if (*key, s) in predictions]
        predicted = predictions.get((*key, "*"), sum(named) if named else None)
        kinds = {r.kind for r in current if r.kind}
        out.append(
            EventScore(
                vtn_id=key[0],
                event_id=key[1],
                modification_number=latest[key],
                kind=kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None),
                opt=next((r.opt for r in current if r.opt), None),
                sites=len(by_site),
                intervals=len(current),
                requested_kwh=requested_kwh,
                delivered_kwh=delivered,
                credited_kwh=credited,
                predicted_kw=predicted,
            )
        )
    return out


def score(
    events: Sequence[EventScore],
    issued: int,
    deliverable: Mapping[str, bool],
    answered: Collection[str] | None = None,
) -> Scores:
    """The campaign's figures.

    events: from :func:`event_scores`; issued: events the VTN issued [count];
    deliverable: per event id, whether the fleet's flexible power at the event's start
    covered its request (the engine's estimate); events missing from it are not estimated;
    answered: the ids of the events the gateway answered (None: those in ``events``). An
    answered event the delivery view has no row for (cancelled before its start) asked for
    nothing.
    """
    answered_ids = (
        {e.event_id for e in events if e.opt is not None} if answered is None else set(answered)
    )
    opted_in = [e for e in events if e.opt == "optIn"]
    opted_out = [e for e in events if e.opt == "optOut"]
    asked = [e for e in opted_in if e.requested_kwh > 0]
    measured = [e for e in asked if e.delivered_kwh is not None]
    good = [e for e in measured if (e.ratio or 0.0) >= DELIVERED_SHARE - 1e-9]
    requested_kwh = sum(e.requested_kwh for e in measured)
    delivered_kwh = sum(e.delivered_kwh or 0.0 for e in measured)
    credited_kwh = sum(e.credited_kwh or 0.0 for e in measured)
    estimated = [e for e in opted_out if e.event_id in deliverable]
    return Scores(
        events_issued=issued,
        events_scored=len(events),
        opted_in=len(opted_in),
        opted_out=len(opted_out),
        unanswered=issued - len(answered_ids),
        nothing_requested=sum(1 for e in events if e.requested_kwh <= 0)
        + len(answered_ids - {e.event_id for e in events}),
        unmeasured=len(asked) - len(measured),
        delivered_90=len(good),
        delivered_90_share=len(good) / len(measured) if measured else None,
        requested_kwh=requested_kwh,
        delivered_kwh=delivered_kwh,
        credited_kwh=credited_kwh,
        energy_share=credited_kwh / requested_kwh if requested_kwh > 0 else None,
        opted_out_deliverable=sum(1 for e in estimated if deliverable[e.event_id]),
        opted_out_estimated=len(estimated),
        events=tuple(events),
    )

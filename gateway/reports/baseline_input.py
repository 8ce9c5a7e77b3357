"""What ``gateway.baselines`` needs, read from the database: a site's ledger, the windows of
the events that address it, and a market context's programme.

The planner predicts an event's baseline with these before it answers; the report view
``event_interval_delivery`` computes the same baseline in SQL from the same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, column, select, table

from gateway.baselines import (
    BASELINE_METHODS,
    DAY_S,
    LEDGER_ROW_LOOKBACK_S,
    BaselineMethod,
    BaselineParams,
    LedgerSpan,
    spans_from_ledger,
)
from gateway.planner.signals import ANY_MARKET_CONTEXT
from models import LedgerRow, ProgrammeRow

EVENT_SITE_WINDOWS = table(
    "event_site_windows", column("site_id"), column("start_s"), column("stop_s")
)
"""The view (revision 0005): each event's latest version per site, with its period [s]."""


def ledger_spans(
    conn: Connection, site_id: str, event_start_at: datetime, params: BaselineParams
) -> tuple[LedgerSpan, ...]:
    """The site's ledger rows a baseline of an event starting at ``event_start_at`` [aware
    UTC] can read: from :func:`ledger_since` on."""
    since = ledger_since(event_start_at, params)
    rows = conn.execute(
        select(LedgerRow.interval_start_at, LedgerRow.interval_end_at, LedgerRow.load_kwh)
        .where(LedgerRow.site_id == site_id, LedgerRow.interval_start_at >= since)
        .order_by(LedgerRow.interval_start_at)
    )
    return spans_from_ledger((start, end, load_kwh) for start, end, load_kwh in rows)


def ledger_since(event_start_at: datetime, params: BaselineParams) -> datetime:
    """The first ledger instant a baseline of an event starting at ``event_start_at`` [aware
    UTC] can read: the look-back's first day, less the row margin. Events starting on the
    same UTC day read the same rows."""
    day0_at = event_start_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day0_at - timedelta(seconds=params.lookback_days * DAY_S + LEDGER_ROW_LOOKBACK_S)


def event_windows(conn: Connection, site_id: str) -> list[tuple[datetime, datetime | None]]:
    """(start, stop or None) of every event addressing the site, latest versions, not test
    events (``event_site_windows``) [aware UTC]."""
    rows = conn.execute(
        select(EVENT_SITE_WINDOWS.c.start_s, EVENT_SITE_WINDOWS.c.stop_s).where(
            EVENT_SITE_WINDOWS.c.site_id == site_id
        )
    )
    return [(_at(start_s), None if stop_s is None else _at(stop_s)) for start_s, stop_s in rows]


def programme_params(conn: Connection, market_context: str) -> BaselineParams:
    """The baseline of events with this market context: its programme's row, else the ``*``
    row, else the defaults."""
    rows = {
        row.market_context: row
        for row in conn.execute(
            select(ProgrammeRow).where(
                ProgrammeRow.market_context.in_((market_context, ANY_MARKET_CONTEXT))
            )
        )
    }
    row = rows.get(market_context) or rows.get(ANY_MARKET_CONTEXT)
    if row is None:
        return BaselineParams()
    return BaselineParams(
        method=_method(row.baseline_method),
        like_days=row.like_days,
        lookback_days=row.lookback_days,
        min_like_days=row.min_like_days,
        adjustment_window_s=row.adjustment_window_s,
        adjustment_gap_s=row.adjustment_gap_s,
        adjustment_cap=row.adjustment_cap,
        meter_window_s=row.meter_window_s,
    )


def _method(name: str) -> BaselineMethod:
    for method in BASELINE_METHODS:
        if method == name:
            return method
    raise ValueError(
        f"programmes: unknown baseline method {name!r}; expected one of {BASELINE_METHODS}"
    )


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(float(epoch_s), UTC)

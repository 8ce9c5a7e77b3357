"""The baseline an event will be judged against, predicted from the store before answering.

The meter credits an event with the difference between its baseline and what the site draws,
so the planner must know the baseline to know what it can deliver. This reads a site's ledger
and the programme's method (:mod:`gateway.reports.baseline_input`) and asks the Python twin of
the reporting view (:mod:`gateway.baselines`) for it:

- once the event has started, the rows the baseline reads all lie before its start (like days,
  the adjustment window, the window before the start): the baseline is what the view will say;
- before the start, the load from the last ledger row up to the start is taken to stay at the
  site's facility load now (a site is guarded from ``event_guard_s`` before its event: the
  planner moves no job in or out for other reasons).

The mean over the event's intervals is returned [kW]; None when the site has no ledger yet.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from gateway.baselines import HOUR_S, BaselineParams, LedgerSpan, baseline_kw, epoch_s
from gateway.events import DrEvent
from gateway.reports.baseline_input import (
    event_windows,
    ledger_since,
    ledger_spans,
    programme_params,
)


def predicted_baseline_kw(
    conn: Connection, event: DrEvent, site_id: str, load_now_kw: float
) -> float | None:
    """The mean baseline of ``event`` at ``site_id`` over its active period [kW]; None when
    the event is open-ended or the site has no ledger yet.

    load_now_kw: the site's facility power now, taken to hold until the start [kW]."""
    return BaselineForecast(conn).predicted_kw(event, site_id, load_now_kw)


class BaselineForecast:
    """Predicted baselines of many events on one look at the store: each programme, each
    site's event windows and each ledger read is made once (a distribution of a hundred
    events asks for a hundred baselines per site; events starting on the same day share one
    ledger read)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._params: dict[str, BaselineParams] = {}
        self._spans: dict[tuple[str, datetime, BaselineParams], tuple[LedgerSpan, ...]] = {}
        self._windows: dict[str, list[tuple[datetime, datetime | None]]] = {}

    def predicted_kw(self, event: DrEvent, site_id: str, load_now_kw: float) -> float | None:
        """:func:`predicted_baseline_kw` of ``event`` at ``site_id`` [kW]."""
        start_at = event.effective_start_at
        end_at = event.end_at
        if end_at is None:
            return None
        params = self._params.get(event.market_context)
        if params is None:
            params = self._params[event.market_context] = programme_params(
                self._conn, event.market_context
            )
        key = (site_id, ledger_since(start_at, params), params)
        if key not in self._spans:  # events starting on the same day read the same rows
            self._spans[key] = ledger_spans(self._conn, site_id, start_at, params)
        spans = list(self._spans[key])
        if not spans:
            return None
        last_s = spans[-1].end_s
        start_s = epoch_s(start_at)
        if start_s > last_s:  # the future up to the start: the load as it is now
            spans.append(LedgerSpan(last_s, start_s, load_now_kw * (start_s - last_s) / HOUR_S))
        if site_id not in self._windows:
            self._windows[site_id] = event_windows(self._conn, site_id)
        windows = [*self._windows[site_id], (start_at, end_at)]
        found = baseline_kw(spans, start_at, [(start_at, end_at)], params, windows)
        [mean_kw] = found.baseline_kw
        return mean_kw

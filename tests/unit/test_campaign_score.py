"""The campaign's scoring arithmetic on a hand-made case (no database, no planner)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from simulators.campaign_score import IntervalRow, event_scores, score

AT = datetime(2030, 1, 2, 12, tzinfo=UTC)


def _row(
    event_id: str,
    site_id: str,
    index: int,
    requested_kwh: float,
    delivered_kwh: float | None,
    opt: str | None,
    *,
    modification_number: int = 0,
    kind: str = "shed",
) -> IntervalRow:
    return IntervalRow(
        vtn_id="utility",
        event_id=event_id,
        modification_number=modification_number,
        site_id=site_id,
        interval_index=index,
        start_at=AT + timedelta(hours=index),
        end_at=AT + timedelta(hours=index + 1),
        kind=kind,
        requested_kw=requested_kwh,
        requested_kwh=requested_kwh,
        baseline_kw=10.0,
        baseline_kwh=10.0,
        actual_kwh=None if delivered_kwh is None else 10.0 - delivered_kwh,
        delivered_kwh=delivered_kwh,
        delivery_ratio=None
        if delivered_kwh is None or not requested_kwh
        else delivered_kwh / requested_kwh,
        baseline_method="hour_before",
        opt=opt,
    )


ROWS = [
    # E1: opted in, two sites, two intervals at a: 4 + 5 of 4 + 6 asked; b: 3 of 2 asked.
    _row("E1", "a", 0, 4.0, 4.0, "optIn"),
    _row("E1", "a", 1, 6.0, 5.0, "optIn"),
    _row("E1", "b", 0, 2.0, 3.0, "optIn"),
    # E2: opted in, a stale version (ignored) and the latest one delivering -1 of 5.
    _row("E2", "a", 0, 50.0, 50.0, "optIn"),
    _row("E2", "a", 0, 5.0, -1.0, "optIn", modification_number=1, kind="absorb"),
    # E3: opted out; E4: opted in but cancelled before its start (nothing asked).
    _row("E3", "c", 0, 8.0, 0.5, "optOut"),
    _row("E4", "c", 0, 0.0, 0.0, "optIn"),
    # E5: opted in, the ledger has not covered it.
    _row("E5", "b", 0, 3.0, None, "optIn"),
]
PREDICTIONS = {("utility", "E1", "a"): 7.0, ("utility", "E1", "b"): 2.5}


def test_event_totals_are_the_sums_over_their_intervals() -> None:
    events = {e.event_id: e for e in event_scores(ROWS, PREDICTIONS)}
    e1 = events["E1"]
    assert (e1.sites, e1.intervals) == (2, 3)
    assert e1.requested_kwh == pytest.approx(12.0)
    assert e1.delivered_kwh == pytest.approx(12.0)
    # a: 9 of 10 credited; b: 3 delivered, 2 credited (no more than asked).
    assert e1.credited_kwh == pytest.approx(11.0)
    assert e1.ratio == pytest.approx(1.0)
    assert e1.predicted_kw == pytest.approx(9.5)


def test_only_the_latest_modification_counts() -> None:
    e2 = {e.event_id: e for e in event_scores(ROWS, {})}["E2"]
    assert e2.modification_number == 1
    assert e2.kind == "absorb"
    assert e2.requested_kwh == pytest.approx(5.0)
    assert e2.delivered_kwh == pytest.approx(-1.0)
    assert e2.credited_kwh == pytest.approx(0.0)
    assert e2.predicted_kw is None


def test_campaign_figures() -> None:
    scores = score(event_scores(ROWS, PREDICTIONS), issued=6, deliverable={"E3": True})
    assert (scores.opted_in, scores.opted_out, scores.unanswered) == (4, 1, 1)
    assert scores.nothing_requested == 1
    assert scores.unmeasured == 1
    # Measured opted-in events with a request: E1 (ratio 1.0) and E2 (ratio -0.2).
    assert scores.delivered_90 == 1
    assert scores.delivered_90_share == pytest.approx(0.5)
    assert scores.requested_kwh == pytest.approx(17.0)
    assert scores.delivered_kwh == pytest.approx(11.0)
    assert scores.credited_kwh == pytest.approx(11.0)
    assert scores.energy_share == pytest.approx(11.0 / 17.0)
    assert (scores.opted_out_deliverable, scores.opted_out_estimated) == (1, 1)


def test_no_events_give_no_shares() -> None:
    scores = score([], issued=0, deliverable={})
    assert scores.delivered_90_share is None
    assert scores.energy_share is None

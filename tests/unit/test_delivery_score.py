"""Scoring promises against the meter (gateway/reports/delivery.py): pure, hand-computed."""

from __future__ import annotations

import pandas as pd
import pytest

from gateway.reports.delivery import describe, score_events

COLUMNS = ("vtn_id", "event_id", "site_id", "opt", "requested_kwh", "delivered_kwh")


def frame(*rows: tuple[object, ...]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


def test_over_delivery_at_one_site_does_not_cover_a_shortfall_at_another() -> None:
    summary = score_events(
        frame(
            ("u", "e1", "a", "optIn", 4.0, 8.0),  # credited 4 of 4
            ("u", "e1", "b", "optIn", 4.0, 2.0),  # credited 2 of 4
        )
    )
    [event] = summary.events
    assert (event.requested_kwh, event.delivered_kwh, event.credited_kwh) == (8.0, 10.0, 6.0)
    assert event.ratio == pytest.approx(0.75)
    assert not event.met() and summary.short == (event,)
    assert event.sites == ("a", "b")


def test_only_opted_in_events_that_asked_for_energy_count() -> None:
    summary = score_events(
        frame(
            ("u", "in", "a", "optIn", 2.0, 1.9),
            ("u", "out", "a", "optOut", 2.0, 0.0),
            ("u", "nothing-asked", "a", "optIn", 0.0, 0.0),
            ("u", "no-data", "a", "optIn", None, None),
            ("u", "backwards", "a", "optIn", 1.0, -0.5),  # the meter saw the opposite
        )
    )
    assert [e.event_id for e in summary.events] == ["in", "backwards"]
    assert summary.opted_in == 2 and summary.met == 1
    assert summary.share_met == pytest.approx(0.5)
    assert summary.credited_kwh == pytest.approx(1.9)
    assert summary.energy_ratio == pytest.approx(1.9 / 3.0)


def test_interval_rows_of_one_event_add_up() -> None:
    summary = score_events(
        frame(("u", "e", "a", "optIn", 1.0, 1.0), ("u", "e", "a", "optIn", 1.0, 0.8)),
        threshold=0.9,
    )
    [event] = summary.events
    assert event.ratio == pytest.approx(0.9) and event.met(0.9)


def test_no_opted_in_event_says_so() -> None:
    summary = score_events(frame(("u", "e", "a", "optOut", 1.0, 0.0)))
    assert summary.share_met is None and summary.energy_ratio is None
    assert describe(summary) == ["  no opted-in event asked for energy"]

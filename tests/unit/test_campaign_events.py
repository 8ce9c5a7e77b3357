"""The campaign's event generator: deterministic from its seed, and it covers what a blind
campaign must throw at the gateway (kinds, durations, notices, sizes, overlaps,
modifications, cancellations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import InputError
from simulators.campaign_events import (
    EventParams,
    TargetSite,
    generate_events,
    overlapping_pairs,
)

START_AT = datetime(2030, 1, 1, tzinfo=UTC)
SITES = (
    TargetSite("a", "res-a", 40.0),
    TargetSite("b", "res-b", 25.0),
    TargetSite("c", "res-c", 15.0),
)
SPAN_S = 30 * 86400.0


def _events(seed: int = 7, count: int = 200) -> tuple:  # type: ignore[type-arg]
    return generate_events(seed, count, SITES, START_AT, SPAN_S)


def test_equal_seeds_give_equal_events() -> None:
    assert _events(7) == _events(7)


def test_other_seeds_give_other_events() -> None:
    assert _events(7) != _events(8)


def test_events_are_sorted_by_issue_time_with_unique_ids() -> None:
    events = _events()
    assert [e.issue_at for e in events] == sorted(e.issue_at for e in events)
    assert len({e.event_id for e in events}) == len(events) == 200


def test_kinds_durations_and_notices_cover_their_ranges() -> None:
    events = _events()
    assert {e.direction for e in events} == {"shed", "absorb"}
    for e in events:
        assert 15 * 60 <= e.duration_s <= 4 * 3600
        assert 0 <= e.notice_s <= 2 * 3600
        assert sum(e.interval_durations_s) == e.duration_s
        assert all(d == int(d) for d in e.interval_durations_s)
        assert all((v < 0) == (e.direction == "shed") for v in e.values_kw)
    assert min(e.duration_s for e in events) < 3600 < max(e.duration_s for e in events)
    assert any(e.notice_s == 0 for e in events)
    assert any(e.notice_s > 3600 for e in events)
    assert {len(e.interval_durations_s) for e in events} >= {1, 2, 3, 4}


def test_sizes_range_from_small_to_more_than_the_sites_hold() -> None:
    by_id = {s.site_id: s for s in SITES}
    shares = [
        e.peak_kw / (sum(by_id[s].facility_max_kw for s in e.site_ids) / len(e.site_ids))
        for e in _events()
    ]
    assert min(shares) < 0.1
    assert max(shares) > 1.0


def test_targets_one_or_more_sites_by_resource_id() -> None:
    events = _events()
    assert {len(e.site_ids) for e in events} == {1, 2, 3}
    for e in events:
        assert e.resource_ids == tuple(f"res-{s}" for s in e.site_ids)


def test_overlaps_modifications_and_cancellations_occur() -> None:
    events = _events()
    assert overlapping_pairs(events) > 0
    modified = [e for e in events if e.modification is not None]
    cancelled = [e for e in events if e.cancel_at is not None]
    assert len(modified) >= 10
    assert len(cancelled) >= 5
    for e in modified:
        assert e.modification is not None
        assert e.issue_at < e.modification.at < e.end_at
        assert len(e.modification.values_kw) == len(e.values_kw)
    for e in cancelled:
        assert e.cancel_at is not None
        after = e.modification.at if e.modification is not None else e.issue_at
        assert after < e.cancel_at < e.end_at


def test_events_stay_between_the_warm_up_and_the_tail() -> None:
    params = EventParams()
    for e in _events():
        assert e.start_at >= START_AT + timedelta(seconds=params.warmup_s)
        assert e.end_at <= START_AT + timedelta(seconds=SPAN_S - params.tail_s)


def test_a_span_without_room_is_refused() -> None:
    with pytest.raises(InputError, match="no room"):
        generate_events(1, 3, SITES, START_AT, 86400.0)


def test_overlapping_pairs_counts_common_sites_only() -> None:
    base = generate_events(3, 2, SITES[:1], START_AT, 3 * 86400.0)
    first, second = base
    same_time = second.__class__(**{**second.__dict__, "start_at": first.start_at})
    assert overlapping_pairs([first, same_time]) == 1
    elsewhere = same_time.__class__(**{**same_time.__dict__, "site_ids": ("b",)})
    assert overlapping_pairs([first, elsewhere]) == 0

"""A short blind campaign end to end: the real gateway, a real openleadr VTN and simulated
site controllers on loopback, on SQLite and PostgreSQL.

Checks the engine, not the planner: every issued event (and every modification and
cancellation) is answered, the invariants are checked after every round with no break, the
scores come from the database and are consistent with its rows. No delivery quota is
asserted (the planner changes in parallel; ``test_campaign_score.py`` checks the arithmetic).
The simulated clock waits for each answer, so the wall-clock bounds (an answer's wait, the
test's timeout) only turn a hang into a failure: the campaign takes about 25 s on a quiet
2-core machine and several times that on a loaded one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from gateway.db import make_engine
from simulators.campaign import CampaignConfig, Fleet, check_invariants, run_campaign
from simulators.campaign_report import format_result, result_json
from simulators.campaign_score import event_scores, fetch_intervals, fetch_predictions
from simulators.hang_guard import HANG_GUARD_S

pytestmark = pytest.mark.integration


@pytest.fixture
def campaign_config(database_url: str) -> Iterator[CampaignConfig]:
    yield CampaignConfig(
        days=2.0,
        events=10,
        sites=3,
        seed=5,
        database_url=database_url,
        step_s=1800.0,
        plan_interval_s=3600.0,
        warmup_h=6.0,
        tail_h=4.0,
        answer_timeout_s=HANG_GUARD_S,
    )


@pytest.mark.timeout(4 * HANG_GUARD_S)
async def test_short_campaign_answers_every_event_and_keeps_the_invariants(
    campaign_config: CampaignConfig,
) -> None:
    checked: list[Fleet] = []

    async def hook(fleet: Fleet) -> list[str]:
        checked.append(fleet)
        return await check_invariants(fleet)

    result = await run_campaign(campaign_config, hook=hook)
    stats = result.stats

    # The generator's plan was carried out: every event and message was sent and answered.
    assert len(result.events) == 10
    assert stats.messages_sent["issue"] == 10
    expected_messages = 10 + sum(e.modification is not None for e in result.events)
    assert sum(stats.messages_sent.values()) <= expected_messages + sum(
        e.cancel_at is not None for e in result.events
    )
    assert stats.answer_timeouts == []
    assert stats.answers_awaited == sum(stats.messages_sent.values())
    assert result.scores.events_issued == 10
    assert result.scores.unanswered == 0
    scores = result.scores
    assert scores.opted_in + scores.opted_out + scores.nothing_requested >= 10  # each answered

    # A round every step for two days (plus settling), each followed by an invariant check.
    assert stats.rounds >= 2 * 86400 / campaign_config.step_s
    assert stats.invariant_checks == stats.rounds == len(checked)
    assert stats.plan_rounds >= 2 * 86400 / campaign_config.plan_interval_s
    assert stats.violations == []
    assert checked[-1].job_ids and len(checked[-1].sites) == 3
    assert [f.at for f in checked] == sorted(f.at for f in checked)

    # Nothing lost or duplicated.
    assert result.jobs_not_at_one_site == []
    assert result.ledger_duplicates == 0
    assert stats.jobs_arrived > 0

    # Scores: every event scored from the database, consistent with the interval rows.
    engine = make_engine(campaign_config.database_url)
    try:
        with engine.connect() as connection:
            rows = fetch_intervals(connection)
            predictions = fetch_predictions(connection)
            stored = connection.scalar(text("SELECT COUNT(DISTINCT event_id) FROM events"))
    finally:
        engine.dispose()
    assert stored == 10
    by_event = {e.event_id: e for e in event_scores(rows, predictions)}
    # Every event is scored but those cancelled before their start: they asked for nothing.
    cancelled_early = {
        e.event_id for e in result.events if e.cancel_at is not None and e.cancel_at <= e.start_at
    }
    assert set(by_event) | cancelled_early == {e.event_id for e in result.events}
    assert result.scores.nothing_requested >= len(cancelled_early - set(by_event))
    for event in result.scores.events:
        latest = [
            r
            for r in rows
            if r.event_id == event.event_id and r.modification_number == event.modification_number
        ]
        assert event.requested_kwh == pytest.approx(sum(r.requested_kwh or 0.0 for r in latest))
        if event.delivered_kwh is not None:
            asked = [r for r in latest if r.requested_kwh]
            assert event.delivered_kwh == pytest.approx(sum(r.delivered_kwh or 0.0 for r in asked))
        assert event.opt in ("optIn", "optOut")
    s = result.scores
    measured = [e for e in s.events if e.opt == "optIn" and e.delivered_kwh is not None]
    assert s.requested_kwh == pytest.approx(
        sum(e.requested_kwh for e in measured if e.requested_kwh > 0)
    )
    assert 0 <= s.credited_kwh <= s.requested_kwh + 1e-9
    assert s.opted_out_estimated <= s.opted_out
    assert "events issued" in format_result(result)
    document = json.loads(json.dumps(result_json(result), default=str))
    assert document["summary"]["events_issued"] == 10
    assert document["stats"]["messages_sent"]["issue"] == 10

"""A change of plan changes the opt of an upcoming event (``gateway/planner/review.py``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.events import DrEvent
from gateway.planner.review import review
from gateway.planner.snapshot import Snapshot
from tests.support.planning import NOW, PARAMS, SIGNALS, event, fleet_for_opt


def offline(snapshot: Snapshot, site_id: str) -> Snapshot:
    return replace(
        snapshot,
        sites=tuple(
            replace(s, online=False) if s.site_id == site_id else s for s in snapshot.sites
        ),
    )


CASES = [
    ("optOut now deliverable: optIn", event(), "optOut", 200, fleet_for_opt(), "optIn"),
    ("optOut still not deliverable", event(), "optOut", 200, fleet_for_opt(room_gpus=2), None),
    ("optIn and the site is still there", event(), "optIn", 200, fleet_for_opt(), None),
    ("optIn, the named site went offline", event(), "optIn", 200,
     offline(fleet_for_opt(), "a"), "optOut"),
    ("optIn, a site the event does not name went offline", event(), "optIn", 200,
     offline(fleet_for_opt(), "b"), None),
    ("whole-VEN event, one of two sites offline", event(resources=()), "optIn", 200,
     offline(fleet_for_opt(), "a"), None),
    ("whole-VEN event, every site offline", event(resources=()), "optIn", 200,
     offline(offline(fleet_for_opt(), "a"), "b"), "optOut"),
    ("450 is final", event(), "optOut", 450, fleet_for_opt(), None),
    ("460 is final", event(), "optOut", 460, fleet_for_opt(), None),
    ("never answered", event(), None, None, fleet_for_opt(), None),
    ("started: no change", event(start_in_h=-0.1), "optOut", 200, fleet_for_opt(), None),
    ("cancelled: no change", replace(event(), status="cancelled"), "optOut", 200,
     fleet_for_opt(), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "event_", "current", "code", "snapshot", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_opt_changes_with_the_plan(
    label: str,
    event_: DrEvent,
    current: str | None,
    code: int | None,
    snapshot: Snapshot,
    expected: str | None,
) -> None:
    decision = review(event_, current, code, snapshot, PARAMS, SIGNALS)  # type: ignore[arg-type]
    assert (None if decision is None else decision.opt) == expected
    if decision is not None:
        assert decision.reason.startswith("plan changed: ")
        assert snapshot.at == NOW


def test_an_optout_becomes_optin_only_on_the_prediction_against_the_baseline() -> None:
    """As a first answer would: the moves take 4 x 1.08 kW off a's 5.2 kW, enough for 3 kW
    against the load now, not against a baseline 2 kW lower."""
    load_kw = fleet_for_opt().site("a").load_kw
    against_now = review(event(), "optOut", 200, fleet_for_opt(), PARAMS, SIGNALS, {"a": load_kw})
    assert against_now is not None and against_now.opt == "optIn"
    lower = {"a": load_kw - 2.0}
    assert review(event(), "optOut", 200, fleet_for_opt(), PARAMS, SIGNALS, lower) is None

"""The VEN adapter: openleadr event dicts to DrEvent records, table-driven."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from openleadr import objects, utils
from openleadr.messaging import create_message, parse_message

from gateway.events import DrEvent, EventTarget
from gateway.ven.adapter import MalformedEventError, parse_event
from tests.support.openleadr_events import DELETE, START, raw_event

VTN = "UTILITY-1"


def at(offset_s: float) -> datetime:
    return START + timedelta(seconds=offset_s)


# -- interval location: active period start plus cumulative durations -----------------------

LOCATION_CASES = [
    pytest.param(0, 0, id="first interval at the start"),
    pytest.param(599, 0, id="first interval until its 10 minutes are over"),
    pytest.param(600, 1, id="second interval after 10 minutes, not at its decoy dtstart"),
    pytest.param(899, 1, id="second interval until the end"),
    pytest.param(900, None, id="nothing at the end of the active period"),
    pytest.param(-1, None, id="nothing before the start"),
]


@pytest.mark.parametrize(("offset_s", "position"), LOCATION_CASES)
def test_interval_is_located_from_active_period_and_cumulative_durations(
    offset_s: float, position: int | None
) -> None:
    event = parse_event(raw_event(), VTN)
    interval = event.interval_at(event.signals[0], at(offset_s))
    assert (None if interval is None else interval.position) == position


def test_durations_are_seconds_and_values_floats() -> None:
    event = parse_event(raw_event(), VTN)
    signal = event.signals[0]
    assert event.duration_s == 900.0
    assert [(i.position, i.duration_s, i.value, i.uid) for i in signal.intervals] == [
        (0, 600.0, 1.0, "0"),
        (1, 300.0, 2.0, "1"),
    ]
    assert event.end_at == at(900)


# -- fields, one labelled case each -------------------------------------------------------

FIELD_CASES: list[Any] = [
    pytest.param(
        {},
        lambda e: (e.vtn_id, e.event_id, e.modification_number, e.status, e.market_context),
        (VTN, "evt-1", 0, "far", "http://utility.example/dr"),
        id="descriptor",
    ),
    pytest.param(
        {
            "active_period__duration": timedelta(0),
            "event_signals__0__intervals": [
                {"duration": timedelta(0), "uid": 0, "signal_payload": 1.0}
            ],
        },
        lambda e: (e.duration_s, e.end_at, e.interval_at(e.signals[0], at(10**7)).position),
        (0.0, None, 0),
        id="open-ended: duration 0 runs until cancelled",
    ),
    pytest.param(
        {
            "targets": [{"resource_id": "site-a"}, {"resource_id": "site-b"}],
            "targets_by_type": {"resource_id": ["site-a", "site-b"]},
        },
        lambda e: (e.targets, e.targets_resource("site-a", None), e.targets_resource("c", None)),
        (
            (EventTarget("resource_id", "site-a"), EventTarget("resource_id", "site-b")),
            True,
            False,
        ),
        id="targets by resource id address those sites only",
    ),
    pytest.param(
        {},
        lambda e: (e.targets, e.targets_resource("any-site", "VEN-1")),
        ((EventTarget("ven_id", "VEN-1"),), True),
        id="a VEN target addresses every site",
    ),
    pytest.param(
        {"targets": DELETE, "targets_by_type": {"resource_id": ["a", "b"], "group_id": "g"}},
        lambda e: e.targets,
        (
            EventTarget("resource_id", "a"),
            EventTarget("resource_id", "b"),
            EventTarget("group_id", "g"),
        ),
        id="targets_by_type alone",
    ),
    pytest.param(
        {"targets": DELETE, "targets_by_type": DELETE},
        lambda e: (e.targets, e.targets_resource("x", None)),
        ((), True),
        id="no targets addresses the whole VEN",
    ),
    pytest.param(
        {
            "event_descriptor__event_id": 123,
            "targets": [{"resource_id": 7}],
            "targets_by_type": {"resource_id": [7]},
            "event_signals__0__signal_id": 5,
        },
        lambda e: (e.event_id, e.targets, e.signals[0].signal_id),
        ("123", (EventTarget("resource_id", "7"),), "5"),
        id="all-digit ids parsed as ints by openleadr become text again",
    ),
    pytest.param(
        {"event_descriptor__test_event": True},
        lambda e: e.test_event,
        True,
        id="test event",
    ),
    pytest.param(
        {"event_descriptor__test_event": DELETE},
        lambda e: e.test_event,
        False,
        id="no test_event means a real event",
    ),
    pytest.param(
        {"active_period__tolerance": {"tolerate": {"startafter": timedelta(minutes=2)}}},
        lambda e: e.start_after_s,
        120.0,
        id="startafter as parsed from XML (tolerance.tolerate.startafter)",
    ),
    pytest.param(
        {"active_period__tolerance": {"startafter": timedelta(seconds=30)}},
        lambda e: e.start_after_s,
        30.0,
        id="startafter as openleadr objects carry it (tolerance.startafter)",
    ),
    pytest.param(
        {"active_period__tolerance": {"tolerate": {"startafter": None}}},
        lambda e: e.start_after_s,
        None,
        id="empty startafter",
    ),
    pytest.param(
        {"active_period__ramp_up": timedelta(minutes=1)},
        lambda e: e.ramp_up_s,
        60.0,
        id="ramp up as parsed from XML (x-eiRampUp)",
    ),
    pytest.param(
        {"active_period__ramp_up_period": timedelta(minutes=3)},
        lambda e: e.ramp_up_s,
        180.0,
        id="ramp up as openleadr objects carry it",
    ),
    pytest.param(
        {"event_descriptor__event_status": "cancelled", "event_descriptor__modification_number": 2},
        lambda e: (e.cancelled, e.modification_number, e.is_active_at(at(1))),
        (True, 2, False),
        id="cancelled",
    ),
    pytest.param(
        {"event_descriptor__priority": 3, "response_required": "never"},
        lambda e: (e.priority, e.response_required),
        (3, "never"),
        id="priority and response required",
    ),
    pytest.param(
        {"event_descriptor__priority": DELETE, "response_required": DELETE},
        lambda e: (e.priority, e.response_required),
        (0, "always"),
        id="defaults for priority and response required",
    ),
    pytest.param(
        {"event_signals__0__measurement": {"name": "powerReal", "unit": "W", "scale": "k"}},
        lambda e: e.signals[0].units,
        "kW",
        id="signal units from its item base",
    ),
    pytest.param(
        {"event_signals": {"event_signals": raw_event()["event_signals"]}},
        lambda e: len(e.signals),
        1,
        id="signals nested one level deeper",
    ),
    pytest.param(
        {"event_descriptor__created_date_time": DELETE},
        lambda e: e.created_at,
        None,
        id="no creation time",
    ),
]


@pytest.mark.parametrize(("changes", "read", "expected"), FIELD_CASES)
def test_parse_event_fields(
    changes: dict[str, Any], read: Callable[[DrEvent], Any], expected: Any
) -> None:
    assert read(parse_event(raw_event(**changes), VTN)) == expected


# -- malformed input -----------------------------------------------------------------------

MALFORMED_CASES = [
    pytest.param({"event_descriptor": DELETE}, "event_descriptor: missing", id="no descriptor"),
    pytest.param(
        {"event_descriptor__event_id": DELETE},
        "event_descriptor.event_id: missing",
        id="no event id",
    ),
    pytest.param(
        {"active_period__dtstart": DELETE}, "active_period.dtstart: missing", id="no start"
    ),
    pytest.param(
        {"active_period__dtstart": datetime(2030, 1, 1)},
        "active_period.dtstart: naive datetime",
        id="naive start",
    ),
    pytest.param(
        {"active_period__dtstart": "2030-01-01T00:00:00"},
        "active_period.dtstart: expected a datetime",
        id="start left as text",
    ),
    pytest.param(
        {"active_period__duration": timedelta(seconds=-1)},
        "active_period.duration: negative duration",
        id="negative duration",
    ),
    pytest.param(
        {"event_descriptor__event_status": "paused"},
        "event_descriptor.event_status: expected one of",
        id="unknown status",
    ),
    pytest.param(
        {"event_descriptor__modification_number": -1},
        "event_descriptor.modification_number: expected an integer from 0 to 2147483647",
        id="negative modification number",
    ),
    pytest.param({"event_signals": []}, "event_signals: no signals", id="no signals"),
    pytest.param(
        {"event_signals__0__intervals": []},
        "event_signals[0].intervals: no intervals",
        id="signal without intervals",
    ),
    pytest.param(
        {"event_signals__0__intervals__1__duration": DELETE},
        "event_signals[0].intervals[1].duration: missing",
        id="interval without duration",
    ),
    pytest.param(
        {"event_signals__0__intervals__0__signal_payload": "high"},
        "event_signals[0].intervals[0].signal_payload: expected a number",
        id="payload not a number",
    ),
    pytest.param(
        {"response_required": "sometimes"},
        "response_required: expected one of always, never",
        id="unknown response_required",
    ),
    pytest.param(
        {"event_descriptor__test_event": "yes"},
        "event_descriptor.test_event: expected a boolean",
        id="test_event not a boolean",
    ),
    pytest.param(
        {"targets": [{"resource_id": ""}]}, "targets[0].resource_id: empty", id="empty target"
    ),
]


@pytest.mark.parametrize(("changes", "message"), MALFORMED_CASES)
def test_malformed_event_is_rejected_naming_the_field(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(MalformedEventError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_event(raw_event(**changes), VTN)


def test_malformed_event_error_names_the_event() -> None:
    with pytest.raises(MalformedEventError) as caught:
        parse_event(raw_event(active_period__duration=DELETE), VTN)
    assert caught.value.event_id == "evt-1"
    assert str(caught.value).startswith("event 'evt-1': active_period.duration")


def test_parse_event_does_not_change_its_input() -> None:
    raw = raw_event()
    before = copy.deepcopy(raw)
    parse_event(raw, VTN)
    assert raw == before


# -- round trip through openleadr's own XML -------------------------------------------------


def test_round_trip_through_openleadr_xml_keeps_every_field() -> None:
    """An event written by openleadr's VTN side and parsed by its VEN side, as on the wire."""
    intervals = [
        objects.Interval(dtstart=START, duration=timedelta(minutes=10), signal_payload=-50.0),
        objects.Interval(
            dtstart=START + timedelta(minutes=10), duration=timedelta(minutes=20), signal_payload=0
        ),
    ]
    period = utils.get_active_period_from_intervals(intervals, False)
    period.ramp_up_period = timedelta(minutes=5)
    period.tolerance = {"startafter": timedelta(minutes=2)}
    event = objects.Event(
        event_descriptor=objects.EventDescriptor(
            event_id="42",
            modification_number=3,
            market_context="http://utility.example/dr",
            event_status="far",
            created_date_time=START - timedelta(hours=2),
            priority=1,
            test_event=True,
        ),
        event_signals=[
            objects.EventSignal(
                intervals=intervals,
                signal_name="LOAD_DISPATCH",
                signal_type="delta",
                signal_id="s-1",
            )
        ],
        targets=[{"resource_id": "site-a"}, {"ven_id": "VEN-9"}],
        active_period=period,
    )
    xml = create_message("oadrDistributeEvent", request_id="r", vtn_id=VTN, events=[event])
    _, payload = parse_message(xml)

    parsed = parse_event(payload["events"][0], VTN)

    assert parsed.event_id == "42"
    assert parsed.modification_number == 3
    assert parsed.start_at == START
    assert parsed.duration_s == 1800.0
    assert parsed.ramp_up_s == 300.0
    assert parsed.start_after_s == 120.0
    assert parsed.test_event is True
    assert parsed.priority == 1
    assert parsed.created_at == START - timedelta(hours=2)
    signal = parsed.signals[0]
    assert (signal.signal_name, signal.signal_type) == ("LOAD_DISPATCH", "delta")
    assert [(i.duration_s, i.value) for i in signal.intervals] == [(600.0, -50.0), (1200.0, 0.0)]
    assert set(parsed.targets) == {
        EventTarget("resource_id", "site-a"),
        EventTarget("ven_id", "VEN-9"),
    }

"""An event as openleadr hands it to the VEN (a parsed ``oadrDistributeEvent``), to change
field by field: the adapter's unit tests and the VEN's bounds tests start from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2030, 6, 21, 12, 0, tzinfo=UTC)
"""The event's start."""
DELETE = object()
"""A value of :func:`raw_event`'s changes that removes the field."""


def raw_event(**changes: Any) -> dict[str, Any]:
    """An event dict shaped like openleadr's parsed oadrDistributeEvent: two intervals of
    10 and 5 minutes; per-interval dtstart and current_value carry decoys."""
    raw: dict[str, Any] = {
        "event_descriptor": {
            "event_id": "evt-1",
            "modification_number": 0,
            "market_context": "http://utility.example/dr",
            "event_status": "far",
            "created_date_time": START - timedelta(hours=1),
            "priority": 0,
            "test_event": False,
        },
        "active_period": {"dtstart": START, "duration": timedelta(minutes=15)},
        "event_signals": [
            {
                "signal_id": "sig-1",
                "signal_name": "SIMPLE",
                "signal_type": "level",
                "current_value": 3.0,
                "intervals": [
                    {
                        "dtstart": START + timedelta(days=1),
                        "duration": timedelta(minutes=10),
                        "uid": 0,
                        "signal_payload": 1.0,
                    },
                    {
                        "dtstart": START - timedelta(days=1),
                        "duration": timedelta(minutes=5),
                        "uid": 1,
                        "signal_payload": 2,
                    },
                ],
            }
        ],
        "targets": [{"ven_id": "VEN-1"}],
        "targets_by_type": {"ven_id": ["VEN-1"]},
        "response_required": "always",
    }
    for path, value in changes.items():
        _set(raw, path.split("__"), value)
    return raw


def _set(tree: Any, keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree[int(key)] if isinstance(tree, list) else tree[key]
    last = keys[-1]
    if value is DELETE:
        del tree[last]
    elif isinstance(tree, list):
        tree[int(last)] = value
    else:
        tree[last] = value


DELETE = object()

"""The bounds every field of an event from a VTN must keep before the VEN stores it.

OpenADR 2.0b's schema (``oadr_20b.xsd`` and the EI schemas it imports) leaves most fields
unbounded: ids are ``xs:string``, durations ``xs:duration``, dates ``xs:dateTime`` up to
year 9999, payloads ``xs:float`` (INF and NaN included), and the number of intervals,
signals and targets has no maximum. An event outside these bounds is answered optOut with
454 (invalid data, :data:`gateway.ven.event_rules.INVALID_DATA`) naming the field and is not
stored, so it never reaches the planner, the reports or the web API
(``docs/conformance.md``, "Bounds of an event").

The text lengths are those of the columns the fields are stored in (:mod:`models.event`),
read from the models so that the two cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import String
from sqlalchemy.orm import InstrumentedAttribute

from models import event as rows

EARLIEST_START_AT = datetime(2000, 1, 1, tzinfo=UTC)
"""No event (active period, created date) starts before this instant."""
LATEST_END_AT = datetime(2100, 1, 1, tzinfo=UTC)
"""No event (its active period plus its randomisation window) ends after this instant, and no
created date is after it."""

MAX_DURATION_S = 31 * 86400
"""Longest active period, interval, ``tolerance.startafter`` or ramp-up: 31 days [s]. A
demand-response event lasts hours; a month covers any programme seen."""
MAX_SIGNALS = 32
"""Most signals (``eiEventSignal``) in one event."""
MAX_INTERVALS = 1000
"""Most intervals in one signal (a week at 15 minutes is 672)."""
MAX_TARGETS = 1000
"""Most targets (resource, VEN, group, party ids, ...) of one event."""
MAX_INTEGER = 2**31 - 1
"""Largest modification number and priority: the INTEGER column they are stored in (the
schema's ``xs:unsignedInt`` goes up to 2**32 - 1)."""
MAX_ABS_PAYLOAD = 1e9
"""Largest magnitude of a signal payload (a level, a price, kW); payloads must be finite."""


def _length(column: InstrumentedAttribute[str] | InstrumentedAttribute[str | None]) -> int:
    kind = column.property.columns[0].type
    if not isinstance(kind, String) or kind.length is None:
        raise TypeError(f"{column} is not a bounded string column")
    return kind.length


MAX_EVENT_ID_CHARS = _length(rows.Event.event_id)
MAX_MARKET_CONTEXT_CHARS = _length(rows.Event.market_context)
MAX_SIGNAL_ID_CHARS = _length(rows.EventSignal.signal_id)
MAX_SIGNAL_NAME_CHARS = _length(rows.EventSignal.signal_name)
MAX_SIGNAL_TYPE_CHARS = _length(rows.EventSignal.signal_type)
MAX_UNITS_CHARS = _length(rows.EventSignal.units)
MAX_INTERVAL_UID_CHARS = _length(rows.EventInterval.uid)
MAX_TARGET_KIND_CHARS = _length(rows.EventTarget.kind)
MAX_TARGET_VALUE_CHARS = _length(rows.EventTarget.value)
MAX_REQUEST_ID_CHARS = _length(rows.EventResponse.request_id)
"""The requestID of a distribution is stored with every answer to it."""

"""Persistence of events and of the answers given to them.

One row per (VTN, event id, modification number): a version is stored once, and a version
seen again is no change (``docs/openadr-notes.md``, pitfall 2); it is answered again with its
stored answer, which then carries the new distribution's requestID (:func:`owe_again`).
Every function takes the caller's sync :class:`~sqlalchemy.orm.Session` (one per unit of
work, see :func:`gateway.db.unit_of_work`) and neither commits nor opens sessions itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar, get_args

from sqlalchemy import Select, and_, bindparam, func, not_, or_, select, update
from sqlalchemy.orm import Session, selectinload

from gateway.errors import GatewayError
from gateway.events import (
    DrEvent,
    EventInterval,
    EventSignal,
    EventStatus,
    EventTarget,
    Opt,
    OptDecision,
)
from models import event as rows

_T = TypeVar("_T")

_STATUSES: dict[str, EventStatus] = {name: name for name in get_args(EventStatus)}
_OPTS: dict[str, Opt] = {name: name for name in get_args(Opt)}


class StoredDataError(GatewayError):
    """A stored row holds a value the gateway does not know (a hand-edited database?)."""


def save_event(session: Session, event: DrEvent, received_at: datetime) -> tuple[rows.Event, bool]:
    """Store one version of an event with its signals, intervals and targets.

    Returns the row and True, or the row already stored for this version and False.
    ``received_at`` is when the gateway received it [aware UTC].
    """
    existing = event_row(
        session, event.vtn_id, event.event_id, event.modification_number, children=False
    )
    if existing is not None:
        return existing, False
    row = rows.Event(
        vtn_id=event.vtn_id,
        event_id=event.event_id,
        modification_number=event.modification_number,
        status=event.status,
        market_context=event.market_context,
        priority=event.priority,
        test_event=event.test_event,
        response_required=event.response_required,
        start_at=event.start_at,
        duration_s=event.duration_s,
        ramp_up_s=event.ramp_up_s,
        start_after_s=event.start_after_s,
        created_at=event.created_at,
        received_at=received_at,
        ven_id=event.ven_id,
        start_offset_s=event.start_offset_s or None,
        cancel_effective_at=event.cancel_effective_at,
        implied_cancel_at=event.implied_cancel_at,
        signals=[
            rows.EventSignal(
                position=position,
                signal_id=signal.signal_id,
                signal_name=signal.signal_name,
                signal_type=signal.signal_type,
                units=signal.units,
                intervals=[
                    rows.EventInterval(
                        position=interval.position,
                        uid=interval.uid,
                        duration_s=interval.duration_s,
                        value=interval.value,
                    )
                    for interval in signal.intervals
                ],
            )
            for position, signal in enumerate(event.signals)
        ],
        targets=[rows.EventTarget(kind=t.kind, value=t.value) for t in event.targets],
    )
    session.add(row)
    session.flush()
    return row, True


def event_row(
    session: Session,
    vtn_id: str,
    event_id: str,
    modification_number: int,
    *,
    children: bool = True,
) -> rows.Event | None:
    """The stored row of one version, or None; ``children`` False leaves its signals,
    intervals and targets unread (thousands of rows for some events) until touched."""
    query = select(rows.Event)
    return session.scalars(
        (_with_children(query) if children else query).where(
            rows.Event.vtn_id == vtn_id,
            rows.Event.event_id == event_id,
            rows.Event.modification_number == modification_number,
        )
    ).one_or_none()


def latest_events(
    session: Session,
    vtn_id: str | None = None,
    *,
    current_at: datetime | None = None,
    also: Collection[str] = (),
    children: bool = True,
) -> list[DrEvent]:
    """The newest stored version of every event (of one VTN, or of all), by start time.

    children: False leaves the signals and targets out (empty tuples): enough for the
        rules that judge versions, starts, ends and cancellations, at the cost of one query.

    current_at: when given, only the events not over at that instant (aware UTC), and those
        of the event ids in ``also`` (over or not). The store keeps every event it ever
        received; the rounds and distributions need the current ones, and reading the
        signals and intervals of all of them grows with the store (a VTN sending thousands
        of events, or events of thousands of intervals, made each read take seconds). Events
        over are found from the versions' own columns first; only those kept are read whole.
    """
    if current_at is None:
        read = to_dr_event if children else _header
        return [read(row) for row in session.scalars(_newest(vtn_id, children=children))]
    wanted = set(also)
    # Cancelled (sent or implied) with the cancellation in effect is over (the first rule of
    # DrEvent.is_over_at), told by the database; the end of the active period in Python.
    cancelled_over = and_(
        or_(rows.Event.status == "cancelled", rows.Event.implied_cancel_at.is_not(None)),
        or_(
            rows.Event.cancel_effective_at.is_(None),
            rows.Event.cancel_effective_at <= current_at,
        ),
    )
    candidates = _newest(vtn_id, children=False).where(
        or_(not_(cancelled_over), rows.Event.event_id.in_(wanted))
    )
    headers = [(row.id, _header(row)) for row in session.scalars(candidates)]
    kept = [
        (row_id, header)
        for row_id, header in headers
        if header.event_id in wanted or not header.is_over_at(current_at)
    ]
    if not children:
        return sorted((h for _, h in kept), key=lambda e: (e.start_at, e.vtn_id, e.event_id))
    keep = [row_id for row_id, _ in kept]
    out: list[DrEvent] = []
    for start in range(0, len(keep), _IN_CHUNK):
        chunk = keep[start : start + _IN_CHUNK]
        query = _with_children(select(rows.Event)).where(rows.Event.id.in_(chunk))
        out += [to_dr_event(row) for row in session.scalars(query)]
    return sorted(out, key=lambda e: (e.start_at, e.vtn_id, e.event_id))


_IN_CHUNK = 500
"""Ids per ``IN`` list when reading the kept events whole."""


def _newest(vtn_id: str | None, *, children: bool) -> Select[rows.Event]:
    """The newest stored version of every event (of one VTN, or of all), by start time."""
    newest = select(
        rows.Event.vtn_id,
        rows.Event.event_id,
        func.max(rows.Event.modification_number).label("modification_number"),
    ).group_by(rows.Event.vtn_id, rows.Event.event_id)
    if vtn_id is not None:
        newest = newest.where(rows.Event.vtn_id == vtn_id)
    latest = newest.subquery()
    base = select(rows.Event)
    query = (
        (_with_children(base) if children else base)
        .join(
            latest,
            and_(
                rows.Event.vtn_id == latest.c.vtn_id,
                rows.Event.event_id == latest.c.event_id,
                rows.Event.modification_number == latest.c.modification_number,
            ),
        )
        .order_by(rows.Event.start_at, rows.Event.vtn_id, rows.Event.event_id)
    )
    return query


def load_event(session: Session, vtn_id: str, event_id: str) -> DrEvent | None:
    """The newest stored version of one event, or None."""
    row = session.scalars(
        _with_children(select(rows.Event))
        .where(rows.Event.vtn_id == vtn_id, rows.Event.event_id == event_id)
        .order_by(rows.Event.modification_number.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else to_dr_event(row)


def load_version(session: Session, vtn_id: str, event_id: str, modification_number: int) -> DrEvent:
    """One stored version whole (signals, intervals, targets); StoredDataError when it is
    not stored."""
    row = event_row(session, vtn_id, event_id, modification_number)
    if row is None:
        raise StoredDataError(
            f"event {event_id} modification {modification_number} of VTN {vtn_id} is not stored"
        )
    return to_dr_event(row)


def save_response(
    session: Session,
    event_row: rows.Event,
    decision: OptDecision,
    responded_at: datetime,
    *,
    required: bool = True,
    request_id: str | None = None,
    flush: bool = True,
) -> rows.EventResponse:
    """Store the answer given to one version, with its reason and the planner's predicted
    power (``decision.predicted_kw``); ``responded_at`` [aware UTC].

    ``required`` is False when the version said response_required = never: the answer is
    kept but never sent. ``request_id`` is the requestID of the distribution it answers
    (conformance rule 42), the one it is sent under. ``flush`` False leaves the insert (and
    the answer's id) to the caller's next flush, so that many answers go in one.
    """
    response = rows.EventResponse(
        opt=decision.opt,
        reason=decision.reason,
        response_code=decision.response_code,
        responded_at=responded_at,
        required=required,
        request_id=request_id,
        predicted_kw=decision.predicted_kw,
    )
    response.event = event_row  # the event's other answers are not read for this
    session.add(response)
    if flush:
        session.flush()
    return response


def last_response(
    session: Session, vtn_id: str, event_id: str, modification_number: int
) -> OptDecision | None:
    """The newest answer given to one version, or None when it has not been answered."""
    stored = last_answer(session, vtn_id, event_id, modification_number)
    return None if stored is None else stored.decision


@dataclass(frozen=True)
class StoredAnswer:
    """An answer as stored: the decision, whether the VTN needs it, whether it got it and
    the requestID of the distribution it answers (None when stored before revision 0007)."""

    response_id: int
    decision: OptDecision
    required: bool
    sent_at: datetime | None
    request_id: str | None


def last_answer(
    session: Session, vtn_id: str, event_id: str, modification_number: int
) -> StoredAnswer | None:
    """The newest answer given to one version with its delivery state, or None."""
    response = session.scalars(
        select(rows.EventResponse)
        .join(rows.Event)
        .where(
            rows.Event.vtn_id == vtn_id,
            rows.Event.event_id == event_id,
            rows.Event.modification_number == modification_number,
        )
        .order_by(rows.EventResponse.id.desc())
        .limit(1)
    ).one_or_none()
    if response is None:
        return None
    return StoredAnswer(
        response_id=response.id,
        decision=OptDecision(
            opt=_known(_OPTS, response.opt, "event_responses.opt"),
            reason=response.reason,
            response_code=response.response_code,
            predicted_kw=response.predicted_kw,
        ),
        required=response.required,
        sent_at=response.sent_at,
        request_id=response.request_id,
    )


def mark_sent(session: Session, response_ids: Sequence[int], sent_at: datetime) -> None:
    """Record that the VTN acknowledged the answers ``response_ids`` at ``sent_at``."""
    if not response_ids:
        return
    session.execute(
        update(rows.EventResponse)
        .where(rows.EventResponse.id.in_(response_ids))
        .values(sent_at=sent_at)
    )


def owe_again(session: Session, response_id: int, request_id: str) -> None:
    """The stored answer ``response_id`` answers the distribution ``request_id`` now (the VTN
    sent its version again, conformance rules 12 and 62): it carries that requestID and is
    unsent until the VTN acknowledges it again. The decision itself is kept as it is."""
    session.execute(
        update(rows.EventResponse)
        .where(rows.EventResponse.id == response_id)
        .values(request_id=request_id, sent_at=None)
    )


def imply_cancel(
    session: Session, cancelled: Sequence[tuple[DrEvent, datetime]], at: datetime
) -> None:
    """Mark the stored versions of ``cancelled`` cancelled by implication at ``at``, each
    taking effect at the instant beside it [aware UTC]: one statement for all (a distribution
    that leaves out a hundred events cancels a hundred). Raises StoredDataError when one of
    them is not stored."""
    if not cancelled:
        return
    session.flush()  # the versions this distribution stored, before the statement reads them
    statement = (
        update(rows.Event)
        .where(
            rows.Event.vtn_id == bindparam("key_vtn_id"),
            rows.Event.event_id == bindparam("key_event_id"),
            rows.Event.modification_number == bindparam("key_modification_number"),
        )
        .values(implied_cancel_at=at, cancel_effective_at=bindparam("effective_at"))
        .execution_options(synchronize_session=False)
    )
    connection = session.connection()
    result = connection.execute(
        statement,
        [
            {
                "key_vtn_id": event.vtn_id,
                "key_event_id": event.event_id,
                "key_modification_number": event.modification_number,
                "effective_at": effective_at,
            }
            for event, effective_at in cancelled
        ],
    )
    if connection.dialect.supports_sane_multi_rowcount and result.rowcount != len(cancelled):
        raise StoredDataError(
            f"{len(cancelled) - result.rowcount} of the {len(cancelled)} events cancelled by "
            f"implication (VTN {cancelled[0][0].vtn_id}) are not stored"
        )


@dataclass(frozen=True)
class Participation:
    """The newest version of an event and the opt in force for it.

    opt: the newest answer to a version that was not a cancellation (acknowledging a
    cancellation says nothing about taking part); None when no such version was answered.
    """

    event: DrEvent
    opt: Opt | None
    response_code: int | None


def participations(
    session: Session, vtn_id: str | None = None, *, current_at: datetime | None = None
) -> list[Participation]:
    """Every event's newest version with the opt in force (of one VTN, or of all); with
    ``current_at`` only those of events not over then (:func:`latest_events`)."""
    events = latest_events(session, vtn_id, current_at=current_at)
    if not events:
        return []
    answers = select(
        rows.Event.vtn_id,
        rows.Event.event_id,
        rows.EventResponse.opt,
        rows.EventResponse.response_code,
    ).join(rows.EventResponse)
    answers = answers.where(rows.Event.status != "cancelled")
    if vtn_id is not None:
        answers = answers.where(rows.Event.vtn_id == vtn_id)
    if current_at is not None and len(events) <= _IN_CHUNK:
        answers = answers.where(rows.Event.event_id.in_({event.event_id for event in events}))
    newest: dict[tuple[str, str], tuple[str, int]] = {}
    for vtn, event_id, opt_text, code in session.execute(answers.order_by(rows.EventResponse.id)):
        newest[(vtn, event_id)] = (opt_text, code)
    out = []
    for event in events:
        found = newest.get((event.vtn_id, event.event_id))
        opt: Opt | None = None
        if found is not None:
            opt = _known(_OPTS, found[0], "event_responses.opt")
        out.append(
            Participation(event=event, opt=opt, response_code=None if found is None else found[1])
        )
    return out


def to_dr_event(row: rows.Event) -> DrEvent:
    """A stored version as the domain record the planner reads."""
    return replace(
        _header(row),
        signals=tuple(
            EventSignal(
                signal_id=signal.signal_id,
                signal_name=signal.signal_name,
                signal_type=signal.signal_type,
                units=signal.units,
                intervals=tuple(
                    EventInterval(
                        position=interval.position,
                        duration_s=interval.duration_s,
                        value=interval.value,
                        uid=interval.uid,
                    )
                    for interval in signal.intervals
                ),
            )
            for signal in row.signals
        ),
        targets=tuple(
            EventTarget(kind=t.kind, value=t.value) for t in sorted(row.targets, key=_by_id)
        ),
    )


def _header(row: rows.Event) -> DrEvent:
    """A stored version without its signals and targets (not read): enough to tell when it
    starts, ends or was cancelled."""
    return DrEvent(
        vtn_id=row.vtn_id,
        event_id=row.event_id,
        modification_number=row.modification_number,
        status=_known(_STATUSES, row.status, "events.status"),
        market_context=row.market_context,
        start_at=row.start_at,
        duration_s=row.duration_s,
        signals=(),
        targets=(),
        priority=row.priority,
        test_event=row.test_event,
        response_required="never" if row.response_required == "never" else "always",
        ramp_up_s=row.ramp_up_s,
        start_after_s=row.start_after_s,
        created_at=row.created_at,
        ven_id=row.ven_id,
        start_offset_s=row.start_offset_s or 0.0,
        cancel_effective_at=row.cancel_effective_at,
        implied_cancel_at=row.implied_cancel_at,
    )


def _by_id(target: rows.EventTarget) -> int:
    return target.id


def _with_children(query: Select[rows.Event]) -> Select[rows.Event]:
    return query.options(
        selectinload(rows.Event.signals).selectinload(rows.EventSignal.intervals),
        selectinload(rows.Event.targets),
    )


def _known(names: Mapping[str, _T], value: str, column: str) -> _T:
    try:
        return names[value]
    except KeyError as exc:
        raise StoredDataError(f"{column}: unknown value {value!r}") from exc

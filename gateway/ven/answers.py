"""The VEN's answers to event versions (the eventResponses of ``oadrCreatedEvent``): what one
is and how it is stored.

Every answer is stored with its decision (opt, response code, reason) and the requestID of the
distribution it answers before it is sent (conformance rule 42: the answer carries that
requestID, also when it goes out later, in another message). It is owed to the VTN when the
version asked for answers (response_required = always) and marked sent once the VTN
acknowledged it. :mod:`gateway.ven.distribution` decides which answer each version gets; this
module builds and stores them, the planner's answers to one distribution in one insert round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from gateway import db
from gateway.events import DrEvent, Opt, OptDecision
from gateway.ven import event_rules, store
from gateway.ven.adapter import response_required, version_key
from models.event import Event as EventRow
from models.event import EventResponse as ResponseRow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """One eventResponse of an ``oadrCreatedEvent``."""

    event_id: str
    modification_number: int
    opt: Opt
    response_code: int
    reason: str
    response_id: int | None
    """The stored answer to mark sent once the VTN acknowledged it; None when not stored."""
    request_id: str | None
    """The requestID of the distribution this answers, sent with it (conformance rule 42);
    None only for answers stored before revision 0007, which are not sent under any other."""

    @property
    def description(self) -> str:
        return "OK" if self.response_code == event_rules.OK else self.reason[:200]


def answer_of(
    event: DrEvent, decision: OptDecision, response_id: int | None, request_id: str | None
) -> Answer:
    """The answer ``decision`` to the version ``event``, stored as ``response_id``."""
    return Answer(
        event_id=event.event_id,
        modification_number=event.modification_number,
        opt=decision.opt,
        response_code=decision.response_code,
        reason=decision.reason,
        response_id=response_id if event.response_required == "always" else None,
        request_id=request_id,
    )


def invalid(raw: object, problem: str, request_id: str) -> Answer | None:
    """optOut with 454 (not stored) for a raw event the VEN cannot read; None when it has no
    readable version key or asked for no answer."""
    key = version_key(raw)
    if key is None or not response_required(raw):
        return None
    return Answer(key[0], key[1], "optOut", event_rules.INVALID_DATA, problem, None, request_id)


def save_answer(
    session: Session,
    event: DrEvent,
    decision: OptDecision,
    now: datetime,
    request_id: str | None,
) -> Answer:
    """Store ``decision`` as the answer to the stored version ``event`` and return it."""
    return saved_answer(session, _stored_row(session, event), event, decision, now, request_id)


def saved_answer(
    session: Session,
    row: EventRow,
    event: DrEvent,
    decision: OptDecision,
    now: datetime,
    request_id: str | None,
) -> Answer:
    """Store ``decision`` as the answer to the stored version ``row`` and return it."""
    response = _save_response(session, row, event, decision, now, request_id, True)
    return answer_of(event, decision, response.id, request_id)


def save_decisions(
    sessions: sessionmaker[Session],
    vtn_id: str,
    decided: Mapping[int, tuple[DrEvent, OptDecision]],
    now: datetime,
    request_id: str,
) -> dict[int, Answer]:
    """Store the planner's answers to the new versions of one distribution of ``vtn_id``, by
    position in the message, in one transaction and one insert round; the answers to send
    (those the versions asked for), by position."""
    out: dict[int, Answer] = {}
    saved: list[tuple[int, DrEvent, OptDecision, ResponseRow]] = []
    with db.unit_of_work(sessions) as session, session.no_autoflush:
        for position, (event, decision) in decided.items():
            row = _stored_row(session, event)
            response = _save_response(session, row, event, decision, now, request_id, False)
            saved.append((position, event, decision, response))
            logger.info(
                "VTN %s: event %s modification %d (%s%s): %s %d, %s",
                vtn_id,
                event.event_id,
                event.modification_number,
                event.status,
                ", test" if event.test_event else "",
                decision.opt,
                decision.response_code,
                decision.reason,
            )
        session.flush()  # one insert round for all the answers; their ids are known now
        for position, event, decision, response in saved:
            if event.response_required == "always":
                out[position] = answer_of(event, decision, response.id, request_id)
    return out


def unsent(sessions: sessionmaker[Session], vtn_id: str, now: datetime) -> list[Answer]:
    """The newest answer to each event's newest version of ``vtn_id`` that the VTN asked for
    and never acknowledged, for events not over at ``now``."""
    out = []
    with db.unit_of_work(sessions) as session:
        for event in store.latest_events(session, vtn_id, current_at=now, children=False):
            if event.is_over_at(now) or event.response_required != "always":
                continue
            stored = store.last_answer(
                session, event.vtn_id, event.event_id, event.modification_number
            )
            if stored is not None and stored.required and stored.sent_at is None:
                out.append(answer_of(event, stored.decision, stored.response_id, stored.request_id))
    return out


def mark_sent(sessions: sessionmaker[Session], ids: Sequence[int], sent_at: datetime) -> None:
    """Record that the VTN acknowledged the stored answers ``ids`` at ``sent_at`` [aware UTC]."""
    with db.unit_of_work(sessions) as session:
        store.mark_sent(session, ids, sent_at)


def _stored_row(session: Session, event: DrEvent) -> EventRow:
    """The stored row of the version ``event`` (without its intervals), about to be answered;
    raises StoredDataError when it vanished."""
    row = store.event_row(
        session, event.vtn_id, event.event_id, event.modification_number, children=False
    )
    if row is None:
        raise store.StoredDataError(
            f"event {event.event_id} modification {event.modification_number} vanished "
            "from the store before its answer was saved"
        )
    return row


def _save_response(
    session: Session,
    row: EventRow,
    event: DrEvent,
    decision: OptDecision,
    now: datetime,
    request_id: str | None,
    flush: bool,
) -> ResponseRow:
    """Store ``decision`` as the answer to ``row``, to be sent where the version asked for
    answers; ``flush``: at once (the answer's id is needed now) or with the caller's batch."""
    return store.save_response(
        session,
        row,
        decision,
        now,
        required=event.response_required == "always",
        request_id=request_id,
        flush=flush,
    )

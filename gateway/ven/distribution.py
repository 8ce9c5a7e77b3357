"""One ``oadrDistributeEvent`` from one VTN, handled by the gateway's rules, not openleadr's.

openleadr keeps events in memory only and answers with its own, incomplete rules
(``docs/openadr-notes.md``). :class:`DistributionHandler` takes the whole message instead:

1. each event is parsed (:mod:`gateway.ven.adapter`); one that cannot be read, or has a
   field outside the bounds of :mod:`gateway.ven.limits`, is answered optOut with 454 and not
   stored (nor cancelled by implication: the distribution named it); a distribution whose
   requestID is too long to store answers all its events so;
2. in one transaction each version is judged against the newest stored version of the same
   event (:func:`gateway.ven.event_rules.classify`): a new or higher version is stored (with its
   randomised start, or for a cancellation the moment it takes effect); an equal one is no
   change; a lower one is stored for the record and answered 450, even when the newer
   version is a cancellation. Events the VEN knows that the distribution leaves out are
   cancelled by implication (an empty distribution cancels them all);
3. new versions are answered: a cancellation with optIn; a version whose intervals do not
   add up to its active period (conformance rule 8) with optOut and 459; a version with a
   signal the programme's signal mapping does not know with optOut and 460; all three
   without asking the planner; anything else by the planner;
4. every answer is stored with its reason and the requestID of the distribution it answers
   before it is sent (conformance rule 42: the answer carries that requestID, also when it
   goes out later, in another message).

Conformance rules 12 and 62: with response_required = always, every event of every
distribution is answered, unchanged, new, changed and cancelled ones alike, also the events
a VTN sends again in answer to ``oadrRequestEvent`` after a restart of the VEN. A version
already answered is answered again with its STORED decision (opt, code, reason), never by
asking the planner again; its stored answer then carries this distribution's requestID and
is unsent until the VTN acknowledges it. (An earlier rule here, "an equal version is not
answered twice", broke rules 12 and 62 and is gone: the specification wins.)

:meth:`DistributionHandler.handle` returns the answers to send; the caller sends them in one
``oadrCreatedEvent`` and calls :meth:`DistributionHandler.mark_sent` once the VTN
acknowledged it. The caller also makes sure that one task at a time changes or sends the
answers of one VTN (:class:`gateway.ven.ei_event.EventExchange` holds a lock around each
distribution, opt change and resend). The answers are built and stored by
:mod:`gateway.ven.answers`; the planner is asked through :mod:`gateway.ven.planner_decisions`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway import db
from gateway.clock import Clock
from gateway.events import DrEvent, OptDecision
from gateway.ven import event_rules, store
from gateway.ven.adapter import (
    MalformedEventError,
    parse_event,
    request_id_problem,
    version_key,
)
from gateway.ven.answers import (
    Answer,
    answer_of,
    invalid,
    save_answer,
    save_decisions,
    saved_answer,
)
from gateway.ven.answers import mark_sent as mark_answers_sent
from gateway.ven.answers import unsent as unsent_answers
from gateway.ven.planner_decisions import Decide, DecideMany, PlannerDecisions, Unsupported

logger = logging.getLogger(__name__)

CANCELLATION_ACK = OptDecision(opt="optIn", reason="cancellation acknowledged")


@dataclass(frozen=True)
class Handled:
    """What one distribution came to."""

    to_send: list[Answer]
    """An answer to every event of the distribution that asked for one, in message order."""
    opted_in: bool
    """The planner opted in to a new version that moves load (not a test event)."""


@dataclass
class _Triage:
    """What one transaction found for the events of a distribution, in message order."""

    answers: dict[int, Answer]
    """Answers known at once (450, 459, 460, cancellations, stored ones), by position in the
    message."""
    to_decide: dict[int, DrEvent]
    """New versions for the planner, by position."""
    new_versions: list[DrEvent]


class DistributionHandler:
    """Handles the distributions of one VTN.

    vtn_id: the VTN's id in our configuration
    session_factory: sessions of the state store
    clock: the injected clock; receipt and answer times come from it
    decide: the planner's answer to a version
    ven_id: the VEN id the VTN knows us by now (for targets and the randomisation seed)
    unsupported: the signals of a version the signal mapping cannot act on; a version with
        any is answered optOut with 460 without asking the planner
    decide_many: the planner's answers to all new versions of a distribution at once (one
        look at the fleet, off the event loop); None asks ``decide`` once per version
    """

    def __init__(
        self,
        vtn_id: str,
        session_factory: sessionmaker[Session],
        clock: Clock,
        decide: Decide,
        ven_id: Callable[[], str | None],
        unsupported: Unsupported,
        decide_many: DecideMany | None = None,
    ) -> None:
        self.vtn_id = vtn_id
        self._sessions = session_factory
        self._clock = clock
        self._planner = PlannerDecisions(vtn_id, decide, decide_many)
        self._ven_id = ven_id
        self._unsupported = unsupported

    async def handle(self, raw_events: Sequence[Any], request_id: str) -> Handled:
        """Judge, store and answer one distribution: the answers to send, in message order,
        and whether the planner opted in to a version that moves load.

        request_id: the distribution's requestID; every answer is stored with it and carries it

        Never raises for one bad event (it is answered 454); a database failure propagates,
        so that nothing is answered that was not stored.
        """
        now = self._clock.now()
        ven_id = self._ven_id()
        if problem := request_id_problem(request_id):
            logger.warning(
                "VTN %s sent a distribution the VEN cannot store: %s", self.vtn_id, problem
            )
            refused = (invalid(raw, problem, request_id) for raw in raw_events)
            return Handled([a for a in refused if a is not None], opted_in=False)

        def parse_and_triage() -> tuple[dict[int, Answer], dict[int, DrEvent], _Triage]:
            answers, parsed, unreadable = self._parse(raw_events, request_id, ven_id)
            return answers, parsed, self._triage(parsed, now, request_id, unreadable)

        # Parsing and storing a distribution of 100 events, or of one with thousands of
        # intervals, takes long: a worker thread does it, the event loop only waits.
        answers, parsed, triage = await asyncio.to_thread(parse_and_triage)
        # Stored either way; sent only where the version asked (oadrResponseRequired).
        answers.update(
            (position, answer)
            for position, answer in triage.answers.items()
            if parsed[position].response_required == "always"
        )
        decisions = await self._planner.ask(list(triage.to_decide.values()))
        decided = {
            position: (event, decision)
            for (position, event), decision in zip(triage.to_decide.items(), decisions, strict=True)
        }
        if decided:
            stored = await asyncio.to_thread(
                save_decisions, self._sessions, self.vtn_id, decided, self._clock.now(), request_id
            )
            answers.update(stored)
        return Handled(
            to_send=[answers[position] for position in sorted(answers)],
            opted_in=any(
                decision.opt == "optIn" and not event.test_event
                for event, decision in decided.values()
            ),
        )

    async def record(self, event: DrEvent, decision: OptDecision) -> Answer | None:
        """Store a new answer to the stored version ``event`` (a change of plan); the answer
        to send, or None when the version said response_required = never.

        The new answer carries the requestID of the distribution the version's answer
        answered last (conformance rule 42; ``docs/conformance.md``): the change answers the
        same distribution again. None when that answer was stored before revision 0007.
        """
        now = self._clock.now()

        def store_it() -> Answer:
            with db.unit_of_work(self._sessions) as session:
                before = store.last_answer(
                    session, event.vtn_id, event.event_id, event.modification_number
                )
                request_id = None if before is None else before.request_id
                return save_answer(session, event, decision, now, request_id)

        answer = await asyncio.to_thread(store_it)
        logger.info(
            "VTN %s: event %s modification %d: answer changed to %s, %s",
            self.vtn_id,
            event.event_id,
            event.modification_number,
            decision.opt,
            decision.reason,
        )
        return answer if event.response_required == "always" else None

    async def unsent(self) -> list[Answer]:
        """The newest answer to each event's newest version that the VTN asked for and never
        acknowledged, for events not over yet."""
        return await asyncio.to_thread(
            unsent_answers, self._sessions, self.vtn_id, self._clock.now()
        )

    async def mark_sent(self, answers: Sequence[Answer], sent_at: datetime) -> None:
        """Record that the VTN acknowledged ``answers`` at ``sent_at`` [aware UTC]."""
        ids = [a.response_id for a in answers if a.response_id is not None]
        if ids:
            await asyncio.to_thread(mark_answers_sent, self._sessions, ids, sent_at)

    def _parse(
        self, raw_events: Sequence[Any], request_id: str, ven_id: str | None
    ) -> tuple[dict[int, Answer], dict[int, DrEvent], set[str]]:
        """The events read, by position; the 454 answers to those that cannot be; the ids of
        the unreadable events the distribution names (no implied cancel for them)."""
        answers: dict[int, Answer] = {}
        parsed: dict[int, DrEvent] = {}
        unreadable: set[str] = set()
        for position, raw in enumerate(raw_events):
            try:
                event = parse_event(raw, self.vtn_id)
            except MalformedEventError as exc:
                logger.warning("VTN %s sent an event the VEN cannot read: %s", self.vtn_id, exc)
                if (key := version_key(raw)) is not None:
                    unreadable.add(key[0])
                if (answer := invalid(raw, str(exc), request_id)) is not None:
                    answers[position] = answer
                continue
            parsed[position] = replace(event, ven_id=ven_id)
        return answers, parsed, unreadable

    # -- one transaction each ----------------------------------------------------------

    def _triage(
        self,
        parsed: Mapping[int, DrEvent],
        now: datetime,
        request_id: str,
        unreadable: Collection[str] = (),
    ) -> _Triage:
        triage = _Triage(answers={}, to_decide={}, new_versions=[])
        with db.unit_of_work(self._sessions) as session:
            # The events not over, and those of this distribution: the ones the rules judge
            # against (events over cannot be cancelled by implication any more).
            # Their headers: the rules judge numbers, starts, ends and cancellations; the
            # signals of a version are read only where a new one is compared with it.
            current = store.latest_events(
                session,
                self.vtn_id,
                current_at=now,
                also={event.event_id for event in parsed.values()},
                children=False,
            )
            known = {e.event_id: e for e in current}
            for position, event in parsed.items():
                latest = known.get(event.event_id)
                verdict = event_rules.classify(
                    event.modification_number,
                    None if latest is None else latest.modification_number,
                )
                if verdict == "stale":
                    assert latest is not None  # classify says stale only against a known one
                    triage.answers[position] = self._stale(session, event, latest, now, request_id)
                elif verdict == "same":
                    self._same(session, event, position, triage, request_id)
                else:
                    stored = self._with_timing(event, now, latest)
                    store.save_event(session, stored, now)
                    known[event.event_id] = stored
                    triage.new_versions.append(stored)
                    if stored.status == "cancelled":
                        triage.answers[position] = save_answer(
                            session, stored, CANCELLATION_ACK, now, request_id
                        )
                        logger.info(
                            "VTN %s cancelled event %s (modification %d); stops here at %s",
                            self.vtn_id,
                            stored.event_id,
                            stored.modification_number,
                            stored.cancel_effective_at,
                        )
                    elif decision := self._refusal(stored) or self._not_kept_whole(
                        session, stored, latest, now
                    ):
                        triage.answers[position] = save_answer(
                            session, stored, decision, now, request_id
                        )
                    else:
                        triage.to_decide[position] = stored
            distributed = {event.event_id for event in parsed.values()} | set(unreadable)
            implied = [
                (event, self._implied_effective_at(event, now))
                for event in event_rules.implied_cancellations(known.values(), distributed, now)
            ]
            store.imply_cancel(session, implied, now)
            for event, effective_at in implied:
                logger.info(
                    "VTN %s left event %s out of its distribution: cancelled by implication, "
                    "stops here at %s",
                    self.vtn_id,
                    event.event_id,
                    effective_at,
                )
        return triage

    def _implied_effective_at(self, event: DrEvent, now: datetime) -> datetime:
        """When a cancellation by implication of ``event`` takes effect: now plus a random
        delay within its startafter (one draw per version)."""
        delay_s = event_rules.random_delay_s(
            event.start_after_s, self._seed(), event.event_id, event.modification_number, "implied"
        )
        return now + timedelta(seconds=delay_s)

    def _refusal(self, event: DrEvent) -> OptDecision | None:
        """The optOut a new version gets without asking the planner: 459 when its intervals
        do not fill its active period (conformance rule 8), 460 when a signal is not in the
        programme's signal mapping; None when the planner decides."""
        if mismatches := event_rules.interval_mismatches(event):
            logger.warning(
                "VTN %s: event %s modification %d breaks conformance rule 8: %s; answered 459",
                self.vtn_id,
                event.event_id,
                event.modification_number,
                "; ".join(mismatches),
            )
            return OptDecision(
                "optOut",
                f"conformance rule 8: {'; '.join(mismatches)}",
                response_code=event_rules.COMPLIANCE_ERROR,
            )
        if unsupported := self._unsupported(event):
            return OptDecision(
                "optOut",
                f"signal(s) not in the programme's signal mapping: {', '.join(unsupported)}",
                response_code=event_rules.SIGNAL_NOT_SUPPORTED,
            )
        return None

    def _not_kept_whole(
        self, session: Session, event: DrEvent, previous: DrEvent | None, now: datetime
    ) -> OptDecision | None:
        """optOut for a new version of an event in force that the VEN cannot keep whole:
        one it declined (joining partway cannot deliver the intervals already past), or one
        that raises the ask of intervals already started. The event is judged whole. None
        when the planner decides (a first version, one not started, or one that asks no
        more of the past than the version taken part in)."""
        if previous is None or previous.status == "cancelled" or event.effective_start_at > now:
            return None
        before = store.last_answer(
            session, previous.vtn_id, previous.event_id, previous.modification_number
        )
        if before is None:
            return None
        if before.decision.opt == "optOut":
            return OptDecision(
                "optOut",
                f"modification {event.modification_number} of an event in force since "
                f"{event.effective_start_at:%Y-%m-%d %H:%M} UTC that modification "
                f"{previous.modification_number} declined: joining partway cannot deliver it",
            )
        whole = store.load_version(
            session, previous.vtn_id, previous.event_id, previous.modification_number
        )
        if raised := event_rules.raised_before(whole, event, now):
            return OptDecision(
                "optOut",
                f"modification {event.modification_number} raises the ask of intervals "
                f"already started, which cannot be delivered any more: {'; '.join(raised)}",
            )
        return None

    def _stale(
        self, session: Session, event: DrEvent, latest: DrEvent, now: datetime, request_id: str
    ) -> Answer:
        row, _ = store.save_event(session, self._with_timing(event, now, None), now)
        decision = OptDecision(
            "optOut",
            f"modification number {event.modification_number} is lower than "
            f"{latest.modification_number}, already received"
            + (" (a cancellation)" if latest.status == "cancelled" else ""),
            response_code=event_rules.OUT_OF_SEQUENCE,
        )
        logger.warning(
            "VTN %s sent event %s modification %d after modification %d: answered 450",
            self.vtn_id,
            event.event_id,
            event.modification_number,
            latest.modification_number,
        )
        return saved_answer(session, row, event, decision, now, request_id)

    def _same(
        self, session: Session, event: DrEvent, position: int, triage: _Triage, request_id: str
    ) -> None:
        """A version the VEN knows: no change to it, but answered again with the stored
        decision under this distribution's requestID (conformance rules 12 and 62)."""
        stored = store.last_answer(session, event.vtn_id, event.event_id, event.modification_number)
        if stored is None:
            # Stored, but the process stopped before the answer was: decide now.
            row = store.event_row(session, event.vtn_id, event.event_id, event.modification_number)
            if row is None:
                raise store.StoredDataError(
                    f"event {event.event_id} modification {event.modification_number} "
                    "vanished from the store"
                )
            triage.to_decide[position] = store.to_dr_event(row)
            return
        if not stored.required:
            return  # response_required = never: stored, never sent
        store.owe_again(session, stored.response_id, request_id)
        logger.debug(
            "VTN %s: event %s modification %d: no change; answered %s again from the store",
            self.vtn_id,
            event.event_id,
            event.modification_number,
            stored.decision.opt,
        )
        triage.answers[position] = answer_of(event, stored.decision, stored.response_id, request_id)

    # -- helpers -------------------------------------------------------------------------

    def _seed(self) -> str:
        return f"{self.vtn_id}/{self._ven_id() or '-'}"

    def _with_timing(self, event: DrEvent, now: datetime, previous: DrEvent | None) -> DrEvent:
        """The version with this VEN's randomised start (one draw per version), or for a
        cancellation the moment it takes effect: now plus a random delay within startafter,
        the start staying where the previous version put it."""
        delay_s = event_rules.random_delay_s(
            event.start_after_s, self._seed(), event.event_id, event.modification_number
        )
        if event.status == "cancelled":
            return replace(
                event,
                cancel_effective_at=now + timedelta(seconds=delay_s),
                start_offset_s=0.0 if previous is None else previous.start_offset_s,
            )
        return replace(event, start_offset_s=delay_s)

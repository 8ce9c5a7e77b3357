"""The EiEvent exchange of one VTN connection: ``oadrDistributeEvent`` in, ``oadrCreatedEvent`` out.

:class:`EventExchange` takes every distribution the openleadr client receives
(:class:`gateway.ven.openleadr_client.GatewayClient`) and sends the answers:

- every ``oadrDistributeEvent`` goes to :mod:`gateway.ven.distribution`, which applies the
  2.0b rules of :mod:`gateway.ven.event_rules` (modification numbers and 450, cancellations
  sent again, implied cancel, startafter, 460, response_required; ``docs/conformance.md``),
  stores every version and answer, and returns an answer to every event of the distribution
  (conformance rules 12 and 62: unchanged, new, changed and cancelled ones, known ones
  answered again from the store), sent in one ``oadrCreatedEvent`` under the distribution's
  requestID (rule 42); they are marked sent once the VTN acknowledges them. An empty
  distribution (which openleadr does not pass on) reaches it through an ``after_parse_xml``
  hook (:meth:`EventExchange.on_empty_distribution`). A change of plan sends a new answer
  (:meth:`EventExchange.update_opt`); answers never acknowledged go out again
  (:meth:`EventExchange.resend_unsent`). Every send groups its answers by the requestID
  stored with each (one ``oadrCreatedEvent`` per requestID) and never sends an answer to a
  distribution under an empty or generated requestID;
- one writer per answer: a lock per connection (``_answering``) is held by the task that
  handles a distribution, changes an opt or resends unacknowledged answers, from reading or
  storing the answers until the VTN acknowledged (or refused) them. So the answer to one
  event version is changed and sent by one task at a time, and an answer awaiting the VTN's
  acknowledgement is never sent a second time meanwhile by another task (two tasks racing
  to send the same stored answer); answering a version again because the VTN sent it again
  is another matter, and required. A resend finding the lock taken does nothing: the holder
  sends what it owes and the next plan round resends what is left;
- the poll that brings a distribution waits a second at most for its answers; a longer one
  (a hundred events, thousands of intervals) is answered in the background, in arrival
  order, while the VEN polls on at the VTN's rhythm; two at most wait so, a third holds the
  poll (back-pressure). :meth:`EventExchange.settled` waits for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openleadr import utils as openleadr_utils

from gateway.clock import Clock
from gateway.events import DrEvent, OptDecision
from gateway.ven.answers import Answer
from gateway.ven.distribution import DistributionHandler
from gateway.ven.wire import created_event_payload

logger = logging.getLogger(__name__)

_POLL_HOLD_S = 1.0
"""How long after its request the poll that brought a distribution waits for it to be
answered [wall s]; the time spent receiving and reading the distribution counts. A
distribution that takes longer (a hundred events, thousands of intervals) is answered in the
background while the VEN polls on at the VTN's rhythm."""
_BACKLOG = 2
"""Distributions of one VTN answered in the background at most: a poll bringing more waits
for the oldest (back-pressure; the messages waiting in memory stay bounded)."""


class EventExchange:
    """The answers of one connection to its VTN's events.

    vtn_id: the VTN's id in our configuration
    distribution: judges, stores and answers each distribution
    clock: the injected clock; when the VTN acknowledged answers
    current_client: the connection's openleadr client now; None while stopped
    registered: whether the connection is registered with the VTN now
    after_opt_in: called after a distribution whose answers opt in to a version that moves
        load (the daemon plans at once); None calls nothing
    """

    def __init__(
        self,
        vtn_id: str,
        distribution: DistributionHandler,
        clock: Clock,
        current_client: Callable[[], Any],
        registered: Callable[[], bool],
        after_opt_in: Callable[[], None] | None = None,
    ) -> None:
        self.vtn_id = vtn_id
        self.distribution = distribution
        self._clock = clock
        self._current_client = current_client
        self._registered = registered
        self._after_opt_in = after_opt_in
        self._answering = asyncio.Lock()
        """Held while one task stores or sends answers to this VTN (see the module notes)."""
        self._background: set[asyncio.Task[None]] = set()
        """Distributions being answered after the poll that brought them returned; they take
        ``_answering`` in arrival order (asyncio locks are fair)."""
        self._lower_case_vtn_logged = False

    async def on_distribution(self, client: Any, message: Mapping[str, Any]) -> None:
        """One ``oadrDistributeEvent``, answered by :meth:`_answer_distribution`. The poll that
        brought it waits until ``_POLL_HOLD_S`` after its request at most: a distribution that
        takes longer is answered in the background and the VEN polls on (no more than
        ``_BACKLOG`` wait so)."""
        task = asyncio.create_task(self._answer_distribution(client, message))
        self._background.add(task)
        task.add_done_callback(self._answered)
        loop = asyncio.get_running_loop()
        sent_at = getattr(client, "request_sent_at", None)
        hold_s = _POLL_HOLD_S if sent_at is None else sent_at + _POLL_HOLD_S - loop.time()
        if hold_s > 0:
            await asyncio.wait({task}, timeout=hold_s)
        while len(self._background) > _BACKLOG:
            await asyncio.wait(set(self._background), return_when=asyncio.FIRST_COMPLETED)

    def _answered(self, task: asyncio.Task[None]) -> None:
        """A distribution's task ended: a failure is logged here, the task boundary."""
        self._background.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error(
                "VTN %s: answering a distribution failed; its answers go out when stored "
                "and the VTN distributes the events again: %s: %s",
                self.vtn_id,
                type(error).__name__,
                error,
                exc_info=error,
            )

    async def settled(self) -> None:
        """Wait until every distribution received so far has been answered (or failed)."""
        while self._background:
            await asyncio.wait(set(self._background))

    async def drain(self, timeout_s: float) -> None:
        """Give the distributions being answered ``timeout_s`` [wall s] to store and send
        their answers, then cancel them (the client is stopping): an answer stored and not
        sent goes out with the next resend."""
        if self._background:
            pending = set(self._background)
            await asyncio.wait(pending, timeout=timeout_s)
            for task in pending:
                task.cancel()

    async def _answer_distribution(self, client: Any, message: Mapping[str, Any]) -> None:
        """One ``oadrDistributeEvent``: judged, stored and answered by our rules
        (:mod:`gateway.ven.distribution`), then one ``oadrCreatedEvent`` with the answers the
        VTN asked for and has not had yet."""
        events = message.get("events") or []
        if isinstance(events, Mapping):
            events = [events]
        vtn_id = message.get("vtn_id")
        if isinstance(vtn_id, str) and vtn_id.islower() and not self._lower_case_vtn_logged:
            # openleadr would answer 452 to every event (pitfall 7); the id is the VTN's.
            logger.info("VTN %s uses a lower-case VTN id %r; accepted", self.vtn_id, vtn_id)
            self._lower_case_vtn_logged = True
        request_id = self._request_id_of(message)
        async with self._answering:
            handled = await self.distribution.handle(events, request_id)
            if handled.to_send:
                await self._send_answers(client, handled.to_send)
        if handled.opted_in and self._after_opt_in is not None:
            self._after_opt_in()

    def _request_id_of(self, message: Mapping[str, Any]) -> str:
        """The distribution's requestID. The schema requires one and openleadr drops a
        message without; should one still arrive, the answers get an id of their own, stored
        with them so that every later send of them carries the same one."""
        request_id = message.get("request_id")
        if request_id is not None and str(request_id):
            return str(request_id)
        generated = str(openleadr_utils.generate_id())
        logger.warning(
            "VTN %s sent a distribution without a requestID; its answers carry %s",
            self.vtn_id,
            generated,
        )
        return generated

    async def update_opt(self, event: DrEvent, decision: OptDecision) -> bool:
        """Change the answer to the stored version ``event`` (a change of plan): store it,
        then send it in an ``oadrCreatedEvent`` (openleadr's ``created_event`` cannot carry a
        response code) under the requestID of the distribution the version's answer answered
        last (``docs/conformance.md``, rule 42). True when the VTN acknowledged it; an
        unacknowledged answer stays unsent and :meth:`resend_unsent` tries again."""
        async with self._answering:
            answer = await self.distribution.record(event, decision)
            client = self._current_client()
            if answer is None or client is None or not self._registered():
                return False
            return await self._send_answers(client, [answer]) == 1

    async def resend_unsent(self) -> int:
        """Send again the answers the VTN asked for but never acknowledged (of versions not
        over yet), each under the requestID stored with it; the number acknowledged now.

        Does nothing while another task stores or sends answers to this VTN: that task
        sends what it owes, and the next round what is left."""
        client = self._current_client()
        if client is None or not self._registered() or self._answering.locked():
            return 0
        async with self._answering:
            answers = await self.distribution.unsent()
            return await self._send_answers(client, answers)

    async def on_empty_distribution(self, message_type: str, payload: Any) -> None:
        """openleadr's ``after_parse_xml`` hook: a distribution with no events at all (which
        openleadr does not pass on) cancels every known event by implication."""
        client = self._current_client()
        if message_type != "oadrDistributeEvent" or client is None:
            return
        if isinstance(payload, Mapping) and not payload.get("events"):
            async with self._answering:
                await self.distribution.handle([], self._request_id_of(payload))

    async def _send_answers(self, client: Any, answers: Sequence[Answer]) -> int:
        """Send ``answers``, one ``oadrCreatedEvent`` per requestID (conformance rule 42), and
        record each message's answers sent once the VTN acknowledged it; the number of answers
        acknowledged. Those not acknowledged stay unsent and go out again (at the next plan
        round, or when the VTN distributes their events again). An answer without a requestID
        (stored before revision 0007) is not sent: the VTN's next distribution of its event
        answers it under that distribution's requestID."""
        by_request: dict[str, list[Answer]] = {}
        for answer in answers:
            if answer.request_id is None:
                logger.debug(
                    "VTN %s: the answer to %s#%d has no requestID; it waits for the next "
                    "distribution of the event",
                    self.vtn_id,
                    answer.event_id,
                    answer.modification_number,
                )
                continue
            by_request.setdefault(answer.request_id, []).append(answer)
        acknowledged = 0
        for request_id, group in by_request.items():
            if await self._send_answers_now(client, group, request_id):
                acknowledged += len(group)
        return acknowledged

    async def _send_answers_now(
        self, client: Any, answers: Sequence[Answer], request_id: str
    ) -> bool:
        message = client._create_message(
            "oadrCreatedEvent", **created_event_payload(answers, request_id, client.ven_id)
        )
        response_type, payload = await client._perform_request("EiEvent", message)
        code = (payload or {}).get("response", {}).get("response_code")
        if response_type != "oadrResponse" or code != 200:
            logger.warning(
                "VTN %s did not acknowledge the answers to %s (%s, code %s); they stay unsent",
                self.vtn_id,
                ", ".join(f"{a.event_id}#{a.modification_number}" for a in answers),
                response_type,
                code,
            )
            return False
        await self.distribution.mark_sent(answers, self._clock.now())
        return True

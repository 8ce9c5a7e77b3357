"""The daemon's availability round: send what the VTNs do not know yet.

Every round, each stored window that no VTN has answered is sent as an optOut availability
schedule to the VTN serving its site (targets: the site's OpenADR resource id; market
context: the VTN's ``opt_market_context``), and each removed window whose acknowledged opt
was not cancelled yet is cancelled at the VTN it went to. A window is sent with the optID it
was stored with, so a resend after a crash is the same opt for the VTN; once the VTN has
answered (acknowledged or refused) it is not sent again. Windows of sites that no VTN serves
are stored and read by the planner, never sent; a VTN that is not connected, or does not
answer, gets them in a later round.

Logs changes of state: a window sent, refused or cancelled; the first failure of a window
(not every retry) and its recovery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import Clock
from gateway.db import unit_of_work
from gateway.errors import GatewayError
from gateway.maintenance import store
from gateway.settings import Settings
from gateway.ven.availability import (
    AvailabilityCancel,
    AvailabilitySchedule,
    OptAnswer,
    OptRequest,
)
from models import AvailabilityWindow

log = logging.getLogger(__name__)


class OptSender(Protocol):
    """What the round needs of a VEN connection (``gateway.ven.client.VenConnection``)."""

    @property
    def available(self) -> bool: ...

    async def send_availability(self, request: OptRequest) -> OptAnswer: ...


@dataclass(frozen=True)
class RoundResult:
    """What one round did, as window ids."""

    sent: tuple[int, ...] = ()
    """Windows whose oadrCreateOpt the VTN answered in this round."""
    cancelled: tuple[int, ...] = ()
    """Windows whose oadrCancelOpt the VTN answered in this round."""
    failed: tuple[int, ...] = ()
    """Windows still to send whose last attempt (in this round or before) got no final answer."""


@dataclass(frozen=True)
class _Job:
    window_id: int
    vtn_id: str
    request: OptRequest


class AvailabilitySender:
    """Sends the stored windows' opts through the VEN connections, one round at a time."""

    def __init__(
        self, settings: Settings, clock: Clock, session_factory: sessionmaker[Session]
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._sessions = session_factory
        self._failing: set[int] = set()
        """Windows whose last attempt failed (their failure is logged once)."""

    async def run_once(self, connections: Mapping[str, OptSender]) -> RoundResult:
        """One round over ``connections`` (by VTN id); returns what happened."""
        now = self.clock.now()
        with unit_of_work(self._sessions) as session:
            creates = [self._create_job(row) for row in store.unsent(session, now)]
            cancels = [
                _Job(row.id, row.vtn_id, AvailabilityCancel(row.opt_id))
                for row in store.uncancelled(session, now)
                if row.vtn_id is not None
            ]
        self._failing &= {job.window_id for job in creates + cancels if job is not None}
        sent = await self._send(
            [j for j in creates if j is not None], connections, store.record_sent
        )
        cancelled = await self._send(cancels, connections, _record_cancel)
        return RoundResult(
            sent=sent,
            cancelled=cancelled,
            failed=tuple(sorted(self._failing)),
        )

    def _create_job(self, row: AvailabilityWindow) -> _Job | None:
        """The opt of a stored window, or None when no VTN serves its site (any more)."""
        site = next((s for s in self.settings.site if s.id == row.site_id), None)
        if site is None or site.vtn is None:
            return None
        vtn = next(v for v in self.settings.vtn if v.id == site.vtn)
        schedule = AvailabilitySchedule(
            opt_id=row.opt_id,
            resource_id=site.openadr_resource_id,
            start_at=row.start_at,
            end_at=row.end_at,
            opt_type="optOut",
            market_context=vtn.opt_market_context,
        )
        return _Job(row.id, vtn.id, schedule)

    async def _send(
        self,
        jobs: list[_Job],
        connections: Mapping[str, OptSender],
        record: Callable[[Session, int, str, OptAnswer, datetime], None],
    ) -> tuple[int, ...]:
        answered = []
        for job in jobs:
            connection = connections.get(job.vtn_id)
            if connection is None or not connection.available:
                continue  # not connected: the connection says so itself; next round
            try:
                answer = await connection.send_availability(job.request)
            except GatewayError as exc:
                self._failed(job, str(exc))
                continue
            if not answer.final:
                self._failed(job, f"the VTN answered {answer.response_code} {answer.description}")
                continue
            with unit_of_work(self._sessions) as session:
                record(session, job.window_id, job.vtn_id, answer, self.clock.now())
            self._answered(job, answer)
            answered.append(job.window_id)
        return tuple(answered)

    def _failed(self, job: _Job, error: str) -> None:
        with unit_of_work(self._sessions) as session:
            store.record_failure(session, job.window_id, error)
        if job.window_id not in self._failing:
            log.warning(
                "maintenance window %d: %s to VTN %s got no answer, will retry: %s",
                job.window_id,
                _verb(job.request),
                job.vtn_id,
                error,
            )
        self._failing.add(job.window_id)

    def _answered(self, job: _Job, answer: OptAnswer) -> None:
        self._failing.discard(job.window_id)
        level = logging.INFO if answer.acknowledged else logging.WARNING
        log.log(
            level,
            "maintenance window %d: %s %s by VTN %s (%d %s)",
            job.window_id,
            _verb(job.request),
            "acknowledged" if answer.acknowledged else "refused",
            job.vtn_id,
            answer.response_code,
            answer.description,
        )


def _record_cancel(
    session: Session, window_id: int, vtn_id: str, answer: OptAnswer, at: datetime
) -> None:
    store.record_cancel_sent(session, window_id, answer, at)


def _verb(request: OptRequest) -> str:
    if isinstance(request, AvailabilitySchedule):
        return f"availability schedule {request.opt_id}"
    return f"cancellation of {request.opt_id}"

"""The VEN's registration with one VTN, kept across restarts (``ven_registrations``).

After each successful registration the venID and registrationID are stored (one row per VTN),
and the next start of the connection, in this process or after a crash, registers with the
stored venID (read once the VTN has answered openleadr's query of registration), so that the
VTN sees the same VEN and distributes its events again rather than registering a second VEN.
A stored venID takes precedence over a configured ``ven_id``. openleadr does not send a
registrationID when it registers (only its re-registration does), so the stored one is a
record, not a request. A VTN that answers with another venID wins: that one is stored and
logged once.

A VTN that refuses to register our stored venID (463, as an openleadr VTN with mutual TLS does
after a restart that lost its registrations) is asked for a new registration at the next
attempt (:attr:`Registration.refused_ven_id`, read by :mod:`gateway.ven.reconnect`); the new
venID is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway import db
from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.settings_vtn import VtnSettings
from models import VenRegistration

logger = logging.getLogger(__name__)


class Registration:
    """The venID and registrationID of the VEN towards one VTN.

    vtn: the VTN's settings (its id keys the stored row; its ``ven_id`` is the first venID)
    session_factory: sessions of the state store
    clock: the injected clock; when the VTN registered us
    """

    def __init__(
        self, vtn: VtnSettings, session_factory: sessionmaker[Session], clock: Clock
    ) -> None:
        self.vtn = vtn
        self._session_factory = session_factory
        self._clock = clock
        self.ven_id: str | None = vtn.ven_id
        """The venID the VTN assigned at the last registration; before that the one stored
        by an earlier run (once :meth:`query_then_resume` has read it) or the configured one."""
        self.registration_id: str | None = None
        """The registrationID from the last registration; None before."""
        self.refused_ven_id: str | None = None
        """A venID the VTN refused to register (463); the next attempt registers afresh."""

    async def query_then_resume(self, client: Any, query: Callable[[], Awaitable[Any]]) -> Any:
        """openleadr's ``query_registration``, then the stored venID for its registration.

        openleadr's ``run`` queries the VTN, then registers with ``client.ven_id``. The store
        is read only once the VTN has answered: a VTN that cannot be reached (or whose
        answers are dropped) never costs a database round trip.
        """
        result = await query()
        if isinstance(result, tuple) and result and result[0] is not None:
            await self._resume()
            client.ven_id = self.ven_id
        return result

    async def _resume(self) -> None:
        """Register with the venID an earlier run stored, if any; GatewayError when the
        store cannot be read (registering as a new VEN instead would orphan the old one)."""
        try:
            stored = await asyncio.to_thread(self._stored_ven_id)
        except SQLAlchemyError as exc:
            raise GatewayError(
                f"VTN {self.vtn.id}: cannot read the stored registration: {exc}"
            ) from exc
        if stored is None or stored == self.ven_id:
            return
        if self.ven_id is not None:
            logger.warning(
                "VTN %s: registering with VEN id %s from the last registration, not %s "
                "(the configured ven_id); delete its ven_registrations row to change it",
                self.vtn.id,
                stored,
                self.ven_id,
            )
        self.ven_id = stored

    async def keep(self, client: Any) -> None:
        """Take the venID and registrationID the VTN gave ``client`` and store them.

        Raises :class:`GatewayError` when they cannot be stored, caused by the database's
        error: the caller stops the client, and its next start registers again.
        """
        asked = self.ven_id
        self.ven_id = _optional_str(client.ven_id)
        self.registration_id = _optional_str(client.registration_id)
        if asked is not None and self.ven_id != asked:
            logger.warning(
                "VTN %s registered us as VEN id %s, not %s as asked; keeping %s",
                self.vtn.id,
                self.ven_id,
                asked,
                self.ven_id,
            )
        if self.ven_id is None or self.registration_id is None:
            return
        try:
            await asyncio.to_thread(
                self._save, self.ven_id, self.registration_id, self._clock.now()
            )
        except SQLAlchemyError as exc:
            raise GatewayError(
                f"VTN {self.vtn.id}: registered as VEN id {self.ven_id}, but the "
                f"registration could not be stored: {exc}"
            ) from exc

    def _stored_ven_id(self) -> str | None:
        with db.unit_of_work(self._session_factory) as session:
            row = session.get(VenRegistration, self.vtn.id)
            return None if row is None else row.ven_id

    def _save(self, ven_id: str, registration_id: str, at: datetime) -> None:
        """Insert or update this VTN's row; ``at`` is when the VTN registered us [aware UTC]."""
        with db.unit_of_work(self._session_factory) as session:
            row = session.get(VenRegistration, self.vtn.id)
            if row is None:
                row = VenRegistration(vtn_id=self.vtn.id, registered_at=at)
                session.add(row)
            elif row.ven_id != ven_id:
                row.registered_at = at
            row.ven_id = ven_id
            row.registration_id = registration_id
            row.vtn_url = str(self.vtn.url)
            row.updated_at = at


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)

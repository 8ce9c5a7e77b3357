"""The count of a VTN's messages the VEN refused at its edge, kept in the database.

One row per (VTN, reason) of ``inbound_refusals`` (:class:`models.InboundRefusal`); ``/metrics``
serves them as ``dr_gateway_inbound_refusals_total`` whichever process scrapes, and they
survive a restart like every other figure there.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway import db
from gateway.clock import Clock
from models import InboundRefusal


async def count(
    sessions: sessionmaker[Session], clock: Clock, vtn_id: str, reason: str, refused: int = 1
) -> None:
    """Add ``refused`` refusals of ``vtn_id``'s messages for ``reason`` (in a worker thread)."""
    await asyncio.to_thread(_count, sessions, vtn_id, reason, refused, clock.now())


def _count(
    sessions: sessionmaker[Session], vtn_id: str, reason: str, refused: int, at: datetime
) -> None:
    for _attempt in range(2):  # a concurrent first insert of the same row: add to it instead
        try:
            with db.unit_of_work(sessions) as session:
                added = session.execute(
                    update(InboundRefusal)
                    .where(InboundRefusal.vtn_id == vtn_id, InboundRefusal.reason == reason)
                    .values(count=InboundRefusal.count + refused, last_at=at)
                )
                if getattr(added, "rowcount", 0) == 0:
                    session.add(
                        InboundRefusal(
                            vtn_id=vtn_id, reason=reason, count=refused, first_at=at, last_at=at
                        )
                    )
            return
        except IntegrityError:
            continue

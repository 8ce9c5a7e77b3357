"""The VEN's registration with each VTN (kept so that a restart registers as the same VEN), and
the messages it refused from each VTN at its edge."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class VenRegistration(Base):
    """The venID and registrationID a VTN last gave us; one row per configured VTN."""

    __tablename__ = "ven_registrations"

    vtn_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Our id of the VTN (``[[vtn]] id`` in the settings), not the VTN's own vtnID."""
    ven_id: Mapped[str] = mapped_column(String(128))
    registration_id: Mapped[str] = mapped_column(String(128))
    vtn_url: Mapped[str] = mapped_column(String(512))
    """The endpoint the registration was made at."""
    registered_at: Mapped[datetime]
    """When the VTN first confirmed this ven_id."""
    updated_at: Mapped[datetime]
    """When the VTN last registered us (the row was last written)."""


class InboundRefusal(Base):
    """How many messages from one VTN the VEN refused for one reason before any parser saw
    them (:mod:`gateway.ven.inbound`); ``/metrics`` serves the counts."""

    __tablename__ = "inbound_refusals"

    vtn_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Our id of the VTN (``[[vtn]] id``)."""
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    """oversize | empty | encoding | dtd | entity (``docs/conformance.md``)."""
    count: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]

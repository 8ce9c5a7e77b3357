"""The VEN's registration with each VTN, kept so that a restart registers as the same VEN."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
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

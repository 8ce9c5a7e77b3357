"""Flexibility offers (bids) per site and interval."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Offer(Base):
    """How much a site can shed or absorb in an interval, and with how much notice."""

    __tablename__ = "offers"
    __table_args__ = (UniqueConstraint("site_id", "interval_start_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    interval_start_at: Mapped[datetime]
    interval_end_at: Mapped[datetime]
    shed_kw: Mapped[float] = mapped_column(Float)
    absorb_kw: Mapped[float] = mapped_column(Float)
    notice_s: Mapped[float] = mapped_column(Float)
    computed_at: Mapped[datetime]

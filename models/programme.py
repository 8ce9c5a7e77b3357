"""Programmes: each market context's baseline method, synced from ``[[programme]]``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class ProgrammeRow(Base):
    """One ``[[programme]]``: how the utility measures its events' delivery.

    Events join it by ``market_context``; ``*`` takes every market context not listed. The
    configuration is the source of truth: the daemon writes this table when it starts.
    """

    __tablename__ = "programmes"

    market_context: Mapped[str] = mapped_column(String(512), primary_key=True)
    baseline_method: Mapped[str] = mapped_column(String(32))
    """like-days | meter-before-after | hour-before."""
    like_days: Mapped[int] = mapped_column(Integer)
    """Like days averaged at most [count]."""
    lookback_days: Mapped[int] = mapped_column(Integer)
    """UTC days before the event's day searched for like days [count]."""
    min_like_days: Mapped[int] = mapped_column(Integer)
    """Fewer like days: fall back to meter-before-after [count]."""
    adjustment_window_s: Mapped[float] = mapped_column(Float)
    """Length of the same-day adjustment window; 0 for none [s]."""
    adjustment_gap_s: Mapped[float] = mapped_column(Float)
    """The adjustment window ends this long before the start [s]."""
    adjustment_cap: Mapped[float] = mapped_column(Float)
    """The adjustment ratio stays within 1 -/+ this [fraction]."""
    meter_window_s: Mapped[float] = mapped_column(Float)
    """meter-before-after: the window before the start [s]."""
    updated_at: Mapped[datetime]

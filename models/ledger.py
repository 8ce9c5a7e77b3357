"""The energy ledger: one row per site and accounting interval."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class LedgerRow(Base):
    """Energy of one site over [interval_start_at, interval_end_at) [kWh]."""

    __tablename__ = "ledger"
    __table_args__ = (UniqueConstraint("site_id", "interval_start_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    interval_start_at: Mapped[datetime]
    interval_end_at: Mapped[datetime]
    load_kwh: Mapped[float] = mapped_column(Float)
    renewable_kwh: Mapped[float] = mapped_column(Float)
    """Renewable energy the site's plant could deliver [kWh]."""
    renewable_used_kwh: Mapped[float] = mapped_column(Float)
    grid_kwh: Mapped[float] = mapped_column(Float)
    curtailed_kwh: Mapped[float] = mapped_column(Float)
    migration_kwh: Mapped[float] = mapped_column(Float)


Index("ix_ledger_interval_start_at", LedgerRow.interval_start_at)

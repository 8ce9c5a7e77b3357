"""AI training jobs as the site controllers report them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Job(Base):
    """One training job; ``site_id`` is where it runs or holds its checkpoint."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.id"), index=True)
    gpus: Mapped[int] = mapped_column(Integer)
    power_kw: Mapped[float] = mapped_column(Float)
    checkpoint_gb: Mapped[float] = mapped_column(Float)
    work_remaining_gpu_h: Mapped[float] = mapped_column(Float)
    migratable: Mapped[bool] = mapped_column(Boolean)
    flex_tier: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(32))
    """running | migrating | checkpointed | finished (as the site controller says)."""
    first_seen_at: Mapped[datetime]
    arrived_at_site_at: Mapped[datetime]
    """When the job last started at its current site; the planner's hysteresis uses it."""
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

"""Live migrations of jobs, with the time of every state transition."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

MigrationState = Literal[
    "planned",
    "target_reserved",
    "checkpointing",
    "transferring",
    "restoring",
    "completed",
    "aborted",
]
MIGRATION_STATES: tuple[MigrationState, ...] = get_args(MigrationState)
FINAL_STATES: frozenset[str] = frozenset({"completed", "aborted"})


class Migration(Base):
    """One move of a job; ``id`` is the idempotency key sent with every controller call."""

    __tablename__ = "migrations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    source_site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    target_site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(Text)
    event_ref: Mapped[str | None] = mapped_column(String(256), index=True)
    """``vtn_id/event_id`` when the move serves a demand-response event."""
    checkpoint_gb: Mapped[float] = mapped_column(Float)
    expected_s: Mapped[float] = mapped_column(Float)
    """Disruption the feasibility model expects [s]."""
    expected_kwh: Mapped[float] = mapped_column(Float)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    downtime_s: Mapped[float | None] = mapped_column(Float)
    """From checkpoint start to running at the target (or back at the source) [s]."""
    migration_kwh: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    planned_at: Mapped[datetime]
    target_reserved_at: Mapped[datetime | None]
    checkpointing_at: Mapped[datetime | None]
    transferring_at: Mapped[datetime | None]
    restoring_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    aborted_at: Mapped[datetime | None]
    cleaned_up_at: Mapped[datetime | None]
    """When the end of the migration was settled with the sites (reservation released)."""
    updated_at: Mapped[datetime]

"""Sites and their telemetry samples."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Site(Base):
    """One micro-datacenter, as configured, with its last known state."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    gpus_total: Mapped[int] = mapped_column(Integer)
    it_power_max_kw: Mapped[float] = mapped_column(Float)
    pue: Mapped[float] = mapped_column(Float)
    wan_bandwidth_gbps: Mapped[float] = mapped_column(Float)
    controller_url: Mapped[str] = mapped_column(String(512))
    vtn_id: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(128))
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    gpus_free: Mapped[int | None] = mapped_column(Integer)
    it_power_kw: Mapped[float | None] = mapped_column(Float)
    renewable_kw: Mapped[float | None] = mapped_column(Float)
    last_status_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class SiteSample(Base):
    """One polled status of a site: power drawn and renewable power available."""

    __tablename__ = "site_samples"
    __table_args__ = (UniqueConstraint("site_id", "sampled_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    sampled_at: Mapped[datetime]
    it_power_kw: Mapped[float] = mapped_column(Float)
    load_kw: Mapped[float] = mapped_column(Float)
    """Facility power: IT power times PUE [kW]."""
    renewable_kw: Mapped[float] = mapped_column(Float)
    gpus_free: Mapped[int] = mapped_column(Integer)
    jobs_running: Mapped[int] = mapped_column(Integer)


Index("ix_site_samples_sampled_at", SiteSample.sampled_at)

"""Energy rollups per site and hour and per site and day, and grid carbon intensity.

The rollups hold the ledger's sums, kept up to date in the same transaction as each ledger
row (``gateway/reports/rollups.py``) so that reports over a year read thousands of rows, not
millions. A ledger row counts in the hour and the day in which its interval *starts* (UTC).
On SQLite the rollups are ``WITHOUT ROWID`` tables, stored in primary-key order, so that a
report by site and period reads them front to back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class _EnergyRollup:
    """The columns both rollups share: sums over the ledger rows of one site and period."""

    site_id: Mapped[str] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    period_start_at: Mapped[datetime] = mapped_column(primary_key=True)
    """Start of the hour or day (UTC); the ledger rows whose interval starts in it."""
    ledger_rows: Mapped[int] = mapped_column(Integer)
    """Ledger rows summed [count]."""
    load_kwh: Mapped[float] = mapped_column(Float)
    renewable_kwh: Mapped[float] = mapped_column(Float)
    renewable_used_kwh: Mapped[float] = mapped_column(Float)
    grid_kwh: Mapped[float] = mapped_column(Float)
    curtailed_kwh: Mapped[float] = mapped_column(Float)
    migration_kwh: Mapped[float] = mapped_column(Float)
    captured_surplus_kwh: Mapped[float] = mapped_column(Float)
    """Renewable used, plus grid energy of rows that start during a surplus event addressing
    the site [kWh]."""
    emissions_kg: Mapped[float] = mapped_column(Float)
    """Grid energy times the carbon intensity in force at each row's start, summed over the
    rows an intensity covers (0 when none does) [kg CO2]."""
    emissions_rows: Mapped[int] = mapped_column(Integer)
    """Rows a carbon intensity covered [count]; 0 means emissions are unknown, not zero."""


class EnergyRollupHour(_EnergyRollup, Base):
    """Ledger sums of one site over one UTC hour."""

    __tablename__ = "energy_rollup_hour"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy's hook)


class EnergyRollupDay(_EnergyRollup, Base):
    """Ledger sums of one site over one UTC day."""

    __tablename__ = "energy_rollup_day"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy's hook)


Index("ix_energy_rollup_hour_period_start_at", EnergyRollupHour.period_start_at)
Index("ix_energy_rollup_day_period_start_at", EnergyRollupDay.period_start_at)


class CarbonIntensity(Base):
    """Grid carbon intensity over [start_at, end_at), for one site or (site_id NULL) all.

    Intervals of one scope (a site, or all sites) do not overlap; a site's own interval wins
    over an all-sites one. Loaded with ``dr-gateway carbon load FILE``.
    """

    __tablename__ = "grid_carbon_intensity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str | None] = mapped_column(String(64))
    """The site this intensity is for; NULL: every site without one of its own."""
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    g_co2_per_kwh: Mapped[float] = mapped_column(Float)
    """Emissions per kWh drawn from the grid [g CO2/kWh]."""
    source: Mapped[str] = mapped_column(String(512))
    """The file it was loaded from."""
    loaded_at: Mapped[datetime]


Index("ix_grid_carbon_intensity_site_id", CarbonIntensity.site_id, CarbonIntensity.start_at)
Index(
    "ix_grid_carbon_intensity_all_sites",
    CarbonIntensity.start_at,
    postgresql_where=CarbonIntensity.site_id.is_(None),
    sqlite_where=CarbonIntensity.site_id.is_(None),
)
"""The all-sites intervals by start: PostgreSQL cannot read the latest start at or before an
instant for ``site_id IS NULL`` in order from the index above."""

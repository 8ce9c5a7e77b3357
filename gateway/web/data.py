"""What the dashboard, the JSON API and the metrics read: the fleet's state from the database.

Every function reads inside one session (or connection) passed in and returns typed records;
nothing here knows about HTTP. Everything comes from the database, so a restarted daemon
shows the same figures as before.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import Connection, and_, distinct, func, select
from sqlalchemy.orm import Session, selectinload

from gateway.events import shifted
from gateway.reports.frames import energy_report
from gateway.reports.queries import ENERGY_COLUMNS
from models import (
    FINAL_STATES,
    MIGRATION_STATES,
    Event,
    EventResponse,
    InboundRefusal,
    Job,
    Migration,
    Site,
)

ACTIVE_JOB_STATES = ("running", "migrating", "checkpointed")
"""Jobs the dashboard lists: not finished."""


@dataclass(frozen=True, slots=True)
class SiteRecord:
    """One site as last polled."""

    site_id: str
    online: bool
    vtn_id: str | None
    gpus_total: int
    gpus_free: int | None
    it_power_max_kw: float
    """IT power cap [kW]."""
    pue: float
    load_kw: float | None
    """Facility power at the last poll: IT power times PUE [kW]; None before any poll."""
    renewable_kw: float | None
    """Power the site's own plant could deliver at the last poll [kW]."""
    surplus_kw: float | None
    """renewable_kw - load_kw: positive when renewable power goes unused [kW]."""
    jobs_running: int
    last_status_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job that has not finished."""

    job_id: str
    site_id: str | None
    state: str
    gpus: int
    power_kw: float
    """IT draw while running [kW]."""
    checkpoint_gb: float
    """[GB]"""
    work_remaining_gpu_h: float
    """[GPU h]"""
    migratable: bool
    arrived_at_site_at: datetime


@dataclass(frozen=True, slots=True)
class MigrationRecord:
    """One migration with the time it entered each state (None: not (yet) entered)."""

    migration_id: str
    job_id: str
    source_site_id: str
    target_site_id: str
    state: str
    reason: str
    event_ref: str | None
    checkpoint_gb: float
    """[GB]"""
    expected_s: float
    """Disruption the feasibility model expected [s]."""
    downtime_s: float | None
    """Checkpoint start to running again [s]; None until the migration ends."""
    migration_kwh: float | None
    """[kWh]"""
    error: str | None
    state_times: dict[str, datetime | None]
    """Entry time of each state of MIGRATION_STATES, by state name."""
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class EventRecord:
    """The newest version of an event and the opt in force for it."""

    vtn_id: str
    event_id: str
    modification_number: int
    status: str
    market_context: str
    signals: tuple[str, ...]
    """``NAME/type`` of each signal."""
    resource_ids: tuple[str, ...]
    """The resource ids it targets; empty when it addresses the whole VEN."""
    start_at: datetime
    end_at: datetime | None
    """None for an open-ended event."""
    received_at: datetime
    opt: str | None
    """optIn | optOut: the newest answer to a version that was not a cancellation."""
    reason: str | None
    responded_at: datetime | None
    sent_at: datetime | None
    """When the VTN acknowledged that answer; None while unsent."""


def sites(session: Session) -> list[SiteRecord]:
    """Every site in the database, by id."""
    running: dict[str | None, int] = dict(
        session.execute(
            select(Job.site_id, func.count())
            .where(Job.state == "running", Job.site_id.is_not(None))
            .group_by(Job.site_id)
        ).all()
    )
    out = []
    for row in session.scalars(select(Site).order_by(Site.id)):
        load_kw = None if row.it_power_kw is None else row.it_power_kw * row.pue
        surplus_kw = (
            None if load_kw is None or row.renewable_kw is None else row.renewable_kw - load_kw
        )
        out.append(
            SiteRecord(
                site_id=row.id,
                online=row.online,
                vtn_id=row.vtn_id,
                gpus_total=row.gpus_total,
                gpus_free=row.gpus_free,
                it_power_max_kw=row.it_power_max_kw,
                pue=row.pue,
                load_kw=load_kw,
                renewable_kw=row.renewable_kw,
                surplus_kw=surplus_kw,
                jobs_running=int(running.get(row.id, 0)),
                last_status_at=row.last_status_at,
            )
        )
    return out


def jobs(session: Session) -> list[JobRecord]:
    """Every job that has not finished, by id."""
    rows = session.scalars(select(Job).where(Job.state.in_(ACTIVE_JOB_STATES)).order_by(Job.id))
    return [
        JobRecord(
            job_id=j.id,
            site_id=j.site_id,
            state=j.state,
            gpus=j.gpus,
            power_kw=j.power_kw,
            checkpoint_gb=j.checkpoint_gb,
            work_remaining_gpu_h=j.work_remaining_gpu_h,
            migratable=j.migratable,
            arrived_at_site_at=j.arrived_at_site_at,
        )
        for j in rows
    ]


def migrations_in_flight(session: Session) -> list[MigrationRecord]:
    """Every migration that has neither completed nor aborted, oldest first."""
    rows = session.scalars(
        select(Migration)
        .where(Migration.state.not_in(FINAL_STATES))
        .order_by(Migration.planned_at, Migration.id)
    )
    return [_migration(m) for m in rows]


def migrations_recent(session: Session, limit: int) -> list[MigrationRecord]:
    """The ``limit`` migrations that ended last, newest first."""
    rows = session.scalars(
        select(Migration)
        .where(Migration.state.in_(FINAL_STATES))
        .order_by(Migration.updated_at.desc(), Migration.id.desc())
        .limit(limit)
    )
    return [_migration(m) for m in rows]


def migration_counts(session: Session) -> dict[str, int]:
    """Migrations by state over all time, every state present (0 when none)."""
    counts: dict[str, int] = dict.fromkeys(MIGRATION_STATES, 0)
    for state, n in session.execute(
        select(Migration.state, func.count()).group_by(Migration.state)
    ).all():
        counts[state] = int(n)
    return counts


def _migration(m: Migration) -> MigrationRecord:
    return MigrationRecord(
        migration_id=m.id,
        job_id=m.job_id,
        source_site_id=m.source_site_id,
        target_site_id=m.target_site_id,
        state=m.state,
        reason=m.reason,
        event_ref=m.event_ref,
        checkpoint_gb=m.checkpoint_gb,
        expected_s=m.expected_s,
        downtime_s=m.downtime_s,
        migration_kwh=m.migration_kwh,
        error=m.error,
        state_times={state: getattr(m, f"{state}_at") for state in MIGRATION_STATES},
        updated_at=m.updated_at,
    )


def events(session: Session, limit: int) -> list[EventRecord]:
    """The ``limit`` events (newest version each) that start last, latest start first."""
    newest = (
        select(
            Event.vtn_id,
            Event.event_id,
            func.max(Event.modification_number).label("modification_number"),
        )
        .group_by(Event.vtn_id, Event.event_id)
        .subquery()
    )
    rows = list(
        session.scalars(
            select(Event)
            .join(
                newest,
                and_(
                    Event.vtn_id == newest.c.vtn_id,
                    Event.event_id == newest.c.event_id,
                    Event.modification_number == newest.c.modification_number,
                ),
            )
            .options(selectinload(Event.signals), selectinload(Event.targets))
            .order_by(Event.start_at.desc(), Event.vtn_id, Event.event_id)
            .limit(limit)
        )
    )
    answers = _answers_in_force(session, {(e.vtn_id, e.event_id) for e in rows})
    out = []
    for row in rows:
        answer = answers.get((row.vtn_id, row.event_id))
        out.append(
            EventRecord(
                vtn_id=row.vtn_id,
                event_id=row.event_id,
                modification_number=row.modification_number,
                status=row.status,
                market_context=row.market_context,
                signals=tuple(f"{s.signal_name}/{s.signal_type}" for s in row.signals),
                resource_ids=tuple(t.value for t in row.targets if t.kind == "resource_id"),
                start_at=row.start_at,
                end_at=shifted(row.start_at, row.duration_s) if row.duration_s > 0 else None,
                received_at=row.received_at,
                opt=None if answer is None else answer.opt,
                reason=None if answer is None else answer.reason,
                responded_at=None if answer is None else answer.responded_at,
                sent_at=None if answer is None else answer.sent_at,
            )
        )
    return out


def _answers_in_force(
    session: Session, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], EventResponse]:
    """The newest answer to a version that was not a cancellation, per (vtn_id, event_id)
    (the rule of ``gateway.ven.store.participations``)."""
    if not keys:
        return {}
    rows = session.execute(
        select(Event.vtn_id, Event.event_id, EventResponse)
        .join(EventResponse, EventResponse.event_pk == Event.id)
        .where(
            Event.status != "cancelled",
            Event.event_id.in_({event_id for _, event_id in keys}),
        )
        .order_by(EventResponse.id)
    ).all()
    out: dict[tuple[str, str], EventResponse] = {}
    for vtn_id, event_id, response in rows:
        if (vtn_id, event_id) in keys:
            out[(vtn_id, event_id)] = response
    return out


def events_received(session: Session) -> dict[str, int]:
    """Distinct events (vtn_id, event_id) received, by VTN, over all time."""
    return {
        vtn_id: int(n)
        for vtn_id, n in session.execute(
            select(Event.vtn_id, func.count(distinct(Event.event_id))).group_by(Event.vtn_id)
        ).all()
    }


def opts_given(session: Session) -> dict[tuple[str, str], int]:
    """Opt answers given (every change of answer counts), by (vtn_id, opt), over all time."""
    return {
        (vtn_id, opt): int(n)
        for vtn_id, opt, n in session.execute(
            select(Event.vtn_id, EventResponse.opt, func.count())
            .join(EventResponse, EventResponse.event_pk == Event.id)
            .group_by(Event.vtn_id, EventResponse.opt)
        ).all()
    }


def inbound_refusals(session: Session) -> dict[tuple[str, str], int]:
    """Messages the VEN refused at its edge, by (vtn_id, reason), over all time."""
    return {(row.vtn_id, row.reason): row.count for row in session.scalars(select(InboundRefusal))}


def database_reachable(connection: Connection) -> None:
    """Run the cheapest query there is; raises what the driver raises when it cannot."""
    connection.execute(select(1)).scalar_one()


def utc_midnight(at: datetime) -> datetime:
    """The UTC midnight at or before ``at``."""
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


Figures = dict[str, float | None]


@dataclass(frozen=True, slots=True)
class EnergyRecord:
    """Energy from the rollups: fleet totals over all time and since UTC midnight, and each
    site's totals over all time. A figure is None where the report has none (e.g. the
    renewable share of no load)."""

    fleet: Figures
    today: Figures
    today_since_at: datetime
    by_site: dict[str, Figures]


def energy(connection: Connection, now: datetime) -> EnergyRecord:
    """The energy figures at ``now`` (read from the rollup tables, fast at any size)."""
    today_at = utc_midnight(now)
    fleet = _figures(energy_report(connection, by=()))
    today = _figures(energy_report(connection, since=today_at, by=()))
    frame = energy_report(connection, by=("site",))
    by_site = {
        str(site_id): _row_figures(row)
        for site_id, row in zip(frame["site_id"], frame.to_dict("records"), strict=True)
    }
    return EnergyRecord(fleet=fleet, today=today, today_since_at=today_at, by_site=by_site)


def _figures(frame: pd.DataFrame) -> Figures:
    """The one row of a fleet-total report; zeros (and no share) when there is no data."""
    if frame.empty:
        return {
            name: (None if name in ("renewable_share", "emissions_kg") else 0.0)
            for name in ENERGY_COLUMNS
        }
    return _row_figures(frame.to_dict("records")[0])


def _row_figures(row: Mapping[Hashable, object]) -> Figures:
    return {name: _number(row.get(name)) for name in ENERGY_COLUMNS}


def _number(value: object) -> float | None:
    """A report cell as a float; None for a missing value (None, NaN, NA)."""
    if value is None or value is pd.NA:
        return None
    if not isinstance(value, (int, float, np.number)):
        raise TypeError(f"expected a number in the energy report, got {value!r}")
    number = float(value)
    return None if math.isnan(number) else number

"""The fleet in the database: sites from configuration, statuses, jobs, ledger and snapshots.

Each function works inside one unit of work (a Session passed in) and commits nothing itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from gateway.accounting import LedgerEntry, PowerSample, ledger_entry
from gateway.baselines import BaselineParams
from gateway.maintenance.store import maintenance_by_site
from gateway.planner.offers import SiteOffer
from gateway.planner.snapshot import JobView, SiteRequest, SiteView, Snapshot
from gateway.reports.rollups import add_to_rollups
from gateway.settings_sites import SiteSettings
from gateway.sites.records import SiteStatus
from models import (
    FINAL_STATES,
    Job,
    LedgerRow,
    Migration,
    Offer,
    ProgrammeRow,
    Site,
    SiteSample,
)

log = logging.getLogger(__name__)

ACTIVE_JOB_STATES = ("running", "migrating")


def sync_sites(session: Session, sites: Sequence[SiteSettings], now: datetime) -> None:
    """Insert or update the configured sites (configuration is the source of truth)."""
    for cfg in sites:
        row = session.get(Site, cfg.id)
        if row is None:
            row = Site(id=cfg.id, online=False, updated_at=now)
            session.add(row)
        row.gpus_total = cfg.gpus_total
        row.it_power_max_kw = cfg.it_power_max_kw
        row.pue = cfg.pue
        row.wan_bandwidth_gbps = cfg.wan_bandwidth_gbps
        row.controller_url = str(cfg.controller_url).rstrip("/")
        row.vtn_id = cfg.vtn
        row.resource_id = cfg.openadr_resource_id
        row.updated_at = now


def sync_programmes(
    session: Session, programmes: Sequence[tuple[str, BaselineParams]], now: datetime
) -> None:
    """Make the ``programmes`` table the configured programmes (market context, baseline):
    insert or update each, delete those no longer configured (``Settings.baseline_programmes``).
    """
    configured = {market_context for market_context, _params in programmes}
    session.execute(delete(ProgrammeRow).where(ProgrammeRow.market_context.not_in(configured)))
    for market_context, params in programmes:
        row = session.get(ProgrammeRow, market_context)
        if row is None:
            row = ProgrammeRow(market_context=market_context)
            session.add(row)
        row.baseline_method = params.method
        row.like_days = params.like_days
        row.lookback_days = params.lookback_days
        row.min_like_days = params.min_like_days
        row.adjustment_window_s = params.adjustment_window_s
        row.adjustment_gap_s = params.adjustment_gap_s
        row.adjustment_cap = params.adjustment_cap
        row.meter_window_s = params.meter_window_s
        row.updated_at = now


def last_sample(session: Session, site_id: str) -> PowerSample | None:
    row = session.scalars(
        select(SiteSample)
        .where(SiteSample.site_id == site_id)
        .order_by(SiteSample.sampled_at.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return PowerSample(at=row.sampled_at, load_kw=row.load_kw, renewable_kw=row.renewable_kw)


def record_status(
    session: Session, cfg: SiteSettings, status: SiteStatus, now: datetime
) -> LedgerEntry | None:
    """Store a polled status: the site's state, a sample, its jobs and a ledger row."""
    site = session.get(Site, cfg.id)
    if site is None:
        raise KeyError(f"site {cfg.id} is not in the database; sync_sites first")
    load_kw = status.it_power_kw * cfg.pue
    previous = last_sample(session, cfg.id)
    site.online = True
    site.gpus_free = status.gpus_free
    site.it_power_kw = status.it_power_kw
    site.renewable_kw = status.renewable_kw
    site.last_status_at = now
    site.updated_at = now
    sync_jobs(session, cfg.id, status, now)
    if previous is not None and previous.at >= now:
        return None  # this instant is sampled already (two polls without time passing)
    running = sum(1 for j in status.jobs if j.state == "running")
    session.add(
        SiteSample(
            site_id=cfg.id,
            sampled_at=now,
            it_power_kw=status.it_power_kw,
            load_kw=load_kw,
            renewable_kw=status.renewable_kw,
            gpus_free=status.gpus_free,
            jobs_running=running,
        )
    )
    if previous is None:
        return None
    migration_kwh = session.scalar(
        select(func.coalesce(func.sum(Migration.migration_kwh), 0.0)).where(
            Migration.source_site_id == cfg.id,
            Migration.state == "completed",
            Migration.completed_at >= previous.at,
            Migration.completed_at < now,
        )
    )
    entry = ledger_entry(
        cfg.id,
        previous,
        PowerSample(at=now, load_kw=load_kw, renewable_kw=status.renewable_kw),
        float(migration_kwh or 0.0),
    )
    session.add(LedgerRow(**asdict(entry)))
    add_to_rollups(session, entry.site_id, entry.interval_start_at)
    return entry


def mark_offline(session: Session, site_id: str, now: datetime) -> bool:
    """Mark a site unreachable; True when that is a change."""
    site = session.get(Site, site_id)
    if site is None or not site.online:
        return False
    site.online = False
    site.updated_at = now
    return True


def sync_jobs(session: Session, site_id: str, status: SiteStatus, now: datetime) -> None:
    """Mirror the controller's jobs. Jobs under migration belong to the dispatcher: only
    their remaining work is updated here."""
    ids = [reported.job_id for reported in status.jobs]
    known = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids)))}
    for reported in status.jobs:
        job = known.get(reported.job_id)
        if job is None:
            if reported.state not in ("running", "finished"):
                continue  # a checkpoint or restore we did not start: not ours to track
            session.add(
                Job(
                    id=reported.job_id,
                    site_id=site_id,
                    gpus=reported.gpus,
                    power_kw=reported.power_kw,
                    checkpoint_gb=reported.checkpoint_gb,
                    work_remaining_gpu_h=reported.work_remaining_gpu_h,
                    migratable=reported.migratable,
                    flex_tier=reported.flex_tier,
                    state=reported.state,
                    first_seen_at=now,
                    arrived_at_site_at=now,
                    finished_at=now if reported.state == "finished" else None,
                    updated_at=now,
                )
            )
            continue
        if job.state == "migrating" or job.state == "finished":
            if job.state == "migrating" and job.site_id == site_id:
                job.work_remaining_gpu_h = reported.work_remaining_gpu_h
            continue
        if reported.state == "running":
            if job.site_id != site_id:
                log.warning("job %s reported running at %s, not %s", job.id, site_id, job.site_id)
                job.site_id = site_id
                job.arrived_at_site_at = now
            job.state = "running"
            job.work_remaining_gpu_h = reported.work_remaining_gpu_h
            job.updated_at = now
        elif reported.state == "finished" and job.site_id == site_id:
            job.state = "finished"
            job.work_remaining_gpu_h = 0.0
            job.finished_at = now
            job.updated_at = now


def site_views(
    session: Session,
    sites: Sequence[SiteSettings],
    statuses: Mapping[str, SiteStatus],
    maintenance: Mapping[str, tuple[tuple[datetime, datetime], ...]] | None = None,
) -> tuple[SiteView, ...]:
    """What the planner sees of each site; ``maintenance``: windows by site id."""
    stored_online = {
        site_id: online for site_id, online in session.execute(select(Site.id, Site.online))
    }
    views = []
    for cfg in sites:
        status = statuses.get(cfg.id)
        online = status is not None and stored_online.get(cfg.id, False)
        views.append(
            SiteView(
                site_id=cfg.id,
                resource_id=cfg.openadr_resource_id,
                vtn_id=cfg.vtn,
                gpus_total=cfg.gpus_total,
                gpus_free=status.gpus_free if status else 0,
                it_power_max_kw=cfg.it_power_max_kw,
                it_power_kw=status.it_power_kw if status else 0.0,
                pue=cfg.pue,
                wan_bandwidth_gbps=cfg.wan_bandwidth_gbps,
                renewable_kw=status.renewable_kw if status else 0.0,
                forecast_step_s=status.forecast_step_s if status else 900.0,
                renewable_forecast_kw=status.renewable_forecast_kw if status else (),
                online=online,
                maintenance=(maintenance or {}).get(cfg.id, ()),
                manual_override=cfg.manual_override,
            )
        )
    return tuple(views)


def job_views(session: Session) -> tuple[JobView, ...]:
    rows = session.scalars(
        select(Job).where(Job.state.in_(ACTIVE_JOB_STATES), Job.site_id.is_not(None))
    )
    return tuple(
        JobView(
            job_id=j.id,
            site_id=j.site_id or "",
            gpus=j.gpus,
            power_kw=j.power_kw,
            checkpoint_gb=j.checkpoint_gb,
            migratable=j.migratable,
            state="running" if j.state == "running" else "migrating",
            arrived_at_site_at=j.arrived_at_site_at,
            in_flight=j.state == "migrating",
            work_remaining_gpu_h=j.work_remaining_gpu_h,
        )
        for j in rows
    )


def delivered_kw(
    session: Session, pue: Mapping[str, float], idle_kw_per_gpu: float = 0.0
) -> dict[tuple[str, str], float]:
    """Facility power moved off each site per event, by migrations not aborted: the jobs'
    power less the idle draw of the GPUs they free [kW]."""
    return _moved_kw(session, Migration.source_site_id, pue, idle_kw_per_gpu)


def absorbed_kw(
    session: Session, pue: Mapping[str, float], idle_kw_per_gpu: float = 0.0
) -> dict[tuple[str, str], float]:
    """Facility power moved into each site per event, by migrations not aborted [kW]."""
    return _moved_kw(session, Migration.target_site_id, pue, idle_kw_per_gpu)


def arriving_kw(
    session: Session, pue: Mapping[str, float], idle_kw_per_gpu: float = 0.0
) -> dict[str, float]:
    """Facility power of the jobs on their way to each site (migrations in flight), their
    power less the idle draw of the GPUs they take [kW]."""
    rows = session.execute(
        select(Migration.target_site_id, _net_kw(idle_kw_per_gpu))
        .join(Job, Job.id == Migration.job_id)
        .where(Migration.state.not_in(FINAL_STATES))
        .group_by(Migration.target_site_id)
    )
    return {site: _facility_kw(kw, pue.get(site, 1.0)) for site, kw in rows}


def _moved_kw(
    session: Session,
    site_column: InstrumentedAttribute[str],
    pue: Mapping[str, float],
    idle_kw_per_gpu: float,
) -> dict[tuple[str, str], float]:
    rows = session.execute(
        select(Migration.event_ref, site_column, _net_kw(idle_kw_per_gpu))
        .join(Job, Job.id == Migration.job_id)
        .where(Migration.event_ref.is_not(None), Migration.state != "aborted")
        .group_by(Migration.event_ref, site_column)
    )
    return {
        (ref, site): _facility_kw(kw, pue.get(site, 1.0))
        for ref, site, kw in rows
        if ref is not None
    }


def _net_kw(idle_kw_per_gpu: float) -> Any:
    """SQL: the summed IT power of the jobs less the idle draw of their GPUs [kW]."""
    return func.sum(Job.power_kw - idle_kw_per_gpu * Job.gpus)


def _facility_kw(it_kw: float | None, pue: float) -> float:
    return max(0.0, float(it_kw or 0.0)) * pue


def build_snapshot(
    session: Session,
    sites: Sequence[SiteSettings],
    statuses: Mapping[str, SiteStatus],
    requests: Iterable[SiteRequest],
    now: datetime,
    idle_kw_per_gpu: float = 0.0,
) -> Snapshot:
    """The fleet as the planner sees it. Jobs at a site under manual override are pinned
    (not migratable): the gateway does not move them."""
    overridden = {s.id for s in sites if s.manual_override}
    pue = {s.id: s.pue for s in sites}
    jobs = tuple(
        replace(j, migratable=False) if j.site_id in overridden else j for j in job_views(session)
    )
    return Snapshot(
        at=now,
        sites=site_views(session, sites, statuses, maintenance_by_site(session, now)),
        jobs=jobs,
        requests=tuple(requests),
        delivered_kw=delivered_kw(session, pue, idle_kw_per_gpu),
        absorbed_kw=absorbed_kw(session, pue, idle_kw_per_gpu),
        arriving_kw=arriving_kw(session, pue, idle_kw_per_gpu),
    )


def in_flight_count(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(Migration).where(Migration.state.not_in(FINAL_STATES))
        )
        or 0
    )


def save_offers(session: Session, offers: Sequence[SiteOffer], now: datetime) -> None:
    """Insert or replace offers, one row per (site, interval start); ``now`` is when they
    were computed. One query finds the rows to replace (a round stores sites x hours)."""
    if not offers:
        return
    starts = {offer.interval_start_at for offer in offers}
    existing = {
        (row.site_id, row.interval_start_at): row
        for row in session.scalars(select(Offer).where(Offer.interval_start_at.in_(starts)))
    }
    for offer in offers:
        row = existing.get((offer.site_id, offer.interval_start_at))
        if row is None:
            row = Offer(site_id=offer.site_id, interval_start_at=offer.interval_start_at)
            session.add(row)
        row.interval_end_at = offer.interval_end_at
        row.shed_kw = offer.shed_kw
        row.absorb_kw = offer.absorb_kw
        row.notice_s = offer.notice_s
        row.computed_at = now


def load_offers(session: Session, ending_after: datetime) -> list[SiteOffer]:
    """The stored offers of intervals that end after ``ending_after``, by site and start."""
    rows = session.scalars(
        select(Offer)
        .where(Offer.interval_end_at > ending_after)
        .order_by(Offer.site_id, Offer.interval_start_at)
    )
    return [
        SiteOffer(
            site_id=row.site_id,
            interval_start_at=row.interval_start_at,
            interval_end_at=row.interval_end_at,
            shed_kw=row.shed_kw,
            absorb_kw=row.absorb_kw,
            notice_s=row.notice_s,
        )
        for row in rows
    ]

"""Flexibility offers (bids): how much load each site could shed or absorb in each coming hour,
and with how much notice, as the feasibility model judges the migrations that would deliver it.

Pure: a snapshot and parameters in, offers out; no clock, no I/O.

Hour ``k`` (``k = 0 .. hours - 1``) is ``[t_k, t_k + 1 h)`` with ``t_0`` the first full hour
after the snapshot; its lead time is ``lead_k = t_k - snapshot.at`` [s]. A job is *movable*
when it is migratable, running and not already moving. For each online site S:

- **shed**: S's movable jobs, largest first, each counted when another site T (online, not
  under manual override) still has GPUs and IT power for it and the move S -> T
  (1) completes by ``t_k``: its migration time (checkpoint write, transfer at the smaller of
  the two WAN bandwidths, restore) is at most ``lead_k``; and (2) lies in the feasibility
  domain of T's renewable window at ``t_k``: the contiguous time from the first forecast step
  at or after ``t_k`` during which T's forecast renewable power covers T's IT load plus the
  job's [s]; in time (migration <= alpha * window) and in energy (the move's energy is
  repaid inside the window). Of the targets that qualify, the one with the longest window
  takes the job. Counted as the meter sees it: the job's power less the idle draw of the
  GPUs it frees, times S's PUE.
- **absorb**: movable jobs of the other online sites, quickest move to S first, each counted
  while S has GPUs and IT power headroom for it, when its move completes by ``t_k`` and lies
  in the feasibility domain of a one-hour window: the offered hour itself, whose grid surplus
  is the green window. Counted at S's facility power, net of the GPUs' idle draw likewise.
- **notice_s**: the longer of the two: for shed, the longest checkpoint write among the
  counted jobs (their load leaves S once the checkpoint is written); for absorb, the longest
  whole migration among them (their load arrives once restored). An event announced at
  least ``notice_s`` before it starts gets what the offer says.

Each offer is a promise the gateway opts in to when an event asks for it: the power above
divided by ``1 + delivery_margin``, the margin the planner keeps over an ask (a dispatch of
the whole offer leaves it, as :mod:`gateway.planner.opt` requires).

A site under manual override offers nothing (zero shed and absorb) and takes no job; an
offline site gets no offer at all (unknown, not zero). Each site's offer assumes the rest of
the fleet as it is now: offers of different sites are alternatives, not additive.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from gateway import feasibility as fm
from gateway.planner.arrays import prefix_min, windows_s
from gateway.planner.params import MoveCost, PolicyParams, in_domain, move_cost
from gateway.planner.snapshot import JobView, SiteView, Snapshot

OFFER_INTERVAL_S = 3600.0
"""Length of each offered interval: one hour [s]."""


@dataclass(frozen=True)
class SiteOffer:
    """What one site offers for one interval."""

    site_id: str
    interval_start_at: datetime
    interval_end_at: datetime
    shed_kw: float
    """Facility power that could leave the site during the interval [kW]."""
    absorb_kw: float
    """Facility power the site could take in during the interval [kW]."""
    notice_s: float
    """How long before the interval's dispatch must be announced to get the offer [s]."""


def first_offer_at(at: datetime) -> datetime:
    """The start of the first offered hour: the first full hour strictly after ``at``."""
    return at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def hourly_offers(
    snapshot: Snapshot,
    params: PolicyParams,
    hours: int,
    *,
    overridden: Collection[str] = (),
) -> list[SiteOffer]:
    """An offer per online site and coming hour (see the module docstring).

    hours: how many hours to offer [-]; overridden: ids of the sites under manual override.
    """
    if hours < 0:
        raise ValueError(f"hours must be >= 0, got {hours}")
    sites = [s for s in snapshot.sites if s.online]
    if not sites or hours == 0:
        return []
    index = {s.site_id: i for i, s in enumerate(sites)}
    jobs = [j for j in snapshot.jobs if _movable(j) and j.site_id in index]
    fleet = _Fleet.of(sites, jobs, overridden, params)
    start_at = first_offer_at(snapshot.at)
    offers = []
    for k in range(hours):
        interval_start_at = start_at + timedelta(seconds=k * OFFER_INTERVAL_S)
        lead_s = (interval_start_at - snapshot.at).total_seconds()
        windows = fleet.windows_s(lead_s)
        movable = fleet.movable(lead_s, windows)
        interval_end_at = interval_start_at + timedelta(seconds=OFFER_INTERVAL_S)
        for s, site in enumerate(sites):
            if (
                site.site_id in overridden
                or site.manual_override
                or site.in_maintenance(interval_start_at, interval_end_at)
            ):
                shed_kw = absorb_kw = notice_s = 0.0
            else:
                shed_kw, shed_notice_s = fleet.shed(s, windows, movable)
                absorb_kw, absorb_notice_s = fleet.absorb(s, lead_s)
                notice_s = max(shed_notice_s, absorb_notice_s)
                # A promise: what the moves deliver less the margin the planner keeps.
                shed_kw /= 1 + params.delivery_margin
                absorb_kw /= 1 + params.delivery_margin
            offers.append(
                SiteOffer(
                    site_id=site.site_id,
                    interval_start_at=interval_start_at,
                    interval_end_at=interval_end_at,
                    shed_kw=shed_kw,
                    absorb_kw=absorb_kw,
                    notice_s=notice_s,
                )
            )
    return offers


def _movable(job: JobView) -> bool:
    return job.migratable and job.state == "running" and not job.in_flight


@dataclass(frozen=True)
class _Fleet:
    """The online sites and their movable jobs as arrays; sites 0..S-1, jobs 0..J-1."""

    sites: list[SiteView]
    job_site: np.ndarray
    job_gpus: np.ndarray
    job_power_kw: np.ndarray
    job_net_kw: fm.FloatArray
    """What each job takes off a site's IT load: its power less its GPUs' idle draw [kW]."""
    write_s: fm.FloatArray
    """Checkpoint write of each job [s]."""
    cost: MoveCost
    """Each job moved to each site, shape (J, S)."""
    repaid_in_hour: np.ndarray
    """Each move, shape (J, S), inside the feasibility domain of an offered hour."""
    takes_jobs: np.ndarray
    """Sites that may receive jobs (not under manual override)."""
    alpha: float

    @classmethod
    def of(
        cls,
        sites: list[SiteView],
        jobs: list[JobView],
        overridden: Collection[str],
        params: PolicyParams,
    ) -> _Fleet:
        index = {s.site_id: i for i, s in enumerate(sites)}
        job_site = np.array([index[j.site_id] for j in jobs], dtype=np.int64)
        bandwidth = np.array([s.wan_bandwidth_gbps for s in sites], dtype=np.float64)
        checkpoint_gb = np.array([j.checkpoint_gb for j in jobs], dtype=np.float64)
        gpus = np.array([j.gpus for j in jobs], dtype=np.int64)
        cost = move_cost(
            checkpoint_gb[:, None],
            gpus[:, None],
            np.minimum(bandwidth[job_site][:, None], bandwidth[None, :]),
            params,
        )
        return cls(
            sites=sites,
            job_site=job_site,
            job_gpus=gpus,
            job_power_kw=np.array([j.power_kw for j in jobs], dtype=np.float64),
            job_net_kw=np.array(
                [max(0.0, j.power_kw - params.feasibility.idle_kw * j.gpus) for j in jobs],
                dtype=np.float64,
            ),
            write_s=np.asarray(
                fm.checkpoint_write_s(checkpoint_gb, params.checkpoint_write_gb_per_s),
                dtype=np.float64,
            ),
            cost=cost,
            repaid_in_hour=in_domain(
                cost,
                np.array([j.power_kw for j in jobs])[:, None],
                OFFER_INTERVAL_S,
                params.feasibility.alpha,
            ),
            takes_jobs=np.array([s.site_id not in overridden for s in sites], dtype=np.bool_),
            alpha=params.feasibility.alpha,
        )

    def windows_s(self, lead_s: float) -> fm.FloatArray:
        """Each job's renewable window at each site from ``lead_s`` on, shape (J, S) [s]."""
        out = np.zeros((len(self.job_site), len(self.sites)), dtype=np.float64)
        for s, site in enumerate(self.sites):
            forecast = np.asarray(site.renewable_forecast_kw, dtype=np.float64)
            first = math.ceil(lead_s / site.forecast_step_s - 1e-9)
            if first >= forecast.size:
                continue  # beyond the forecast: no renewable power is assumed
            headroom_kw = forecast[first:] / site.pue - site.it_power_kw
            out[:, s] = windows_s(prefix_min(headroom_kw), self.job_power_kw, site.forecast_step_s)
        return out

    def _room(self) -> tuple[np.ndarray, fm.FloatArray]:
        gpus = np.array([s.gpus_free for s in self.sites], dtype=np.int64)
        power_kw = np.array(
            [max(0.0, s.it_power_max_kw - s.it_power_kw) for s in self.sites], dtype=np.float64
        )
        return gpus, power_kw

    def movable(self, lead_s: float, windows: fm.FloatArray) -> np.ndarray:
        """Which job may move to which site, shape (J, S), for an hour ``lead_s`` ahead:
        inside the feasibility domain of its window there, in time, to a site that takes
        jobs. The same for every site's shed in that hour: computed once."""
        result: np.ndarray = (
            in_domain(self.cost, self.job_power_kw[:, None], windows, self.alpha)
            & (self.cost.migration_s <= lead_s)
            & self.takes_jobs[None, :]
        )
        return result

    def shed(self, s: int, windows: fm.FloatArray, movable: np.ndarray) -> tuple[float, float]:
        """(shed [kW], notice [s]) of site ``s`` for the hour of ``windows`` and ``movable``
        (:meth:`movable`)."""
        gpus_room, power_room_kw = self._room()
        ok = movable.copy()
        ok[:, s] = False
        shed_kw = notice_s = 0.0
        own = np.flatnonzero(self.job_site == s)
        for j in own[np.argsort(-self.job_power_kw[own], kind="stable")]:
            fits = (
                ok[j]
                & (gpus_room >= self.job_gpus[j])
                & (power_room_kw >= self.job_power_kw[j] - 1e-9)
            )
            if not fits.any():
                continue
            target = int(np.argmax(np.where(fits, windows[j], -1.0)))
            gpus_room[target] -= self.job_gpus[j]
            power_room_kw[target] -= self.job_power_kw[j]
            shed_kw += float(self.job_net_kw[j]) * self.sites[s].pue
            notice_s = max(notice_s, float(self.write_s[j]))
        return shed_kw, notice_s

    def absorb(self, s: int, lead_s: float) -> tuple[float, float]:
        """(absorb [kW], notice [s]) of site ``s`` for an hour ``lead_s`` ahead."""
        if not self.takes_jobs[s]:
            return 0.0, 0.0
        gpus_room, power_room_kw = self._room()
        gpus, power_kw = int(gpus_room[s]), float(power_room_kw[s])
        migration_s = self.cost.migration_s[:, s]
        ok = self.repaid_in_hour[:, s] & (migration_s <= lead_s) & (self.job_site != s)
        absorb_kw = notice_s = 0.0
        for j in np.flatnonzero(ok)[np.argsort(migration_s[ok], kind="stable")]:
            if gpus <= 0:
                break  # the site is full
            if self.job_gpus[j] <= gpus and self.job_power_kw[j] <= power_kw + 1e-9:
                gpus -= int(self.job_gpus[j])
                power_kw -= float(self.job_power_kw[j])
                absorb_kw += float(self.job_net_kw[j]) * self.sites[s].pue
                notice_s = max(notice_s, float(migration_s[j]))
        return absorb_kw, notice_s

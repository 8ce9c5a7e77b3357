"""Flexibility offers per site: how much load it could shed or absorb, and with what notice."""

from __future__ import annotations

from dataclasses import dataclass

from gateway import feasibility as fm
from gateway.planner.snapshot import Snapshot


@dataclass(frozen=True)
class SiteOffer:
    site_id: str
    shed_kw: float
    """Facility power of migratable running jobs that could leave [kW]."""
    absorb_kw: float
    """Facility power that free GPUs and power headroom could take in [kW]."""
    notice_s: float
    """Time to stop the slowest offered job: its checkpoint write [s]."""


def site_offers(snapshot: Snapshot, checkpoint_write_gb_per_s: float) -> list[SiteOffer]:
    """An offer per online site for the coming interval, from the fleet as it is now."""
    offers = []
    for site in snapshot.sites:
        if not site.online:
            continue
        jobs = [
            j
            for j in snapshot.jobs
            if j.site_id == site.site_id
            and j.migratable
            and j.state == "running"
            and not j.in_flight
        ]
        shed_kw = sum(j.power_kw for j in jobs) * site.pue
        notice_s = max(
            (
                float(fm.checkpoint_write_s(j.checkpoint_gb, checkpoint_write_gb_per_s))
                for j in jobs
            ),
            default=0.0,
        )
        headroom_kw = max(0.0, site.it_power_max_kw - site.it_power_kw) * site.pue
        offers.append(
            SiteOffer(site.site_id, shed_kw, headroom_kw if site.gpus_free else 0.0, notice_s)
        )
    return offers

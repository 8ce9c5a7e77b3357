"""What a policy sees: a frozen picture of the fleet at one instant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

RequestKind = Literal["shed", "absorb", "cap"]


@dataclass(frozen=True)
class SiteView:
    site_id: str
    resource_id: str
    vtn_id: str | None
    gpus_total: int
    gpus_free: int
    it_power_max_kw: float
    it_power_kw: float
    pue: float
    wan_bandwidth_gbps: float
    renewable_kw: float
    forecast_step_s: float
    renewable_forecast_kw: tuple[float, ...]
    """Renewable power expected at now + i * forecast_step_s; index 0 is now [kW]."""
    online: bool = True
    maintenance: tuple[tuple[datetime, datetime], ...] = ()
    """Maintenance windows ``[start_at, end_at)`` not yet ended: the site takes part in no
    event and takes no job during them [aware UTC]."""
    manual_override: bool = False
    """The operator runs the site by hand (``[[site]] manual_override``): the gateway moves no
    job into or out of it and offers nothing for it."""

    @property
    def load_kw(self) -> float:
        """Facility power: IT power times PUE [kW]."""
        return self.it_power_kw * self.pue

    def in_maintenance(self, start_at: datetime, end_at: datetime | None) -> bool:
        """True when a maintenance window overlaps ``[start_at, end_at)``; ``end_at`` None
        is open-ended."""
        return any(
            w_start < (end_at or w_end) and start_at < w_end for w_start, w_end in self.maintenance
        )


@dataclass(frozen=True)
class JobView:
    job_id: str
    site_id: str
    gpus: int
    power_kw: float
    checkpoint_gb: float
    migratable: bool
    state: str
    arrived_at_site_at: datetime
    in_flight: bool = False
    """True while a migration of this job is under way."""
    work_remaining_gpu_h: float = float("inf")
    """Work left [GPU h]; inf when unknown."""

    @property
    def runs_s(self) -> float:
        """Running time left at full speed: work over GPUs (inf when unknown) [s]."""
        return 3600.0 * self.work_remaining_gpu_h / max(1, self.gpus)


@dataclass(frozen=True)
class SiteRequest:
    """What an opted-in event asks of one site over [start_at, end_at)."""

    site_id: str
    kind: RequestKind
    power_kw: float
    """shed: lower the load by; absorb: raise the load by; cap: keep the load under [kW]."""
    start_at: datetime
    end_at: datetime | None
    source: str
    """vtn_id/event_id, for reasons and reports."""
    baseline_kw: float | None = None
    """The baseline the meter judges this request against, once known (the event started)
    [kW]: a shed then holds the site's load at the baseline less the ask, an absorb at the
    baseline plus the ask, whatever else changed; None: what this event's moves did counts."""


@dataclass(frozen=True)
class Snapshot:
    at: datetime
    sites: tuple[SiteView, ...]
    jobs: tuple[JobView, ...]
    requests: tuple[SiteRequest, ...] = field(default=())
    delivered_kw: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """Facility power already moved off a site for a request: (request source, site id) [kW]."""
    arriving_kw: Mapping[str, float] = field(default_factory=dict)
    """Facility power of the jobs on their way to each site (migrations in flight) [kW]."""
    absorbed_kw: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """Facility power already moved into a site for a request: (request source, site id)
    [kW]."""

    def site(self, site_id: str) -> SiteView:
        for site in self.sites:
            if site.site_id == site_id:
                return site
        raise KeyError(site_id)


@dataclass(frozen=True)
class MigrationDecision:
    job_id: str
    source_site_id: str
    target_site_id: str
    reason: str
    expected_s: float
    """Disruption the feasibility model expects [s]."""
    expected_kwh: float
    """Energy the move costs [kWh]."""
    event_ref: str | None = None
    """The request source (``vtn_id/event_id``) the move serves, if any."""

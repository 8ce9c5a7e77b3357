"""Green supply forecasts per site, with what opted-in surplus events add: pure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from gateway.feasibility import FloatArray
from gateway.planner.snapshot import SiteRequest, SiteView


def supply_matrix(
    sites: Sequence[SiteView],
    requests: Sequence[SiteRequest],
    at: datetime,
    step_s: float,
    horizon_s: float,
) -> FloatArray:
    """Green supply per site and forecast step [kW], shape (sites, steps).

    The site's renewable forecast, plus what opted-in surplus events ask it to absorb while
    they are in force (grid surplus counts as green supply).
    """
    steps = max(1, int(horizon_s // step_s))
    out = np.zeros((len(sites), steps), dtype=np.float64)
    index = {s.site_id: i for i, s in enumerate(sites)}
    for i, site in enumerate(sites):
        forecast = np.asarray(site.renewable_forecast_kw or (site.renewable_kw,), dtype=np.float64)
        if site.forecast_step_s != step_s and len(forecast) > 1:
            src_t = np.arange(len(forecast)) * site.forecast_step_s
            forecast = np.interp(np.arange(steps) * step_s, src_t, forecast)
        n = min(steps, len(forecast))
        out[i, :n] = forecast[:n]
        out[i, n:] = 0.0  # unknown beyond the forecast: assume no renewable power
    step_at = [at + timedelta(seconds=k * step_s) for k in range(steps)]
    for request in requests:
        if request.kind != "absorb" or request.site_id not in index:
            continue
        for k, t in enumerate(step_at):
            if request.start_at <= t and (request.end_at is None or t < request.end_at):
                out[index[request.site_id], k] += request.power_kw
    return out

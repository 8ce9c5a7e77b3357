"""Where a new job starts: pure functions over site arrays.

``place_now`` (every policy but ``forecast-global``): the site with the most green IT headroom
now among those with room. ``place_forecast`` (``forecast-global``): the site where the job is
expected to draw the least grid energy over its run (up to the forecast horizon), from the
forecast of each site's spare green power and its PUE.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gateway.feasibility import BoolArray, FloatArray

Placement = Callable[[BoolArray, FloatArray, FloatArray, float, int], int]
"""(fits, spare green facility power (S, K) [kW], pue, job power [kW], run steps) -> site."""


def place_now(
    fits: BoolArray, spare_kw: FloatArray, pue: FloatArray, power_kw: float, run_steps: int
) -> int:
    """The site with the most spare green IT power now; -1 when none has room."""
    if not fits.any():
        return -1
    return int(np.argmax(np.where(fits, spare_kw[:, 0] / pue, -np.inf)))


def place_forecast(
    fits: BoolArray, spare_kw: FloatArray, pue: FloatArray, power_kw: float, run_steps: int
) -> int:
    """The site where the job's forecast grid energy is least; -1 when none has room."""
    if not fits.any():
        return -1
    steps = max(1, min(run_steps, spare_kw.shape[1]))
    draw_kw = power_kw * pue
    green = np.minimum(draw_kw[:, None], np.maximum(spare_kw[:, :steps], 0.0)).sum(axis=1)
    grid = draw_kw * steps - green
    # Ties (e.g. no green anywhere): the most spare green power now.
    score = np.where(fits, -grid + 1e-6 * spare_kw[:, 0], -np.inf)
    return int(np.argmax(score))


PLACEMENTS: dict[str, Placement] = {"forecast-global": place_forecast}
"""Policies that place new jobs their own way; the others use ``place_now``."""

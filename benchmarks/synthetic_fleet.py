"""Large synthetic fleets for the benchmarks, built from the bundled traces.

Every synthetic site takes the renewable trace of one bundled site (default and holdout
scenarios), shifted by a whole number of hours and scaled, so that the fleet's weather stays
real while its size grows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gateway.evaluation.input_sites import SiteSpec, load_sites
from gateway.evaluation.input_traces import Traces, load_traces

DATA = Path(__file__).resolve().parent.parent / "data" / "traces"


def synthetic_fleet(
    n_sites: int, seed: int = 0, scale: float = 1.0
) -> tuple[tuple[SiteSpec, ...], Traces]:
    """``n_sites`` sites of 11.5-34 kW IT (times ``scale``) with their hourly traces."""
    rng = np.random.default_rng(seed)
    columns: list[np.ndarray] = []
    start = None
    for scenario in ("default", "holdout"):
        sites = load_sites(DATA / f"{scenario}-sites.toml")
        traces = load_traces(DATA / f"{scenario}-traces.csv.gz", sites)
        start = traces.start_at
        columns += [traces.renewable_kw[:, i] / s.it_power_max_kw for i, s in enumerate(sites)]
    assert start is not None
    specs = []
    renewable = np.empty((columns[0].shape[0], n_sites), dtype=np.float64)
    for i in range(n_sites):
        base = columns[i % len(columns)]
        it_max = float(rng.choice([11.5, 17.0, 23.0, 34.0])) * scale
        renewable[:, i] = np.roll(base, int(rng.integers(-3, 4))) * it_max * rng.uniform(0.7, 1.3)
        specs.append(
            SiteSpec(
                id=f"site-{i:04d}",
                gpus_total=int(it_max / 0.69),
                it_power_max_kw=it_max,
                pue=float(rng.uniform(1.1, 1.4)),
                wan_bandwidth_gbps=float(rng.choice([1.0, 10.0, 100.0])),
            )
        )
    return tuple(specs), Traces(start, 3600.0, tuple(s.id for s in specs), renewable)

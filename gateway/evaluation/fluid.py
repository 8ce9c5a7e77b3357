"""Upper bounds on the renewable energy any policy can use: pure functions.

``fluid_bound_kwh`` is the fluid bound of ``docs/architecture.md``, 'Policies and the fluid bound':
at each step, renewable energy usable by the fleet is at most min(D, sum over sites of
min(renewable, site power cap)), with D the power of the jobs that would be running then if no job
ever waited or paused. A policy that delays work (jobs that wait for GPUs, moves that stop a job)
can run a job later than D assumes, so this bound can be exceeded by a little where jobs are delayed
into sunnier hours.

``relaxed_bound_kwh`` cannot be exceeded: it treats every job as fluid work that may run at any
time after its submission, at most at its own power, and fills each step's usable renewable
energy with it, optimally (latest step first, latest-released job first: a job released later
has fewer steps left to run in, so it goes first).

Facility power of a job is taken at the largest PUE of the fleet (an upper bound).
"""

from __future__ import annotations

import numpy as np

from gateway.feasibility import FloatArray


def usable_kwh(
    renewable_kw: FloatArray, it_power_max_kw: FloatArray, pue: FloatArray, step_s: float
) -> FloatArray:
    """Renewable energy the fleet could use at each step: sum over sites of
    min(renewable, facility power cap) [kWh]; renewable_kw is (T, S)."""
    cap_kw = it_power_max_kw * pue
    result: FloatArray = np.minimum(renewable_kw, cap_kw[None, :]).sum(axis=1) * step_s / 3600.0
    return result


def demand_kw(
    submit_s: FloatArray,
    run_s: FloatArray,
    power_kw: FloatArray,
    n_steps: int,
    step_s: float,
) -> FloatArray:
    """Mean IT power per step of jobs run from their submission without waiting or pausing.

    submit_s [s] and run_s [s] (work / GPUs) per job; power_kw [kW]. Returns (n_steps,) [kW].
    """
    start = submit_s
    end = submit_s + run_s
    energy_kws = np.zeros(n_steps + 1, dtype=np.float64)
    # Each job adds power from start to end: difference array of power-seconds per step,
    # split exactly at the step boundaries.
    first = np.clip((start // step_s).astype(np.int64), 0, n_steps)
    last = np.clip((end // step_s).astype(np.int64), 0, n_steps)
    same = first == last
    # Jobs inside one step.
    np.add.at(energy_kws, first[same], power_kw[same] * (end[same] - start[same]))
    multi = ~same
    f, la, p = first[multi], last[multi], power_kw[multi]
    np.add.at(energy_kws, f, p * ((f + 1) * step_s - start[multi]))
    np.add.at(energy_kws, la, p * (end[multi] - la * step_s))
    # Whole steps strictly between first and last: a difference array of power.
    full = np.zeros(n_steps + 2, dtype=np.float64)
    np.add.at(full, f + 1, p)
    np.add.at(full, la, -p)
    whole_kw = np.cumsum(full)[: n_steps + 1]
    energy_kws += whole_kw * step_s
    result: FloatArray = energy_kws[:n_steps] / step_s
    return result


def fluid_bound_kwh(
    usable: FloatArray, demand_it_kw: FloatArray, pue_max: float, step_s: float
) -> float:
    """The fluid bound, summed over the steps [kWh]."""
    return float(np.minimum(usable, demand_it_kw * pue_max * step_s / 3600.0).sum())


def relaxed_bound_kwh(
    usable: FloatArray,
    submit_s: FloatArray,
    energy_kwh: FloatArray,
    power_kw: FloatArray,
    step_s: float,
) -> float:
    """The largest renewable energy that jobs, as fluid work after their submission and at
    most at their own power, could use out of ``usable`` per step [kWh].

    energy_kwh: each job's facility energy; power_kw: its facility power.
    """
    order = np.argsort(submit_s, kind="stable")
    release = (submit_s[order] // step_s).astype(np.int64)
    left = energy_kwh[order].astype(np.float64, copy=True)
    per_step = power_kw[order] * step_s / 3600.0
    used = 0.0
    n_steps = usable.shape[0]
    released = np.searchsorted(release, np.arange(n_steps), side="right")
    for t in range(n_steps - 1, -1, -1):
        m = int(released[t])
        if m == 0 or usable[t] <= 0:
            continue
        take = np.minimum(per_step[:m], left[:m])[::-1]  # latest released first
        cumulative = np.cumsum(take)
        if cumulative[-1] <= usable[t]:
            left[:m] -= take[::-1]
            used += float(cumulative[-1])
            continue
        cut = int(np.searchsorted(cumulative, usable[t]))
        given = take.copy()
        given[cut] = usable[t] - (cumulative[cut - 1] if cut else 0.0)
        given[cut + 1 :] = 0.0
        left[:m] -= given[::-1]
        used += float(usable[t])
    return used

"""The policies' parameters and the cost of a move, from the feasibility model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway import feasibility as fm


@dataclass(frozen=True)
class PolicyParams:
    feasibility: fm.FeasibilityParams
    """alpha, efficiency, network energy; ``idle_kw`` here is per GPU [kW]."""
    checkpoint_write_gb_per_s: float = 0.6
    restore_gb_per_s: float = 1.5
    min_residence_s: float = 3600.0
    """A job stays at least this long at a site before it moves again [s]."""
    min_gain_s: float = 1800.0
    """A move must add at least this much green running time [s]."""
    max_migrations: int = 4
    """Moves planned per round at most."""
    max_event_migrations: int = 32
    """Moves for opted-in events per round at most: a promise is not held back by the
    budget of moves made for renewable energy (those come after it)."""
    horizon_s: float = 43200.0
    step_s: float = 900.0
    shed_lookahead_s: float = 0.0
    """Start shedding for a request this long before it begins [s]. The load leaves when the
    checkpoint starts, so 0 sheds at the start; earlier would lower the baseline the meter
    judges the event by (a shed an hour early looked like 3 % delivered)."""
    event_guard_s: float = 3600.0
    """A site with an opted-in event in force or starting within this time takes no job and
    gives none up except for that event: the meter sees the event's change and no other [s]."""
    delivery_margin: float = 0.25
    """Shed or absorb this much more than asked, and opt in only when the planner predicts
    it, so that a job finishing or a baseline a little off still leaves the request met;
    offers are what the moves deliver divided by one plus it [-]."""
    refill_ahead_s: float = 1800.0
    """An absorb in force counts a job at its site that finishes within this time as gone
    already, so that a replacement arrives as it ends, not a round and a move later [s]."""
    absorb_early_s: float = 60.0
    """A move for an absorb starts at most this much before it must (so that the job is
    running at the site at the start): rounds fall between instants, and the dispatcher takes
    each next step when the site's operation is due, not later [s]."""
    candidates_per_site: int = 4
    """Jobs per source site that a round considers (the largest); bounds the work [-]."""
    targets_per_round: int = 32
    """Targets a round considers (those with the most green headroom now) [-]."""
    preempt_s: float = 900.0
    """forecast-global: also move jobs off sites that fall short within this time [s]."""
    downtime_weight: float = 1.0
    """forecast-global: energy charged per kWh of work delayed by a move [-]."""
    min_benefit_kwh: float = 0.2
    """forecast-global: a move must save at least this much grid energy [kWh]."""
    rounds: int = 1000
    """forecast-global: batches of moves per planning round; a batch moves at most one job
    out of or into each site, so that its moves do not change each other's value [-]."""
    max_move_s: float = 900.0
    """forecast-global: no single move may stop a job longer than this [s]."""
    value_horizon_s: float = 10800.0
    """forecast-global: how far ahead a move's savings count; the job may move again later [s]."""


@dataclass(frozen=True)
class MoveCost:
    """The feasibility model for a batch of moves; arrays of one shape."""

    migration_s: fm.FloatArray
    """Checkpoint write, transfer and restore [s]."""
    energy_kwh: fm.FloatArray
    """Network energy plus the job's idle GPUs while it is stopped [kWh]."""

    def columns(self, index: int | npt.NDArray[np.int64]) -> MoveCost:
        """The moves to some targets only (for (jobs, targets) arrays)."""
        return MoveCost(self.migration_s[:, index], self.energy_kwh[:, index])


def move_cost(
    checkpoint_gb: fm.ArrayLike,
    gpus: fm.ArrayLike,
    bandwidth_gbps: fm.ArrayLike,
    params: PolicyParams,
) -> MoveCost:
    """Time and energy of moving jobs over ``bandwidth_gbps`` (inputs broadcast).

    checkpoint_gb [GB]; gpus [-]; bandwidth_gbps [Gbit/s].
    """
    gb = np.asarray(checkpoint_gb, dtype=np.float64)
    f = params.feasibility
    migration_s = fm.migration_s(
        fm.checkpoint_write_s(gb, params.checkpoint_write_gb_per_s),
        fm.transfer_s(gb, bandwidth_gbps, f.efficiency),
        fm.restore_s(gb, params.restore_gb_per_s),
    )
    energy_kwh = fm.migration_kwh(
        gb, migration_s, f.network_kwh_per_gb, f.idle_kw * np.asarray(gpus, dtype=np.float64)
    )
    return MoveCost(
        migration_s=np.asarray(migration_s, dtype=np.float64),
        energy_kwh=np.asarray(energy_kwh, dtype=np.float64),
    )


def in_domain(
    cost: MoveCost, power_kw: fm.ArrayLike, window_s: fm.ArrayLike, alpha: float
) -> fm.BoolArray:
    """Inside the feasibility domain of the window: in time (migration <= alpha * window)
    and in energy (the move is repaid by green running inside the window)."""
    breakeven = fm.breakeven_s(cost.energy_kwh, power_kw)
    ok_time = fm.feasible_time(cost.migration_s, window_s, alpha)
    ok_energy = fm.feasible_energy(breakeven, window_s, cost.migration_s)
    return np.asarray(np.logical_and(ok_time, ok_energy), dtype=np.bool_)

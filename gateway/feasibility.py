"""The feasibility-domain model of live migration (``docs/architecture.md``, 'Feasibility domain').

Pure, vectorised functions: numpy arrays (or scalars) in, arrays out; no I/O, no clock.
They link checkpoint size, WAN bandwidth and the length of the renewable window at the
destination, after Tomei et al. (arXiv 2511.16182). Sizes are in GB (10^9 bytes),
bandwidth in Gbit/s (10^9 bit/s), durations in seconds and energy in kWh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ArrayLike = npt.ArrayLike

BITS_PER_BYTE = 8.0


@dataclass(frozen=True)
class FeasibilityParams:
    """Constants of the model; every one is configurable (``[feasibility]`` in the config).

    alpha: share of the destination's renewable window that a migration may take [-]
    efficiency: usable share of the nominal WAN bandwidth [-]
    network_kwh_per_gb: energy the network spends per GB moved [kWh/GB]
    idle_kw: power drawn by the job's GPUs while it is stopped for the move [kW]
    """

    alpha: float = 0.1
    efficiency: float = 0.9
    network_kwh_per_gb: float = 0.01
    idle_kw: float = 0.11

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency}")
        if self.network_kwh_per_gb < 0:
            raise ValueError(f"network_kwh_per_gb must be >= 0, got {self.network_kwh_per_gb}")
        if self.idle_kw < 0:
            raise ValueError(f"idle_kw must be >= 0, got {self.idle_kw}")


def _f(x: ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


def transfer_s(checkpoint_gb: ArrayLike, bandwidth_gbps: ArrayLike, efficiency: ArrayLike) -> Any:
    """Time to move a checkpoint over the WAN [s].

    checkpoint_gb: checkpoint size [GB]; bandwidth_gbps: nominal WAN bandwidth [Gbit/s];
    efficiency: usable share of the bandwidth [-].
    """
    return BITS_PER_BYTE * _f(checkpoint_gb) / (_f(efficiency) * _f(bandwidth_gbps))


def migration_s(checkpoint_write_s: ArrayLike, transfer_s_: ArrayLike, restore_s: ArrayLike) -> Any:
    """Total disruption of one migration: write, transfer and restore [s]."""
    return _f(checkpoint_write_s) + _f(transfer_s_) + _f(restore_s)


def migration_kwh(
    checkpoint_gb: ArrayLike,
    migration_s_: ArrayLike,
    network_kwh_per_gb: ArrayLike,
    idle_kw: ArrayLike,
) -> Any:
    """Energy one migration costs: network transport plus idle GPUs while stopped [kWh]."""
    return _f(network_kwh_per_gb) * _f(checkpoint_gb) + _f(idle_kw) * _f(migration_s_) / 3600.0


def breakeven_s(migration_kwh_: ArrayLike, job_power_kw: ArrayLike) -> Any:
    """Green running time at the destination that repays the migration's energy [s]."""
    power_kw = _f(job_power_kw)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(power_kw > 0, 3600.0 * _f(migration_kwh_) / power_kw, np.inf)


def feasible_time(migration_s_: ArrayLike, window_s: ArrayLike, alpha: ArrayLike) -> Any:
    """True where the migration fits in the share ``alpha`` of the window."""
    return _f(migration_s_) <= _f(alpha) * _f(window_s)


def feasible_energy(breakeven_s_: ArrayLike, window_s: ArrayLike, migration_s_: ArrayLike) -> Any:
    """True where the green time left after the move repays the migration."""
    return _f(breakeven_s_) <= _f(window_s) - _f(migration_s_)


def max_checkpoint_gb(
    window_s: ArrayLike, bandwidth_gbps: ArrayLike, alpha: ArrayLike, efficiency: ArrayLike
) -> Any:
    """Largest checkpoint whose transfer alone fits in ``alpha`` of the window [GB]."""
    return _f(alpha) * _f(window_s) * _f(efficiency) * _f(bandwidth_gbps) / BITS_PER_BYTE


@dataclass(frozen=True)
class Assessment:
    """Every quantity of the model for a batch of (job, target) pairs; arrays of one shape."""

    transfer_s: FloatArray
    migration_s: FloatArray
    migration_kwh: FloatArray
    breakeven_s: FloatArray
    feasible_time: BoolArray
    feasible_energy: BoolArray
    max_checkpoint_gb: FloatArray

    @property
    def feasible(self) -> BoolArray:
        """Feasible in time and in energy."""
        return np.logical_and(self.feasible_time, self.feasible_energy)


def assess(
    *,
    checkpoint_gb: ArrayLike,
    bandwidth_gbps: ArrayLike,
    window_s: ArrayLike,
    checkpoint_write_s: ArrayLike,
    restore_s: ArrayLike,
    job_power_kw: ArrayLike,
    params: FeasibilityParams,
) -> Assessment:
    """Evaluate the whole model at once; inputs broadcast against each other.

    checkpoint_gb [GB], bandwidth_gbps [Gbit/s], window_s [s], checkpoint_write_s [s],
    restore_s [s], job_power_kw [kW].
    """
    t_transfer = transfer_s(checkpoint_gb, bandwidth_gbps, params.efficiency)
    t_migration = migration_s(checkpoint_write_s, t_transfer, restore_s)
    e_migration = migration_kwh(
        checkpoint_gb, t_migration, params.network_kwh_per_gb, params.idle_kw
    )
    t_breakeven = breakeven_s(e_migration, job_power_kw)
    shape = np.broadcast_shapes(np.shape(t_migration), np.shape(window_s), np.shape(t_breakeven))
    return Assessment(
        transfer_s=np.broadcast_to(t_transfer, shape).astype(np.float64),
        migration_s=np.broadcast_to(t_migration, shape).astype(np.float64),
        migration_kwh=np.broadcast_to(e_migration, shape).astype(np.float64),
        breakeven_s=np.broadcast_to(t_breakeven, shape).astype(np.float64),
        feasible_time=np.broadcast_to(feasible_time(t_migration, window_s, params.alpha), shape),
        feasible_energy=np.broadcast_to(feasible_energy(t_breakeven, window_s, t_migration), shape),
        max_checkpoint_gb=np.broadcast_to(
            max_checkpoint_gb(window_s, bandwidth_gbps, params.alpha, params.efficiency), shape
        ).astype(np.float64),
    )


def checkpoint_write_s(checkpoint_gb: ArrayLike, write_gb_per_s: float) -> Any:
    """Time to write a checkpoint to local disk [s] (write_gb_per_s [GB/s])."""
    return _f(checkpoint_gb) / write_gb_per_s


def restore_s(checkpoint_gb: ArrayLike, read_gb_per_s: float) -> Any:
    """Time to load a checkpoint back onto the GPUs [s] (read_gb_per_s [GB/s])."""
    return _f(checkpoint_gb) / read_gb_per_s

"""The fleet as arrays: what every policy reads, in the daemon and in the evaluator alike.

Sites are indexed 0..S-1 and candidate jobs 0..J-1 (jobs running, migratable and not already
moving). Power is in kW: ``supply_kw`` is facility power (what the site's plant delivers, plus
what an opted-in surplus event asks it to absorb); ``it_power_kw`` and job power are IT power.
A site's IT headroom at forecast step k is ``supply_kw[s, k] / pue[s] - it_power_kw[s]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.feasibility import BoolArray, FloatArray

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class FleetArrays:
    at_s: float
    """Now, as seconds on the same axis as ``job_arrived_s`` [s]."""
    step_s: float
    """Spacing of the forecast columns of ``supply_kw`` [s]."""
    gpus_free: IntArray
    it_power_kw: FloatArray
    it_power_max_kw: FloatArray
    pue: FloatArray
    bandwidth_gbps: FloatArray
    online: BoolArray
    supply_kw: FloatArray
    """(S, K) green facility power forecast; column 0 is now [kW]."""
    shed_kw: FloatArray
    """Facility power each site must still shed now, the margin included [kW] (0: none)."""
    blocked: BoolArray
    """Sites that take no new jobs (asked to shed or cap)."""
    job_site: IntArray
    job_gpus: IntArray
    job_power_kw: FloatArray
    job_checkpoint_gb: FloatArray
    job_arrived_s: FloatArray
    """When each job started at its site, on the axis of ``at_s`` [s]."""
    job_work_gpu_h: FloatArray
    """Work each job has left [GPU h] (inf when unknown)."""
    absorb_kw: FloatArray | None = None
    """Facility power each site must still absorb for an opted-in event, the margin
    included [kW] (None: none)."""
    absorb_in_s: FloatArray | None = None
    """Seconds until each site's absorb starts (0 once in force) [s]."""
    absorb_until_s: FloatArray | None = None
    """Seconds until each site's absorb ends (inf: open-ended) [s]."""
    job_pinned: BoolArray | None = None
    """Jobs at sites that an opted-in event guards (in force or about to start): they move
    only for that event, so the meter sees the event's change and no other (None: none)."""
    idle_kw_per_gpu: float = 0.0
    """IT power a GPU draws while no job runs on it: a job that leaves a site takes its power
    less this per GPU with it [kW]."""

    @property
    def n_sites(self) -> int:
        return int(self.pue.shape[0])

    @property
    def n_jobs(self) -> int:
        return int(self.job_site.shape[0])

    @property
    def pinned(self) -> BoolArray:
        """Per job: moves only for the event that guards its site."""
        if self.job_pinned is None:
            return np.zeros(self.n_jobs, dtype=np.bool_)
        return self.job_pinned

    def job_runs_s(self, jobs: IntArray | int) -> FloatArray:
        """Running time each job has left at full speed: work over GPUs (inf when unknown)
        [s]."""
        result: FloatArray = 3600.0 * self.job_work_gpu_h[jobs] / np.maximum(1, self.job_gpus[jobs])
        return result

    def net_it_kw(self, jobs: IntArray | int) -> FloatArray:
        """IT power a site loses when ``jobs`` leave it, or gains when they arrive: their
        power less the idle draw of the GPUs they free or take [kW]."""
        result: FloatArray = np.maximum(
            0.0, self.job_power_kw[jobs] - self.idle_kw_per_gpu * self.job_gpus[jobs]
        )
        return result


@dataclass(frozen=True)
class Moves:
    """A policy's decisions: candidate ``job[i]`` goes to site ``target[i]``."""

    job: IntArray
    target: IntArray
    migration_s: FloatArray
    energy_kwh: FloatArray
    window_s: FloatArray
    """Green window at the target when the move was chosen [s]."""
    shed: BoolArray
    """True when the move sheds load for a request."""

    @classmethod
    def empty(cls) -> Moves:
        none_i = np.zeros(0, dtype=np.int64)
        none_f = np.zeros(0, dtype=np.float64)
        return cls(none_i, none_i, none_f, none_f, none_f, np.zeros(0, dtype=np.bool_))

    @classmethod
    def of(cls, rows: list[tuple[int, int, float, float, float, bool]]) -> Moves:
        if not rows:
            return cls.empty()
        job, target, mig, kwh, window, shed = zip(*rows, strict=True)
        return cls(
            np.asarray(job, dtype=np.int64),
            np.asarray(target, dtype=np.int64),
            np.asarray(mig, dtype=np.float64),
            np.asarray(kwh, dtype=np.float64),
            np.asarray(window, dtype=np.float64),
            np.asarray(shed, dtype=np.bool_),
        )

    def __len__(self) -> int:
        return int(self.job.shape[0])

    def concat(self, other: Moves) -> Moves:
        return Moves(
            np.concatenate([self.job, other.job]),
            np.concatenate([self.target, other.target]),
            np.concatenate([self.migration_s, other.migration_s]),
            np.concatenate([self.energy_kwh, other.energy_kwh]),
            np.concatenate([self.window_s, other.window_s]),
            np.concatenate([self.shed, other.shed]),
        )


def headroom_kw(supply_kw: FloatArray, pue: FloatArray, it_power_kw: FloatArray) -> FloatArray:
    """IT power each site's green supply leaves free at each forecast step, (S, K) [kW]."""
    result: FloatArray = supply_kw / pue[:, None] - it_power_kw[:, None]
    return result


def prefix_min(headroom: FloatArray) -> FloatArray:
    """Headroom guaranteed from now through each step: running minimum along the steps."""
    result: FloatArray = np.minimum.accumulate(headroom, axis=-1)
    return result


def windows_s(prefix_row: FloatArray, power_kw: FloatArray, step_s: float) -> FloatArray:
    """Contiguous green time from now for jobs of ``power_kw`` added at one site [s].

    prefix_row: that site's running-minimum headroom (non-increasing) [kW].
    """
    steps = np.searchsorted(-prefix_row, -power_kw, side="right")
    result: FloatArray = steps.astype(np.float64) * step_s
    return result

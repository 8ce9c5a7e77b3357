"""GPUs and power a site has committed, counted as the simulator counts them.

A job holds its GPUs while running, checkpointing or restoring; a reservation holds its GPUs
and power until it is consumed or released. The IT draw is the running jobs' ``power_kw`` plus
the idle power of every other GPU. A new commitment fits when enough GPUs are free and the
committed power (jobs holding GPUs and reservations at full power, free GPUs at idle power)
stays within the IT power cap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.agent.state import AgentJob, Reservation

_EPSILON = 1e-9


@dataclass(frozen=True)
class Capacity:
    """A site's limits: gpus_total [-], it_power_max_kw [kW], idle_kw_per_gpu [kW]."""

    gpus_total: int
    it_power_max_kw: float
    idle_kw_per_gpu: float

    def gpus_reserved(self, reservations: Iterable[Reservation]) -> int:
        return sum(r.gpus for r in reservations if r.state == "reserved")

    def gpus_free(self, jobs: Iterable[AgentJob], reservations: Iterable[Reservation]) -> int:
        """GPUs neither held by a job nor reserved (negative when overcommitted) [-]."""
        in_use = sum(job.spec.gpus for job in jobs if job.holds_gpus)
        return self.gpus_total - in_use - self.gpus_reserved(reservations)

    def it_power_kw(self, jobs: Iterable[AgentJob]) -> float:
        """IT draw now: running jobs at power_kw, every other GPU at idle power [kW]."""
        running = [job.spec for job in jobs if job.state == "running"]
        idle_gpus = self.gpus_total - sum(spec.gpus for spec in running)
        return sum(spec.power_kw for spec in running) + self.idle_kw_per_gpu * idle_gpus

    def committed_power_kw(
        self, jobs: Iterable[AgentJob], reservations: Iterable[Reservation]
    ) -> float:
        """Jobs holding GPUs and reservations at full power, free GPUs at idle power [kW]."""
        jobs, reservations = list(jobs), list(reservations)
        jobs_kw = sum(job.spec.power_kw for job in jobs if job.holds_gpus)
        reserved_kw = sum(r.power_kw for r in reservations if r.state == "reserved")
        free = max(0, self.gpus_free(jobs, reservations))
        return jobs_kw + reserved_kw + self.idle_kw_per_gpu * free

    def fits(
        self,
        jobs: Iterable[AgentJob],
        reservations: Iterable[Reservation],
        gpus: int,
        power_kw: float,
    ) -> bool:
        """Whether ``gpus`` more GPUs at ``power_kw`` [kW] can be committed."""
        jobs, reservations = list(jobs), list(reservations)
        if gpus > self.gpus_free(jobs, reservations):
            return False
        power_after_kw = (
            self.committed_power_kw(jobs, reservations) - self.idle_kw_per_gpu * gpus + power_kw
        )
        return power_after_kw <= self.it_power_max_kw + _EPSILON

    def why_not(
        self,
        jobs: Iterable[AgentJob],
        reservations: Iterable[Reservation],
        gpus: int,
        power_kw: float,
    ) -> str:
        jobs, reservations = list(jobs), list(reservations)
        return (
            f"cannot hold {gpus} GPUs at {power_kw:g} kW: "
            f"{self.gpus_free(jobs, reservations)} GPUs free, "
            f"{self.committed_power_kw(jobs, reservations):.3f} kW committed "
            f"of {self.it_power_max_kw:g} kW"
        )

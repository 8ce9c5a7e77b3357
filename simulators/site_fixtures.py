"""A simulated site and a request body shared by the site API's tests.

``tests/integration/test_site_simulator.py`` and ``tests/system/test_site_api_contract.py`` build
their simulated sites and their (often deliberately broken) restore requests from these.
"""

from __future__ import annotations

from typing import Any

from gateway.clock import ManualClock
from gateway.sites.records import JobSpec
from simulators.site_controller import SimulatedSite
from simulators.traces import RenewableTrace

IDLE_KW_PER_GPU = 0.1
CHECKPOINT_WRITE_GB_PER_S = 0.6
RESTORE_GB_PER_S = 1.5
EFFICIENCY = 0.9


def simulated_site(
    site_id: str, token: str, clock: ManualClock, jobs: list[JobSpec]
) -> SimulatedSite:
    """A site of 8 GPUs and 8 kW under a constant 10 kW of renewable power, running ``jobs``;
    an idle GPU draws :data:`IDLE_KW_PER_GPU` [kW], the disks and the link run at the rates
    above."""
    return SimulatedSite(
        site_id=site_id,
        token=token,
        clock=clock,
        trace=RenewableTrace.constant(10.0),
        gpus_total=8,
        it_power_max_kw=8.0,
        idle_kw_per_gpu=IDLE_KW_PER_GPU,
        checkpoint_write_gb_per_s=CHECKPOINT_WRITE_GB_PER_S,
        restore_gb_per_s=RESTORE_GB_PER_S,
        efficiency=EFFICIENCY,
        jobs=jobs,
    )


def restore_body(**changes: Any) -> dict[str, Any]:
    """A well-formed ``POST /v1/jobs/{job_id}/restore`` body with the top-level ``changes``."""
    body: dict[str, Any] = {
        "migration_id": "m-1",
        "source_site_id": "site-a",
        "checkpoint": {"size_gb": 12.0, "sha256": "0" * 64},
        "job": {
            "gpus": 4,
            "power_kw": 2.6,
            "checkpoint_gb": 12.0,
            "work_remaining_gpu_h": 40.0,
            "migratable": True,
            "flex_tier": 1,
        },
    }
    body.update(changes)
    return body


RESTORE_JOB: dict[str, Any] = restore_body()["job"]
"""The ``job`` object of :func:`restore_body`: a well-formed job spec."""

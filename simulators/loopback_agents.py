"""Real site agents on loopback, set up for a benchmark or a test.

A few agents (``gateway.agent``) that know each other's bearer tokens run the example training
job (``gateway.agent.example_job``) as real processes; the gateway's database describes them as
the daemon's polls would have stored them, so that its Dispatcher can migrate the job between
them. ``benchmarks/agent_migration.py`` and ``tests/system/test_site_agent.py`` (and the fault tests
built on it) set up their agents with these functions, each with its own sizes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.db import unit_of_work
from gateway.sites.records import JobSpec
from models import Job, Site

EXAMPLE_JOB_MODULE = "gateway.agent.example_job"
PUE = 1.2
"""The power usage effectiveness the database gives every agent's site [-]."""


@dataclass(frozen=True)
class SiteSize:
    """What every agent's site has: gpus_total [-], it_power_max_kw [kW] and
    wan_bandwidth_gbps [Gbit/s]."""

    gpus_total: int
    it_power_max_kw: float
    wan_bandwidth_gbps: float


def agent_command(config: Path) -> list[str]:
    """The command line of ``dr-gateway site-agent --config CONFIG`` in a process of its own,
    run by this interpreter (start it in the project's root)."""
    return [sys.executable, "-m", "gateway.cli", "site-agent", "--config", str(config)]


def example_command(steps: int, *, step_sleep_s: float, width: int | None = None) -> list[str]:
    """The example job's command in an agent's ``[[job]]``: ``steps`` training steps with a
    pause of ``step_sleep_s`` [s] after each, ``width`` hidden units (the job's default when
    None). The agent fills in ``{python}`` and ``{output_dir}``; the pause comes last."""
    command = ["{python}", "-m", EXAMPLE_JOB_MODULE, "--steps", str(steps), "--out", "{output_dir}"]
    if width is not None:
        command += ["--width", str(width)]
    return [*command, "--step-sleep-s", str(step_sleep_s)]


def job_table(spec: JobSpec, command: Sequence[str]) -> dict[str, Any]:
    """An agent's ``[[job]]`` settings: the job ``spec``, run by ``command``."""
    return {
        "id": spec.job_id,
        "gpus": spec.gpus,
        "power_kw": spec.power_kw,
        "checkpoint_gb": spec.checkpoint_gb,
        "work_gpu_h": spec.work_remaining_gpu_h,
        "migratable": spec.migratable,
        "flex_tier": spec.flex_tier,
        "command": list(command),
    }


def agent_data(
    root: Path,
    site_id: str,
    tokens: Mapping[str, str],
    size: SiteSize,
    jobs: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The settings (``gateway.agent.config``, before validation) of the agent of ``site_id``:
    a site of ``size``, its data in ``root/site_id``, its token ``tokens[site_id]``, every
    other token of ``tokens`` as a peer's, and the ``jobs`` to start (:func:`job_table`)."""
    return {
        "site_id": site_id,
        "token": tokens[site_id],
        "gpus_total": size.gpus_total,
        "it_power_max_kw": size.it_power_max_kw,
        "wan_bandwidth_gbps": size.wan_bandwidth_gbps,
        "data_dir": str(root / site_id),
        "peer_tokens": {other: token for other, token in tokens.items() if other != site_id},
        "job": [dict(job) for job in jobs],
    }


def seed_database(
    sessions: sessionmaker[Session],
    urls: Mapping[str, str],
    size: SiteSize,
    job: JobSpec,
    job_site_id: str,
) -> None:
    """Store a site of ``size`` for every agent (site id -> base URL in ``urls``) and ``job``
    running at ``job_site_id``, as the daemon's polls would have stored them."""
    now = datetime.now(UTC)
    with unit_of_work(sessions) as session:
        for site_id, url in urls.items():
            session.add(
                Site(
                    id=site_id,
                    gpus_total=size.gpus_total,
                    it_power_max_kw=size.it_power_max_kw,
                    pue=PUE,
                    wan_bandwidth_gbps=size.wan_bandwidth_gbps,
                    controller_url=url,
                    vtn_id=None,
                    resource_id=site_id,
                    online=True,
                    updated_at=now,
                )
            )
        session.flush()
        session.add(
            Job(
                id=job.job_id,
                site_id=job_site_id,
                gpus=job.gpus,
                power_kw=job.power_kw,
                checkpoint_gb=job.checkpoint_gb,
                work_remaining_gpu_h=job.work_remaining_gpu_h,
                migratable=job.migratable,
                flex_tier=job.flex_tier,
                state="running",
                first_seen_at=now,
                arrived_at_site_at=now,
                updated_at=now,
            )
        )

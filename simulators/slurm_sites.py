"""Site agents in front of real Slurm clusters (:mod:`simulators.slurm_cluster`), served in this
process on loopback, running the PyTorch example job (``gateway.training.example_torch``).

``benchmarks/slurm_migration.py`` and the Slurm system tests (``tests/support/slurm_sites.py``)
set up their agents with these functions, each with its own sizes: the job's command, an agent's
settings with ``[slurm]``, the agents started on OS-assigned ports and stopped again, and what
``squeue --json`` says about the clusters' jobs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.agent.config import AgentSettings
from gateway.agent.controller import SiteAgent
from gateway.agent.server import AGENT_KEY, start_agent_server
from simulators.slurm_cluster import SlurmCluster
from simulators.slurm_watch import batch_jobs

TORCH_MODULE = "gateway.training.example_torch"


def torch_command(*, steps: int, width: int, step_sleep_s: float) -> list[str]:
    """The PyTorch example job as an agent's ``[[job]]`` command: ``steps`` steps of an MLP of
    ``width`` hidden units, a pause of ``step_sleep_s`` [s] after each; it confirms its resumes
    (``{resumed_path}``), so that a restore is done once the job has loaded its checkpoint."""
    return [
        "{python}",
        "-m",
        TORCH_MODULE,
        "--steps",
        str(steps),
        "--out",
        "{output_dir}",
        "--width",
        str(width),
        "--step-sleep-s",
        str(step_sleep_s),
        "--resumed-file",
        "{resumed_path}",
    ]


def slurm_agent_data(
    root: Path,
    site_id: str,
    cluster: SlurmCluster,
    tokens: Mapping[str, str],
    *,
    it_power_max_kw: float,
    wan_bandwidth_gbps: float,
    poll_s: float,
    jobs: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The settings (``gateway.agent.config``, before validation) of the agent of ``site_id``
    in front of ``cluster``, reading it every ``poll_s`` [s]: its data in ``root/agent-SITE``,
    its token ``tokens[site_id]``, every other token of ``tokens`` as a peer's, and the
    ``jobs`` to start. Its GPUs are the cluster's (``sinfo``)."""
    return {
        "site_id": site_id,
        "token": tokens[site_id],
        "it_power_max_kw": it_power_max_kw,
        "wan_bandwidth_gbps": wan_bandwidth_gbps,
        "data_dir": str(root / f"agent-{site_id}"),
        "peer_tokens": {other: token for other, token in tokens.items() if other != site_id},
        "slurm": {"conf_path": str(cluster.conf_path), "poll_s": poll_s},
        "job": [dict(job) for job in jobs],
    }


def squeue_jobs(cluster: SlurmCluster) -> dict[int, dict[str, Any]]:
    """The jobs of ``squeue --json`` by job id: every job slurmctld knows, finished ones
    included (22.05 ignores ``--states``, ``--jobs`` and the other filters with ``--json``)."""
    jobs: list[dict[str, Any]] = json.loads(cluster.run("squeue", "--json"))["jobs"]
    return {int(job["job_id"]): job for job in jobs}


@dataclass
class SlurmSite:
    """A site: its cluster and the agent serving in front of it at ``url``."""

    site_id: str
    cluster: SlurmCluster
    runner: web.AppRunner
    url: str

    @property
    def agent(self) -> SiteAgent:
        return self.runner.app[AGENT_KEY]

    def log_text(self, job_id: str) -> str:
        """The job's log here (its Slurm output), empty before it has one."""
        path = self.agent.job_paths(job_id).log_path
        return path.read_text() if path.exists() else ""

    def batch_job_name(self, job_id: str) -> str:
        """The Slurm job name of ``job_id``'s runs here; a hold takes it once the restore
        renames it."""
        slurm = self.agent.settings.slurm
        return f"{'' if slurm is None else slurm.job_name_prefix}{job_id}"

    def slurm_jobs(self, job_id: str) -> dict[int, dict[str, Any]]:
        """The Slurm jobs that ran or run ``job_id`` here (``squeue --json`` as printed), by
        Slurm job id."""
        name = self.batch_job_name(job_id)
        return {i: job for i, job in squeue_jobs(self.cluster).items() if job["name"] == name}

    def live_batch_jobs(self, job_id: str) -> list[int]:
        """The Slurm jobs of ``job_id`` that Slurm has not ended (pending, running, ...), read
        from ``squeue`` itself."""
        jobs = batch_jobs(self.cluster, self.batch_job_name(job_id))
        return [job.job_id for job in jobs if not job.ended]


@asynccontextmanager
async def slurm_sites(
    settings: Mapping[str, tuple[SlurmCluster, AgentSettings]],
) -> AsyncIterator[dict[str, SlurmSite]]:
    """Agents on OS-assigned loopback ports, one per cluster, by site id; stopped on the way
    out (their Slurm jobs run on until the clusters stop)."""
    sites: dict[str, SlurmSite] = {}
    try:
        for site_id, (cluster, agent_settings) in settings.items():
            runner, url = await start_agent_server(agent_settings)
            sites[site_id] = SlurmSite(site_id, cluster, runner, url)
        yield sites
    finally:
        for site in sites.values():
            await site.runner.cleanup()

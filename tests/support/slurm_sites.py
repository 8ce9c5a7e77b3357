"""Site agents in front of real Slurm clusters (:mod:`tests.support.slurm`), running the PyTorch
example job (``gateway.training.example_torch``), for the system tests of the Slurm site
controller.

A test that needs the job mid-training holds it there: the job's test-only ``--step-gate``
keeps it at step :data:`HOLD_AT_STEP` until the test creates the gate file.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.agent.config import AgentSettings, parse_agent_settings
from gateway.agent.controller import SiteAgent
from gateway.agent.server import AGENT_KEY, start_agent_server
from gateway.sites.records import JobSpec
from gateway.training.example_torch import MODEL_FILE
from simulators.hang_guard import HANG_GUARD_S
from simulators.slurm_cluster import SlurmCluster
from tests.support.slurm import squeue_jobs
from tests.support.waiting import wait_for

TORCH_MODULE = "gateway.training.example_torch"
STEPS = 60
"""Steps of the PyTorch example job (about 1 ms each at this width, plus the sleep)."""
HOLD_AT_STEP = 30
WIDTH = 16
STEP_SLEEP_S = 0.002
TOKENS = {"east": "token-of-the-east-agent", "west": "token-of-the-west-agent"}
JOB_ID = "torch-1"
JOB = JobSpec(JOB_ID, gpus=1, power_kw=0.6, checkpoint_gb=0.001, work_remaining_gpu_h=2.0)
IT_POWER_MAX_KW = 4.0
WAN_BANDWIDTH_GBPS = 10.0
POLL_S = 0.1
"""How often the agents read their clusters [s]."""


def torch_command(gate: Path | None = None, steps: int = STEPS, width: int = WIDTH) -> list[str]:
    """The PyTorch example job as an agent's ``[[job]]`` command: it confirms its resumes
    (``{resumed_path}``); with ``gate`` it waits at :data:`HOLD_AT_STEP` until that file
    exists."""
    command = [
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
        str(STEP_SLEEP_S),
        "--resumed-file",
        "{resumed_path}",
    ]
    if gate is not None:
        command += ["--step-gate", str(gate), "--hold-at-step", str(HOLD_AT_STEP)]
    return command


def reference_model(out: Path, steps: int = STEPS, width: int = WIDTH) -> bytes:
    """The final model of an uninterrupted run of the job (run here, not under Slurm)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            TORCH_MODULE,
            "--steps",
            str(steps),
            "--out",
            str(out),
            "--width",
            str(width),
        ],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD_S,
    )
    return (out / MODEL_FILE).read_bytes()


def job_table(command: Sequence[str], spec: JobSpec = JOB) -> dict[str, Any]:
    """An agent's ``[[job]]``: ``spec`` run by ``command``."""
    return {
        "id": spec.job_id,
        "gpus": spec.gpus,
        "power_kw": spec.power_kw,
        "checkpoint_gb": spec.checkpoint_gb,
        "work_gpu_h": spec.work_remaining_gpu_h,
        "command": list(command),
    }


def slurm_agent_settings(
    root: Path,
    site_id: str,
    cluster: SlurmCluster,
    jobs: Sequence[Mapping[str, Any]] = (),
    **overrides: Any,
) -> AgentSettings:
    """The agent of ``site_id`` in front of ``cluster``; its data in ``root/agent-SITE``."""
    data = {
        "site_id": site_id,
        "token": TOKENS[site_id],
        "it_power_max_kw": IT_POWER_MAX_KW,
        "wan_bandwidth_gbps": WAN_BANDWIDTH_GBPS,
        "data_dir": str(root / f"agent-{site_id}"),
        "peer_tokens": {other: token for other, token in TOKENS.items() if other != site_id},
        "checkpoint_timeout_s": HANG_GUARD_S,
        "stop_timeout_s": 10.0,
        "resume_timeout_s": HANG_GUARD_S,
        "slurm": {"conf_path": str(cluster.conf_path), "poll_s": POLL_S},
        "job": [dict(job) for job in jobs],
    }
    return parse_agent_settings(data | overrides, f"agent {site_id}")


@dataclass
class SlurmSite:
    """A site: its cluster and the agent serving in front of it."""

    site_id: str
    cluster: SlurmCluster
    runner: web.AppRunner
    url: str

    @property
    def agent(self) -> SiteAgent:
        return self.runner.app[AGENT_KEY]

    def log_text(self, job_id: str = JOB_ID) -> str:
        path = self.agent.job_paths(job_id).log_path
        return path.read_text() if path.exists() else ""

    def model_bytes(self, job_id: str = JOB_ID) -> bytes:
        return (self.agent.job_paths(job_id).output_dir / MODEL_FILE).read_bytes()

    def live_batch_jobs(self, job_id: str = JOB_ID) -> list[int]:
        """The Slurm jobs of ``job_id`` that Slurm has not ended (pending, running, ...), read
        from ``squeue`` itself."""
        name = f"dr-{job_id}"
        return [
            slurm_id
            for slurm_id, job in squeue_jobs(self.cluster).items()
            if job["name"] == name and job["job_state"] not in _ENDED
        ]


_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


@asynccontextmanager
async def slurm_sites(
    settings: Mapping[str, tuple[SlurmCluster, AgentSettings]],
) -> AsyncIterator[dict[str, SlurmSite]]:
    """Agents on OS-assigned loopback ports, one per cluster; stopped on the way out (their
    Slurm jobs run on until the clusters stop)."""
    sites: dict[str, SlurmSite] = {}
    try:
        for site_id, (cluster, agent_settings) in settings.items():
            runner, url = await start_agent_server(agent_settings)
            sites[site_id] = SlurmSite(site_id, cluster, runner, url)
        yield sites
    finally:
        for site in sites.values():
            await site.runner.cleanup()


async def held_at_gate(site: SlurmSite, job_id: str = JOB_ID) -> None:
    """Wait until the gated job waits at step :data:`HOLD_AT_STEP` at ``site``."""
    holding = f"holding at step {HOLD_AT_STEP}"
    await wait_for(
        lambda: holding in site.log_text(job_id), "the job held mid-training", HANG_GUARD_S
    )


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

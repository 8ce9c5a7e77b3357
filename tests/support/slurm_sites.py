"""Site agents in front of real Slurm clusters (:mod:`tests.support.slurm`), running the PyTorch
example job (``gateway.training.example_torch``), for the system tests of the Slurm site
controller: :mod:`simulators.slurm_sites` with the tests' sizes, tokens and job.

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

from gateway.agent.config import AgentSettings, parse_agent_settings
from gateway.sites.records import JobSpec
from gateway.training.example_torch import MODEL_FILE
from simulators import slurm_sites as shared
from simulators.hang_guard import HANG_GUARD_S
from simulators.slurm_cluster import SlurmCluster
from simulators.slurm_sites import TORCH_MODULE
from tests.support.waiting import wait_for

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
    command = shared.torch_command(steps=steps, width=width, step_sleep_s=STEP_SLEEP_S)
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
    data = shared.slurm_agent_data(
        root,
        site_id,
        cluster,
        TOKENS,
        it_power_max_kw=IT_POWER_MAX_KW,
        wan_bandwidth_gbps=WAN_BANDWIDTH_GBPS,
        poll_s=POLL_S,
        jobs=jobs,
    )
    data |= {
        "checkpoint_timeout_s": HANG_GUARD_S,
        "stop_timeout_s": 10.0,
        "resume_timeout_s": HANG_GUARD_S,
    }
    return parse_agent_settings(data | overrides, f"agent {site_id}")


@dataclass
class SlurmSite(shared.SlurmSite):
    """A site (:class:`simulators.slurm_sites.SlurmSite`) whose job is :data:`JOB_ID` unless
    told otherwise."""

    def log_text(self, job_id: str = JOB_ID) -> str:
        return super().log_text(job_id)

    def model_bytes(self, job_id: str = JOB_ID) -> bytes:
        return (self.agent.job_paths(job_id).output_dir / MODEL_FILE).read_bytes()

    def live_batch_jobs(self, job_id: str = JOB_ID) -> list[int]:
        return super().live_batch_jobs(job_id)


@asynccontextmanager
async def slurm_sites(
    settings: Mapping[str, tuple[SlurmCluster, AgentSettings]],
) -> AsyncIterator[dict[str, SlurmSite]]:
    """Agents on OS-assigned loopback ports, one per cluster (:func:`simulators.slurm_sites.
    slurm_sites`); stopped on the way out (their Slurm jobs run on until the clusters stop)."""
    async with shared.slurm_sites(settings) as started:
        yield {
            site_id: SlurmSite(site.site_id, site.cluster, site.runner, site.url)
            for site_id, site in started.items()
        }


async def held_at_gate(site: SlurmSite, job_id: str = JOB_ID) -> None:
    """Wait until the gated job waits at step :data:`HOLD_AT_STEP` at ``site``."""
    holding = f"holding at step {HOLD_AT_STEP}"
    await wait_for(
        lambda: holding in site.log_text(job_id), "the job held mid-training", HANG_GUARD_S
    )


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

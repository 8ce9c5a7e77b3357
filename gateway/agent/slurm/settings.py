"""``[slurm]`` of the site agent's settings: run the site's jobs as Slurm batch jobs.

With this section the agent is the site controller of a Slurm cluster (``docs/slurm.md``): it
submits each job with ``sbatch``, signals it with ``scancel``, reads the cluster with ``squeue
--json`` and ``sinfo --json``, and takes the site's GPUs from Slurm instead of ``gpus_total``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

_NAME = r"^[A-Za-z0-9_.-]+$"


class SlurmSettings(BaseModel):
    """How the agent reaches the cluster and what each job asks Slurm for."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    conf_path: Path | None = None
    """The cluster's ``slurm.conf`` (``SLURM_CONF`` of every Slurm command the agent runs);
    default: Slurm's own default. Relative: to the configuration file's directory."""
    bin_dir: Path | None = None
    """Where ``sbatch``, ``scancel``, ``scontrol``, ``squeue`` and ``sinfo`` are; default: the
    ``PATH``."""
    partition: Annotated[str, Field(pattern=_NAME)] | None = None
    """The partition jobs are submitted to, and whose nodes count; default: the cluster's
    default partition, and every node."""
    account: Annotated[str, Field(pattern=_NAME)] | None = None
    """The Slurm account jobs are charged to; default: the user's default account."""
    gres: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")] = "gpu"
    """The generic resource that stands for a GPU (``Gres=gpu:4`` on the nodes)."""
    cpus_per_gpu: Annotated[int, Field(ge=1, le=1024)] = 1
    """CPUs a job asks for per GPU it holds."""
    mem_per_gpu_mb: Annotated[int, Field(ge=1, le=1 << 24)] = 1024
    """Memory a job asks for per GPU it holds [MB]."""
    poll_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    """How often the agent reads ``squeue`` and ``sinfo`` [s]."""
    command_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Longest a Slurm command may take before it counts as failed (the controller may be
    down or restarting) [s]."""
    hold_start_timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    """Longest a reservation waits for Slurm to start its hold (the job that keeps the GPUs
    for the restore) before it answers 409 [s]; keep it below the gateway's request
    time-out (10 s)."""
    job_name_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{0,32}$")] = "dr-"
    """Slurm job names are this prefix and the job id."""

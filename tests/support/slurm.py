"""Fixtures of real Slurm clusters (:mod:`simulators.slurm_cluster`), each under the test's
``tmp_path`` and stopped at teardown.

A test module takes them by importing them (``from tests.support.slurm import slurm_cluster``).
Where Slurm cannot run (its programs missing, not root) the test is skipped, except under
``CI=true``, where CI has installed Slurm (``.ci/run``) and that is an error. Also the readers of
``squeue --json`` (:func:`simulators.slurm_sites.squeue_jobs`) and ``sinfo --json`` (Slurm
22.05) that the tests share.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.slurm_cluster import SlurmCluster, slurm_available
from simulators.slurm_sites import squeue_jobs

GPUS = 2
CPUS = 4
MEMORY_MB = 4096
"""Every fixture cluster's node: 2 GPUs, 4 CPUs, 4 GiB."""
CLUSTER_NAMES = ("east", "west")
"""The clusters of :func:`slurm_clusters`."""


def require_slurm() -> None:
    """Skip the test where Slurm cannot run; fail it under ``CI=true``."""
    problem = slurm_available()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"Slurm cannot run in CI: {problem}")
    pytest.skip(problem)


def start_cluster(base_dir: Path, name: str) -> SlurmCluster:
    """A cluster called ``name`` of the fixtures' size under ``base_dir``."""
    return SlurmCluster.start(base_dir, name, gpus=GPUS, cpus=CPUS, memory_mb=MEMORY_MB)


@pytest.fixture
def slurm_cluster(tmp_path: Path) -> Iterator[SlurmCluster]:
    """One running cluster, ``site``."""
    require_slurm()
    cluster = start_cluster(tmp_path / "slurm", "site")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm_clusters(tmp_path: Path) -> Iterator[dict[str, SlurmCluster]]:
    """Two clusters running side by side, ``east`` and ``west``, by name."""
    require_slurm()
    clusters: dict[str, SlurmCluster] = {}
    try:
        for name in CLUSTER_NAMES:
            clusters[name] = start_cluster(tmp_path / name, name)
        yield clusters
    finally:
        for cluster in clusters.values():
            cluster.stop()


def submit(cluster: SlurmCluster, script: str, *options: str) -> int:
    """Submit ``script`` (a shell command line) as a batch job in the cluster's work directory
    and return its job id."""
    answer = cluster.run(
        "sbatch", "--parsable", f"--chdir={cluster.work_dir}", *options, "--wrap", script
    )
    return int(answer.strip().split(";")[0])


def job_state(cluster: SlurmCluster, job_id: int) -> str | None:
    """A job's ``job_state`` in ``squeue --json``, or None when not listed."""
    job = squeue_jobs(cluster).get(job_id)
    return None if job is None else str(job["job_state"])


def sinfo_node(cluster: SlurmCluster) -> dict[str, Any]:
    """The cluster's one node in ``sinfo --json``."""
    nodes: list[dict[str, Any]] = json.loads(cluster.run("sinfo", "--json"))["nodes"]
    (node,) = (node for node in nodes if node["name"] == cluster.node_name)
    return node

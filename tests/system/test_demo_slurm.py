"""``dr-gateway demo --slurm`` (``make demo-slurm``) end to end, as a process.

The demo starts two real Slurm clusters, a site agent in front of each and the daemon, moves the
PyTorch job after the sun and checks its own promises; this test runs it once on the shipped
configuration and world, over its first move only (``--hours``), faster (``--speed``) and with a
shorter job, into a temporary folder, and holds it to its verdict. Without Slurm the demo exits 2
with one line naming what to install.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from simulators.hang_guard import HANG_GUARD_S
from simulators.slurm_cluster import cluster_processes
from tests.support.settings_files import write_toml
from tests.support.slurm import require_slurm

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOURS, SPEED = "9", "8000"
"""The shipped day's first 9 hours (to 23:00 UTC: the sun moves west at about 21:00), at most
8000 times faster than the wall."""
SHORT_JOB = {"steps": 400, "hold_at_step": 380, "step_sleep_s": 0.02}
"""A shorter PyTorch job than the shipped one, which trains through a whole day at 2400x."""


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--slurm", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=2 * HANG_GUARD_S,
        check=False,
    )


def test_the_demo_moves_the_pytorch_job_after_the_sun_and_keeps_its_promises(
    tmp_path: Path,
) -> None:
    require_slurm()
    config = tomllib.loads((ROOT / "config" / "demo-slurm.toml").read_text())
    config["database"]["url"] = f"sqlite:///{tmp_path / 'demo-slurm.db'}"
    world = tomllib.loads((ROOT / "config" / "demo-slurm-scenario.toml").read_text())
    work_dir = tmp_path / "work"
    world["work_dir"] = str(work_dir)
    world["job"] |= SHORT_JOB
    write_toml(tmp_path / "config.toml", config)
    write_toml(tmp_path / "scenario.toml", world)

    done = demo(
        "--config",
        str(tmp_path / "config.toml"),
        "--scenario",
        str(tmp_path / "scenario.toml"),
        "--hours",
        HOURS,
        "--speed",
        SPEED,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    verdict = done.stdout.strip().splitlines()[-1]
    assert verdict.startswith("demo-slurm: OK: "), output
    completed = re.search(r"OK: (\d+) migrations? completed", verdict)
    assert completed is not None and int(completed[1]) >= 1, verdict
    assert re.search(r"^  1\. .* east -> west  completed in ", done.stdout, re.M), output
    final = re.search(r"^Final model\.bin .*sha256 ([0-9a-f]{64})$", done.stdout, re.M)
    reference = re.search(
        r"^Uninterrupted run's model\.bin: +sha256 ([0-9a-f]{64})", done.stdout, re.M
    )
    assert final is not None and reference is not None, output
    assert final[1] == reference[1]
    assert "on one cluster at a time: yes" in done.stdout
    assert "all held" in done.stdout
    assert cluster_processes(work_dir) == set(), "the clusters and their jobs are gone"


def test_without_slurm_the_demo_says_what_to_install_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty folder: no Slurm program on it
    done = demo(env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("demo-slurm: Slurm programs missing from PATH: munged, mungekey, ")
    assert line.endswith("apt-get install slurmctld slurmd slurm-client munge")

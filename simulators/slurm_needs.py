"""What a Slurm cluster of :mod:`simulators.slurm_cluster` needs on this machine, said in a line
that tells what to do; light to import, so that ``dr-gateway demo --slurm`` says it at once."""

from __future__ import annotations

import os
import shutil

from simulators.slurm_cluster import SLURM_BINARIES

DEBIAN_PACKAGES = "slurmctld slurmd slurm-client munge"
"""What provides :data:`~simulators.slurm_cluster.SLURM_BINARIES` on Debian."""


def slurm_problem() -> str | None:
    """Why no Slurm cluster can run here, in one line that says what to do; None when one can."""
    missing = [name for name in SLURM_BINARIES if shutil.which(name) is None]
    if missing:
        return (
            f"Slurm programs missing from PATH: {', '.join(missing)}; install Debian's "
            f"packages: apt-get install {DEBIAN_PACKAGES}"
        )
    if os.geteuid() != 0:
        return "the clusters run their Slurm daemons as root (SlurmUser=root, mknod): run as root"
    return None

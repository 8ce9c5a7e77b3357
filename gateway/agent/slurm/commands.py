"""Slurm's command-line tools, run by the agent: ``sbatch``, ``scancel``, ``scontrol``,
``squeue`` and ``sinfo``, with the cluster's ``SLURM_CONF`` and a time limit.

A command that fails, times out or cannot reach ``slurmctld`` raises :class:`SlurmCommandError`
with its stderr: the caller decides whether to try again (the controller may be restarting).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.agent.slurm.settings import SlurmSettings
from gateway.errors import GatewayError

log = logging.getLogger(__name__)

_STDERR_MAX_CHARS = 500


class SlurmCommandError(GatewayError):
    """A Slurm command failed; ``transient`` when trying again later may succeed (no answer
    from ``slurmctld``, a time-out)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


_TRANSIENT_MARKERS = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Connection refused",
    "Zero Bytes were transmitted",
    "Slurm backup controller in standby mode",
    "Communication connection failure",
    "Resource temporarily unavailable",
    "Transaction in progress",
)


class SlurmCommands:
    """Runs Slurm's tools for one cluster (``settings``: ``conf_path``, ``bin_dir``, time-out)."""

    def __init__(self, settings: SlurmSettings, base_env: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        env = dict(os.environ if base_env is None else base_env)
        if settings.conf_path is not None:
            env["SLURM_CONF"] = str(settings.conf_path)
        self.env = env

    def program(self, name: str) -> str:
        bin_dir = self._settings.bin_dir
        return name if bin_dir is None else str(Path(bin_dir) / name)

    async def run(self, name: str, args: Sequence[str]) -> str:
        """Run ``name args...``; its stdout. SlurmCommandError when it fails."""
        argv = [self.program(name), *args]
        timeout_s = self._settings.command_timeout_s
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise SlurmCommandError(f"{argv[0]}: cannot run it: {exc}", transient=False) from exc
        try:
            async with asyncio.timeout(timeout_s):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise SlurmCommandError(
                f"{name} did not answer within {timeout_s:g} s", transient=True
            ) from None
        if process.returncode != 0:
            text = stderr.decode(errors="replace").strip()[:_STDERR_MAX_CHARS]
            transient = any(marker in text for marker in _TRANSIENT_MARKERS)
            raise SlurmCommandError(
                f"{name} {' '.join(args)[:200]} failed (exit {process.returncode}): {text}",
                transient=transient,
            )
        return stdout.decode(errors="replace")

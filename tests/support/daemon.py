"""``dr-gateway run`` in the tests: its settings, their TOML file, the daemon as an OS process.

:func:`gateway_settings` builds the settings a test gives the daemon (what
``gateway.settings.parse_settings`` validates, so an in-process ``Gateway`` takes them as they
are), with :func:`controller_site` for each ``[[site]]``;
:func:`tests.support.settings_files.write_toml` writes them as the file ``dr-gateway run
--config`` reads. :class:`DaemonProcess` runs ``dr-gateway run`` as a process of its own, its
output in a log file: a test waits on it, kills it (SIGKILL), stops it (SIGTERM) and starts it
again on the same database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from simulators.hang_guard import HANG_GUARD_S
from tests.support.waiting import wait_for

KILL_WAIT_S = HANG_GUARD_S
"""Longest wait for the process to go after SIGKILL [wall s]."""
STOP_WAIT_S = HANG_GUARD_S
"""Longest wait for a clean stop after SIGTERM or SIGINT [wall s]."""
LOG_TAIL_CHARS = 3000
"""How much of the end of the daemon's log a failure shows."""


def controller_site(site_id: str, url: str, token: str, **fields: Any) -> dict[str, Any]:
    """One ``[[site]]``: ``site_id`` behind the site controller at ``url`` that takes the bearer
    ``token``, with ``fields`` (sizes, ``vtn``, ``resource_id``, ...)."""
    return {"id": site_id, **fields, "controller_url": url, "controller_token": token}


def gateway_settings(
    database_url: str, sites: Sequence[Mapping[str, Any]], **tables: Any
) -> dict[str, Any]:
    """The daemon's settings: the database at ``database_url``, the ``tables`` (a mapping is a
    ``[table]``, a list of mappings ``[[table]]``: ``scheduler={...}``, ``vtn=[{...}]``) and
    the ``[[site]]`` entries ``sites``."""
    settings: dict[str, Any] = {"database": {"url": database_url}, **tables}
    if sites:
        settings["site"] = [dict(site) for site in sites]
    return settings


class DaemonProcess:
    """``dr-gateway run --config CONFIG`` as a process of its own, run by this interpreter;
    its stdout and stderr go to the end of ``log_path``, across restarts."""

    def __init__(self, log_path: Path, wait_s: float = HANG_GUARD_S) -> None:
        self.log_path = log_path
        self.wait_s = wait_s
        """The bound of :meth:`until` [wall s]."""
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, config: Path) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def log_tail(self) -> str:
        return self.log_text()[-LOG_TAIL_CHARS:]

    async def until(self, condition: Callable[[], object], what: str) -> None:
        """Wait until ``condition`` holds (at most ``wait_s``); fail at once, showing the end
        of the log, if the daemon exits meanwhile."""
        process = self.process
        assert process is not None
        await wait_for(lambda: condition() or process.returncode is not None, what, self.wait_s)
        assert process.returncode is None, (
            f"the daemon exited while waiting for {what}:\n{self.log_tail()}"
        )

    async def kill(self) -> None:
        """SIGKILL: no clean shutdown, nothing flushed."""
        assert self.process is not None
        self.process.kill()
        await asyncio.wait_for(self.process.wait(), timeout=KILL_WAIT_S)

    async def stop(self, signum: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM (or ``signum``): a clean stop, exit code 0, no traceback in the log."""
        assert self.process is not None
        self.process.send_signal(signum)
        code = await asyncio.wait_for(self.process.wait(), timeout=STOP_WAIT_S)
        assert code == 0, self.log_tail()
        assert "Traceback" not in self.log_text(), self.log_tail()

    async def close(self) -> None:
        """Kill the process if it still runs (the end of every test, passed or failed)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

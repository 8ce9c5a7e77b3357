"""Waiting on the wall clock in the integration and system tests.

A test that waits for what a server, a process or a background task does polls a condition
with :func:`wait_for`. Its bound only turns a hang into a failure that names what was awaited;
it is never reached when things work, however loaded the machine: every wait is bounded by
:data:`simulators.hang_guard.HANG_GUARD_S` unless a test names a longer one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

from simulators.hang_guard import HANG_GUARD_S

WAIT_S = HANG_GUARD_S
"""The default bound of :func:`wait_for` [wall s]: a hang guard. What in-process servers on
loopback do within a second on a quiet machine can take many times that on a loaded one."""
POLL_S = 0.05
"""Pause between two looks at a condition [wall s]."""


async def wait_for(
    condition: Callable[[], object],
    what: str | Callable[[], str],
    timeout_s: float = WAIT_S,
    poll_s: float = POLL_S,
) -> object:
    """Look at ``condition`` every ``poll_s`` [s] until it gives something truthy, and return
    that. ``condition`` is a function or a coroutine function (its result is awaited). After
    ``timeout_s`` [wall s] fail with an AssertionError naming ``what`` (a text, or a function
    that gives it at the failure, e.g. with the last state seen)."""
    deadline = time.monotonic() + timeout_s
    while True:
        met = condition()
        if inspect.isawaitable(met):
            met = await met
        if met:
            return met
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"not within {timeout_s} s: {described}")
        await asyncio.sleep(poll_s)


async def wait_for_value(
    read: Callable[[], object],
    expected: object,
    what: str,
    timeout_s: float = WAIT_S,
    poll_s: float = POLL_S,
) -> None:
    """Look at ``read()`` (a function or a coroutine function) every ``poll_s`` [s] until it
    gives ``expected``; after ``timeout_s`` [wall s] fail naming ``what`` and the last value."""
    last: list[object] = []

    async def reached() -> bool:
        value = read()
        if inspect.isawaitable(value):
            value = await value
        last[:] = [value]
        return value == expected

    def described() -> str:
        return f"{what}: {last[0] if last else None!r}, not {expected!r}"

    await wait_for(reached, described, timeout_s, poll_s)

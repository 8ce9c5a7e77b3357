"""Injected time.

Every part of the gateway asks a :class:`Clock` for the time instead of calling
``datetime.now``. The daemon runs on :class:`SystemClock`; the demo runs on a
:class:`ScaledClock` (simulated time running ``speed`` times faster than the wall);
tests use :class:`ManualClock` and move it by hand.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of the current (possibly simulated) time."""

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def wall_s(self, duration_s: float) -> float:
        """Wall-clock seconds that pass while ``duration_s`` simulated seconds pass [s]."""
        ...

    async def sleep(self, duration_s: float) -> None:
        """Wait until ``duration_s`` simulated seconds have passed [s]."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wall_s(self, duration_s: float) -> float:
        return duration_s

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(max(0.0, duration_s))


class ScaledClock:
    """Simulated time that starts at ``start_at`` and runs ``speed`` times faster than the wall.

    Simulated time must not run behind wall time when it talks to openleadr, which judges
    event status on the wall clock; start it at or after the present.
    """

    def __init__(self, start_at: datetime, speed: float) -> None:
        if start_at.tzinfo is None:
            raise ValueError("start_at must be timezone-aware")
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.start_at = start_at.astimezone(UTC)
        self.speed = speed
        self._wall_start = time.monotonic()

    def now(self) -> datetime:
        elapsed_s = (time.monotonic() - self._wall_start) * self.speed
        return self.start_at + timedelta(seconds=elapsed_s)

    def wall_s(self, duration_s: float) -> float:
        return duration_s / self.speed

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(max(0.0, duration_s / self.speed))


class ManualClock:
    """A clock that moves only when told to; ``sleep`` advances it at once."""

    def __init__(self, start_at: datetime) -> None:
        if start_at.tzinfo is None:
            raise ValueError("start_at must be timezone-aware")
        self._now = start_at.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, duration_s: float) -> datetime:
        """Move the clock forward by ``duration_s`` [s] and return the new time."""
        if duration_s < 0:
            raise ValueError("a clock does not run backwards")
        self._now += timedelta(seconds=duration_s)
        return self._now

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        if at < self._now:
            raise ValueError("a clock does not run backwards")
        self._now = at.astimezone(UTC)

    def wall_s(self, duration_s: float) -> float:
        return 0.0

    async def sleep(self, duration_s: float) -> None:
        self.advance(max(0.0, duration_s))
        await asyncio.sleep(0)


def next_midnight_utc(at: datetime) -> datetime:
    """The first UTC midnight strictly after ``at``."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)

"""A stepped clock for campaigns: simulated time moves only when the campaign steps it.

:class:`SteppedClock` keeps the :class:`gateway.clock.Clock` interface (``now``, ``wall_s``,
``sleep``). Unlike :class:`gateway.clock.ManualClock`, ``sleep`` does not move time: a
coroutine that sleeps waits until the campaign has stepped the clock far enough, so that
the only thing that advances simulated time is the campaign's loop and results do not
depend on how fast the machine runs.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta


class SteppedClock:
    """Simulated time that starts at ``start_at`` and moves only by :meth:`advance` or
    :meth:`set`.

    nominal_speed: simulated seconds per wall second that :meth:`wall_s` assumes, for code
        that converts simulated durations into wall-clock waits (e.g. a scheduler) [-]
    """

    def __init__(self, start_at: datetime, nominal_speed: float = 1000.0) -> None:
        if start_at.tzinfo is None:
            raise ValueError("start_at must be timezone-aware")
        if nominal_speed <= 0:
            raise ValueError(f"nominal_speed must be > 0, got {nominal_speed}")
        self.start_at = start_at.astimezone(UTC)
        self.nominal_speed = nominal_speed
        self._now = self.start_at
        self._moved = asyncio.Condition()

    def now(self) -> datetime:
        return self._now

    @property
    def elapsed_s(self) -> float:
        """Simulated time since ``start_at`` [s]."""
        return (self._now - self.start_at).total_seconds()

    def wall_s(self, duration_s: float) -> float:
        return duration_s / self.nominal_speed

    async def sleep(self, duration_s: float) -> None:
        """Wait until the clock has been stepped ``duration_s`` simulated seconds on [s]."""
        until = self._now + timedelta(seconds=max(0.0, duration_s))
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= until)

    async def set(self, at: datetime) -> None:
        """Move the clock to ``at`` (never backwards) and wake the sleepers that are due."""
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        if at < self._now:
            raise ValueError("a clock does not run backwards")
        self._now = at.astimezone(UTC)
        async with self._moved:
            self._moved.notify_all()

    async def advance(self, duration_s: float) -> datetime:
        """Move the clock ``duration_s`` [s] on; the new time."""
        if duration_s < 0:
            raise ValueError("a clock does not run backwards")
        await self.set(self._now + timedelta(seconds=duration_s))
        return self._now

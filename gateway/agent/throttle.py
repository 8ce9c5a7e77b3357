"""Pacing a byte stream to a rate: a token bucket on a monotonic clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway.errors import InputError


class TokenBucket:
    """Paces a byte stream to ``rate_bytes_per_s`` on a monotonic clock.

    A caller pays for bytes before sending them: ``take(n)`` waits until the bucket, refilled
    at the rate and capped at ``burst_bytes``, covers them. The bucket starts empty, so that n
    bytes take n / rate seconds from the first call.
    rate_bytes_per_s: [bytes/s]; burst_bytes: unused credit kept at most [bytes].
    """

    def __init__(
        self,
        rate_bytes_per_s: float,
        *,
        burst_bytes: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not rate_bytes_per_s > 0:
            raise InputError(f"rate_bytes_per_s: expected a positive rate, got {rate_bytes_per_s}")
        if burst_bytes < 0:
            raise InputError(f"burst_bytes: expected >= 0, got {burst_bytes}")
        self.rate_bytes_per_s = rate_bytes_per_s
        self._burst_bytes = burst_bytes
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = 0.0
        self._refilled_s = monotonic()

    async def take(self, n_bytes: int) -> None:
        """Wait until ``n_bytes`` may be sent [bytes]."""
        now = self._monotonic()
        elapsed_s = max(0.0, now - self._refilled_s)
        self._tokens = min(self._burst_bytes, self._tokens + elapsed_s * self.rate_bytes_per_s)
        self._refilled_s = now
        self._tokens -= n_bytes
        if self._tokens < 0:
            await self._sleep(-self._tokens / self.rate_bytes_per_s)

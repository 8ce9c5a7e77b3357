"""Exponential back-off with jitter, for whatever retries a peer: a VTN the VEN lost
(:mod:`gateway.ven.reconnect`) and a site controller's calls (:mod:`gateway.sites.client`)."""

from __future__ import annotations

import random


class Backoff:
    """Exponential back-off with jitter.

    The n-th delay (n = 0, 1, ...) is ``min(initial_s * 2**n, max_s)`` times a factor drawn
    uniformly from [0.5, 1.5], and never more than ``max_s``: VENs that lost the same VTN at
    the same moment spread out instead of coming back together.

    initial_s: the first delay before jitter [s]
    max_s: the longest delay [s]
    rng: the source of jitter (seed it in tests)
    """

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(
                f"back-off: expected 0 < initial_s <= max_s, got initial_s = {initial_s}, "
                f"max_s = {max_s}"
            )
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last :meth:`reset`."""
        return self._attempts

    def next_delay_s(self) -> float:
        """The next delay [s]; each call doubles the base up to ``max_s``."""
        base_s = min(self.initial_s * 2.0 ** min(self._attempts, 64), self.max_s)
        self._attempts += 1
        return min(base_s * self._rng.uniform(0.5, 1.5), self.max_s)

    def reset(self) -> None:
        """Start again from ``initial_s``."""
        self._attempts = 0

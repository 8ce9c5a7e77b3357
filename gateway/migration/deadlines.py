"""How long each step of a migration may take before the dispatcher gives up on it.

A step may take the time the feasibility model (:mod:`gateway.feasibility`) expects of it
times a margin, plus a floor that covers round trips, retries and a controller's start-up:

    limit_s = margin * expected_s + floor_s

    target_reserved   expected 0 (one call)
    checkpointing     checkpoint_gb / checkpoint_write_gb_per_s
    transferring      8 * checkpoint_gb / (efficiency * bandwidth_gbps)
    restoring         checkpoint_gb / restore_gb_per_s

Each limit runs from the moment the step was committed (the gateway's own clock, so a site
whose clock is off does not matter). Pure functions: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gateway.feasibility import checkpoint_write_s, restore_s, transfer_s

TimedState = Literal["target_reserved", "checkpointing", "transferring", "restoring"]
TIMED_STATES: tuple[TimedState, ...] = (
    "target_reserved",
    "checkpointing",
    "transferring",
    "restoring",
)


@dataclass(frozen=True)
class StepTimeouts:
    """margin: limit per expected second [-], at least 1; floor_s: added to every limit [s];
    efficiency: usable share of the WAN bandwidth [-]; checkpoint_write_gb_per_s,
    restore_gb_per_s: the sites' disk rates [GB/s]."""

    margin: float = 3.0
    floor_s: float = 60.0
    efficiency: float = 0.9
    checkpoint_write_gb_per_s: float = 0.6
    restore_gb_per_s: float = 1.5

    def __post_init__(self) -> None:
        if self.margin < 1:
            raise ValueError(f"margin must be >= 1, got {self.margin}")
        if self.floor_s < 0:
            raise ValueError(f"floor_s must be >= 0, got {self.floor_s}")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency}")
        if self.checkpoint_write_gb_per_s <= 0 or self.restore_gb_per_s <= 0:
            raise ValueError("checkpoint_write_gb_per_s and restore_gb_per_s must be > 0")


def expected_step_s(
    state: TimedState, checkpoint_gb: float, bandwidth_gbps: float, timeouts: StepTimeouts
) -> float:
    """What the feasibility model expects the step to take [s].

    checkpoint_gb [GB]; bandwidth_gbps: the slower of the two sites' WAN links [Gbit/s].
    """
    if state == "checkpointing":
        return float(checkpoint_write_s(checkpoint_gb, timeouts.checkpoint_write_gb_per_s))
    if state == "transferring":
        return float(transfer_s(checkpoint_gb, bandwidth_gbps, timeouts.efficiency))
    if state == "restoring":
        return float(restore_s(checkpoint_gb, timeouts.restore_gb_per_s))
    return 0.0


def step_limit_s(
    state: TimedState, checkpoint_gb: float, bandwidth_gbps: float, timeouts: StepTimeouts
) -> float:
    """The longest the step may take [s]: margin times its expected time, plus the floor."""
    expected_s = expected_step_s(state, checkpoint_gb, bandwidth_gbps, timeouts)
    return timeouts.margin * expected_s + timeouts.floor_s


@dataclass(frozen=True)
class Overrun:
    """A step past its limit: elapsed_s and limit_s [s]."""

    state: TimedState
    elapsed_s: float
    limit_s: float

    def __str__(self) -> str:
        return (
            f"{self.state} overran its limit: {self.elapsed_s:.1f} s > {self.limit_s:.1f} s "
            "(expected time times the margin, plus the floor)"
        )


def overrun(
    state: TimedState,
    entered_at: datetime,
    now: datetime,
    checkpoint_gb: float,
    bandwidth_gbps: float,
    timeouts: StepTimeouts,
) -> Overrun | None:
    """The overrun of a step committed at ``entered_at``, or None while it is within limits."""
    elapsed_s = (now - entered_at).total_seconds()
    limit_s = step_limit_s(state, checkpoint_gb, bandwidth_gbps, timeouts)
    return Overrun(state, elapsed_s, limit_s) if elapsed_s > limit_s else None


def timed_state(state: str) -> TimedState | None:
    """``state`` as a step with a limit, or None for planned and the final states."""
    return next((timed for timed in TIMED_STATES if timed == state), None)

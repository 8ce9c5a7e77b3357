"""What to do with a migration found unfinished after a restart (``docs/architecture.md``,
'Migration states').

The gateway commits each state before the call that it announces, so after a crash the
stored state is at most one call behind the sites: the call may or may not have arrived.
Both sites are asked what they know (the job in their status, the migration's operations,
the target's reservation) and :func:`reconcile` turns the answers into the next action:

- ``continue`` from the state the answers imply, never earlier than the stored one (the
  dispatcher's step then repeats the announced call, a no-op where it already happened, and
  goes on: a restore in progress or done at the target is followed, not started again);
- ``abort``: the migration cannot finish (an operation failed, the reservation is gone, the
  job was resumed or finished at the source); the usual clean-up follows;
- ``hold``: the answers contradict each other (the job live at both sites, or at neither):
  nothing is done automatically, the dispatcher logs it for an operator and asks again.

Rules are rows of one table, tried in order; the first that matches decides. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.migration.deadlines import TIMED_STATES, TimedState
from gateway.sites.records import JobState, OperationState, ReservationState

Action = Literal["continue", "abort", "hold"]

_RUNNING: tuple[JobState, ...] = ("running", "paused")
"""Running, or paused where it runs (a lever): either way the job is alive at that site."""
_LIVE_AT_SOURCE: tuple[JobState, ...] = (*_RUNNING, "checkpointing")
_LIVE_AT_TARGET: tuple[JobState, ...] = (*_RUNNING, "restoring")


@dataclass(frozen=True)
class SourceAnswers:
    """What the source says: its job's state (None when it does not list the job) and the
    migration's checkpoint and transfer operations (None when it never started them)."""

    job: JobState | None
    checkpoint: OperationState | None
    transfer: OperationState | None


@dataclass(frozen=True)
class TargetAnswers:
    """What the target says: the job's state there (None when not listed), the migration's
    reservation (None when none is held and none can be made) and its restore operation."""

    job: JobState | None
    reservation: ReservationState | None
    restore: OperationState | None


@dataclass(frozen=True)
class Reconciliation:
    """The next action; ``state`` is where to continue from (the stored state otherwise)."""

    action: Action
    state: TimedState
    reason: str


_Test = Callable[[TimedState, SourceAnswers, TargetAnswers], bool]


@dataclass(frozen=True)
class _Rule:
    test: _Test
    action: Action
    implies: TimedState | None
    """The state the answers imply (``continue`` only); None keeps the stored one."""
    reason: str


RULES: tuple[_Rule, ...] = (
    _Rule(
        lambda _, s, t: s.job in _LIVE_AT_SOURCE and t.job in _LIVE_AT_TARGET,
        "hold",
        None,
        "the job is live at both sites",
    ),
    _Rule(
        lambda _, s, t: t.restore in ("in_progress", "done"),
        "continue",
        "restoring",
        "the target has restored or is restoring the job",
    ),
    _Rule(
        lambda _, s, t: t.job in _LIVE_AT_TARGET,
        "hold",
        None,
        "the target has the job live, but not through this migration's restore",
    ),
    _Rule(
        lambda _, s, t: t.restore == "failed",
        "abort",
        None,
        "the restore failed at the target",
    ),
    _Rule(
        lambda _, s, t: t.reservation not in ("reserved", "consumed"),
        "abort",
        None,
        "the target holds no reservation for the job",
    ),
    _Rule(
        lambda _, s, t: s.transfer in ("in_progress", "done"),
        "continue",
        "transferring",
        "the source has sent or is sending the checkpoint",
    ),
    _Rule(
        lambda _, s, t: s.transfer == "failed",
        "abort",
        None,
        "the transfer failed",
    ),
    _Rule(
        lambda _, s, t: s.checkpoint == "done" and s.job == "checkpointed",
        "continue",
        "checkpointing",
        "the source holds the job's checkpoint",
    ),
    _Rule(
        lambda _, s, t: s.checkpoint == "done" and s.job in _RUNNING,
        "abort",
        None,
        "the job was resumed at the source after its checkpoint",
    ),
    _Rule(
        lambda _, s, t: s.checkpoint == "done",
        "hold",
        None,
        "the source wrote the checkpoint but no longer holds the job",
    ),
    _Rule(
        lambda _, s, t: s.checkpoint == "in_progress",
        "continue",
        "checkpointing",
        "the source is writing the checkpoint",
    ),
    _Rule(
        lambda _, s, t: s.checkpoint == "failed",
        "abort",
        None,
        "the checkpoint failed",
    ),
    _Rule(
        lambda stored, s, t: s.job in _RUNNING and stored in ("target_reserved", "checkpointing"),
        "continue",
        "target_reserved",
        "the job runs at the source, its checkpoint not yet started",
    ),
    _Rule(
        lambda _, s, t: s.job in _RUNNING,
        "abort",
        None,
        "the job runs at the source, which never wrote its checkpoint",
    ),
    _Rule(
        lambda _, s, t: s.job == "finished",
        "abort",
        None,
        "the job finished at the source before its checkpoint",
    ),
)


def reconcile(stored: TimedState, source: SourceAnswers, target: TargetAnswers) -> Reconciliation:
    """The next action for a migration stored in ``stored``, given what both sites say."""
    for rule in RULES:
        if rule.test(stored, source, target):
            state = stored
            if rule.action == "continue" and rule.implies is not None:
                state = max(stored, rule.implies, key=TIMED_STATES.index)
            return Reconciliation(rule.action, state, rule.reason)
    return Reconciliation("hold", stored, "neither site has the job live nor a checkpoint of it")

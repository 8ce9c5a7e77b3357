"""Reconciliation after a restart (``gateway/migration/reconcile.py``): table-driven, then
exhaustive safety checks over every combination of answers."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from gateway.migration.deadlines import TIMED_STATES, TimedState
from gateway.migration.reconcile import Action, SourceAnswers, TargetAnswers, reconcile
from gateway.sites.records import JOB_STATES, OPERATION_STATES, RESERVATION_STATES

S = SourceAnswers
T = TargetAnswers

# (label, stored state, source answers, target answers, action, state to continue from)
CASES: list[tuple[str, TimedState, SourceAnswers, TargetAnswers, Action, TimedState]] = [
    (
        "restore done: release at the source and complete",
        "restoring",
        S("checkpointed", "done", "done"),
        T("running", "consumed", "done"),
        "continue",
        "restoring",
    ),
    (
        "restore call arrived before restoring was recorded: follow it, do not restart",
        "transferring",
        S("checkpointed", "done", "done"),
        T("restoring", "consumed", "in_progress"),
        "continue",
        "restoring",
    ),
    (
        "restore arrived though even transferring was not recorded",
        "checkpointing",
        S("checkpointed", "done", "done"),
        T("running", "consumed", "done"),
        "continue",
        "restoring",
    ),
    (
        "target runs the job, but not through this migration's restore",
        "transferring",
        S("checkpointed", "done", "done"),
        T("running", "reserved", None),
        "hold",
        "transferring",
    ),
    (
        "restore failed at the target",
        "restoring",
        S("checkpointed", "done", "done"),
        T(None, "consumed", "failed"),
        "abort",
        "restoring",
    ),
    (
        "job live at both sites: an operator decides",
        "restoring",
        S("running", "done", "done"),
        T("running", "consumed", "done"),
        "hold",
        "restoring",
    ),
    (
        "reservation released behind our back",
        "checkpointing",
        S("checkpointed", "done", None),
        T(None, "released", None),
        "abort",
        "checkpointing",
    ),
    (
        "reservation cannot be made any more",
        "target_reserved",
        S("running", None, None),
        T(None, None, None),
        "abort",
        "target_reserved",
    ),
    (
        "transfer done, restore never called",
        "transferring",
        S("checkpointed", "done", "done"),
        T(None, "reserved", None),
        "continue",
        "transferring",
    ),
    (
        "restoring recorded, restore call lost: never step back",
        "restoring",
        S("checkpointed", "done", "done"),
        T(None, "reserved", None),
        "continue",
        "restoring",
    ),
    (
        "transfer in progress",
        "transferring",
        S("checkpointed", "done", "in_progress"),
        T(None, "reserved", None),
        "continue",
        "transferring",
    ),
    (
        "transfer failed",
        "transferring",
        S("checkpointed", "done", "failed"),
        T(None, "reserved", None),
        "abort",
        "transferring",
    ),
    (
        "checkpoint done but never recorded: continue with the transfer",
        "target_reserved",
        S("checkpointed", "done", None),
        T(None, "reserved", None),
        "continue",
        "checkpointing",
    ),
    (
        "checkpoint done, then the job was resumed at the source",
        "checkpointing",
        S("running", "done", None),
        T(None, "reserved", None),
        "abort",
        "checkpointing",
    ),
    (
        "checkpoint done but the source lost the job",
        "checkpointing",
        S(None, "done", None),
        T(None, "reserved", None),
        "hold",
        "checkpointing",
    ),
    (
        "checkpoint in progress",
        "checkpointing",
        S("checkpointing", "in_progress", None),
        T(None, "reserved", None),
        "continue",
        "checkpointing",
    ),
    (
        "checkpoint failed",
        "checkpointing",
        S("checkpointing", "failed", None),
        T(None, "reserved", None),
        "abort",
        "checkpointing",
    ),
    (
        "checkpoint call never arrived: repeat it",
        "checkpointing",
        S("running", None, None),
        T(None, "reserved", None),
        "continue",
        "checkpointing",
    ),
    (
        "reserve arrived, nothing else yet",
        "target_reserved",
        S("running", None, None),
        T(None, "reserved", None),
        "continue",
        "target_reserved",
    ),
    (
        "transferring recorded but the source never checkpointed",
        "transferring",
        S("running", None, None),
        T(None, "reserved", None),
        "abort",
        "transferring",
    ),
    (
        "job finished at the source before its checkpoint",
        "checkpointing",
        S("finished", None, None),
        T(None, "reserved", None),
        "abort",
        "checkpointing",
    ),
    (
        "neither site has the job",
        "target_reserved",
        S(None, None, None),
        T(None, "reserved", None),
        "hold",
        "target_reserved",
    ),
]


@pytest.mark.parametrize(
    ("label", "stored", "source", "target", "action", "state"), CASES, ids=[c[0] for c in CASES]
)
def test_reconcile_table(
    label: str,
    stored: TimedState,
    source: SourceAnswers,
    target: TargetAnswers,
    action: Action,
    state: TimedState,
) -> None:
    decision = reconcile(stored, source, target)
    assert (decision.action, decision.state) == (action, state), decision.reason
    assert decision.reason


def _every_answer() -> itertools.product[tuple[object, ...]]:
    jobs = (None, *JOB_STATES)
    ops = (None, *OPERATION_STATES)
    return itertools.product(TIMED_STATES, jobs, ops, ops, jobs, (None, *RESERVATION_STATES), ops)


def test_rule_reconciliation_never_steps_back_nor_aborts_a_restore_under_way() -> None:
    """Over every combination of answers: a migration never continues from an earlier state
    than the stored one, and never aborts (resuming the job at the source) while the target
    is restoring or has restored it, which could run the job at two sites."""
    checked = 0
    for stored, s_job, ckpt, xfer, t_job, reservation, restore in _every_answer():
        decision = reconcile(
            stored,  # type: ignore[arg-type]
            SourceAnswers(s_job, ckpt, xfer),  # type: ignore[arg-type]
            TargetAnswers(t_job, reservation, restore),  # type: ignore[arg-type]
        )
        assert decision.action in get_args(Action)
        assert TIMED_STATES.index(decision.state) >= TIMED_STATES.index(stored)
        if restore in ("in_progress", "done") or t_job in ("running", "paused", "restoring"):
            assert decision.action != "abort", (stored, s_job, ckpt, xfer, t_job, restore)
        if decision.action == "continue" and decision.state != "restoring":
            assert t_job not in ("running", "paused", "restoring"), "the job would start twice"
        checked += 1
    jobs = len(JOB_STATES) + 1  # not listed, or in one of the states
    assert checked == 4 * jobs * 4 * 4 * jobs * 4 * 4

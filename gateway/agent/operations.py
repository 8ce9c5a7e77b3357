"""The agent's operations, keyed by (migration id, kind), with the arguments that started them.

A call that repeats a migration id answers the operation it started; the same migration id with
other arguments is a conflict (:mod:`gateway.sites.idempotency`, as in the simulator). Arguments
are kept in their JSON form so that they survive the state file.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from gateway.agent.jobs import CheckpointFile
from gateway.agent.state import AgentState, OperationKey
from gateway.clock import Clock
from gateway.sites.idempotency import repeated_operation
from gateway.sites.records import Checkpoint, Operation

log = logging.getLogger(__name__)


def wire_checkpoint(checkpoint: CheckpointFile) -> Checkpoint:
    """A checkpoint file as operations report it: size [GB] and sha256."""
    return Checkpoint(size_gb=checkpoint.size_gb, sha256=checkpoint.sha256)


class OperationBook:
    """The operations of one agent's state; ``site_id`` names the site in log lines."""

    def __init__(self, state: AgentState, clock: Clock, site_id: str) -> None:
        self._state = state
        self._clock = clock
        self._site_id = site_id

    def get(self, key: OperationKey) -> Operation | None:
        return self._state.operations.get(key)

    def args(self, key: OperationKey) -> Any:
        """The JSON form of the arguments that started the operation."""
        return self._state.operation_args[key]

    def previous(self, key: OperationKey, args: Any) -> Operation | None:
        """The operation a repeated call answers, or None for a new one; a conflict when the
        migration id started it with other arguments."""
        return repeated_operation(self._state.operations, self._state.operation_args, key, args)

    def in_progress(self) -> list[OperationKey]:
        return [key for key, op in self._state.operations.items() if op.state == "in_progress"]

    def in_progress_of(self, job_id: str) -> list[OperationKey]:
        return [key for key in self.in_progress() if self._state.operations[key].job_id == job_id]

    def begin(
        self,
        key: OperationKey,
        args: Any,
        job_id: str,
        expected_s: float,
        checkpoint: CheckpointFile | None,
    ) -> Operation:
        """Record a new operation in progress, expected to take ``expected_s`` [s]."""
        wire = None if checkpoint is None else wire_checkpoint(checkpoint)
        op = Operation.started(key, job_id, self._clock.now(), expected_s, wire)
        self._state.operations[key] = op
        self._state.operation_args[key] = args
        log.info(
            "site %s: %s of job %s started (migration %s, %.3f s expected)",
            self._site_id,
            key[1],
            job_id,
            key[0],
            expected_s,
        )
        return op

    def finish(
        self,
        key: OperationKey,
        *,
        checkpoint: CheckpointFile | None = None,
        error: str | None = None,
    ) -> None:
        """End an operation in progress now: ``failed`` with ``error``, else ``done``; a no-op
        for an operation that already ended (or never began)."""
        op = self._state.operations.get(key)
        if op is None or op.state != "in_progress":
            return
        ended = replace(
            op,
            state="done" if error is None else "failed",
            done_at=self._clock.now(),
            checkpoint=wire_checkpoint(checkpoint) if checkpoint is not None else op.checkpoint,
            error=error,
        )
        self._state.operations[key] = ended
        log.info(
            "site %s: %s of job %s %s (migration %s)%s",
            self._site_id,
            key[1],
            op.job_id,
            ended.state,
            key[0],
            f": {error}" if error else "",
        )

"""What ``squeue --json`` and ``sinfo --json`` say, as typed records (Slurm 22.05, data parser
v0.0.38; newer parsers' field shapes are read too where they differ).

Pure: JSON text in, records out. :class:`SlurmView` is one reading of the cluster: every job
``squeue --states=all`` lists (finished ones stay listed for ``MinJobAge``) and every node.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)
"""Job states after which the job holds nothing and runs no more."""
HOLDING_STATES = frozenset({"RUNNING", "SUSPENDED", "COMPLETING", "CONFIGURING", "STOPPED"})
"""Job states in which the job holds its allocation (GPUs)."""
_DOWN_NODE_STATES = frozenset({"down", "drained", "draining", "fail", "failing", "unknown"})
_DOWN_NODE_FLAGS = frozenset({"DRAIN", "DRAINING", "DRAINED", "FAIL", "NOT_RESPONDING", "DOWN"})
_GRES_COUNT = re.compile(r"^(?P<name>[^:(]+)(?::[^:(]+)*?:(?P<count>\d+)(?:\(.*\))?$")


class SlurmOutputError(ValueError):
    """A Slurm command's JSON is not what the agent can read; the message names the field."""


@dataclass(frozen=True)
class SlurmJob:
    """One job of ``squeue``: its id, name, state (``RUNNING``, ``COMPLETED``, ...), exit code
    (negative: killed by that signal; None while it runs), GPUs (of ``gres``), node and why
    it waits (``reason``: ``Resources``, ``Priority``, ``None``, ...)."""

    job_id: int
    name: str
    state: str
    exit_code: int | None
    gpus: int
    node: str | None
    reason: str = "None"

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def holds_gpus(self) -> bool:
        return self.state in HOLDING_STATES


@dataclass(frozen=True)
class SlurmNode:
    """One node of ``sinfo``: GPUs configured and in use, and whether it takes jobs."""

    name: str
    state: str
    gpus_total: int
    gpus_used: int
    up: bool


@dataclass(frozen=True)
class SlurmView:
    """One reading of the cluster: jobs by id, and nodes."""

    jobs: dict[int, SlurmJob]
    nodes: tuple[SlurmNode, ...]

    @property
    def gpus_up(self) -> int:
        """GPUs of the nodes that take jobs (not down, drained or failing)."""
        return sum(node.gpus_total for node in self.nodes if node.up)

    def _on_nodes_that_take_jobs(self, job: SlurmJob) -> bool:
        """Whether ``job`` runs on a node that takes jobs (a node ``sinfo`` does not list,
        or a multi-node list, counts as one that does)."""
        return job.node not in {node.name for node in self.nodes if not node.up}

    def gpus_held_by_others(self, ours: set[int]) -> int:
        """GPUs that jobs other than ``ours`` (Slurm job ids) hold now on the nodes that take
        jobs (those of the other nodes are not in :attr:`gpus_up` to begin with)."""
        return sum(
            job.gpus
            for job in self.jobs.values()
            if job.holds_gpus and job.job_id not in ours and self._on_nodes_that_take_jobs(job)
        )

    def gpus_usable(self, ours: set[int]) -> int:
        """GPUs that ``ours`` (the agent's Slurm jobs) may hold: those of the nodes that take
        jobs, less what other jobs hold there, plus what ``ours`` still hold on nodes that no
        longer take jobs (a draining node runs its jobs to their end)."""
        ours_elsewhere = sum(
            job.gpus
            for job in self.jobs.values()
            if job.holds_gpus and job.job_id in ours and not self._on_nodes_that_take_jobs(job)
        )
        return max(0, self.gpus_up + ours_elsewhere - self.gpus_held_by_others(ours))


def gres_count(text: str | None, gres: str) -> int:
    """How many of ``gres`` a GRES string names: ``gpu:2``, ``gpu:a100:2(S:0)``,
    ``gpu:1(IDX:0),shard:4``, ``gres:gpu:1`` (a TRES-per-node string); 0 for none."""
    if not text or text in ("N/A", "(null)"):
        return 0
    total = 0
    for item in _split_gres(text):
        item = item.removeprefix("gres:").removeprefix("gres/")
        match = _GRES_COUNT.match(item)
        if match is not None and match["name"] == gres:
            total += int(match["count"])
    return total


def _split_gres(text: str) -> list[str]:
    """Split at the commas outside parentheses (``gpu:2(IDX:0,1)`` is one item)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def exit_code_of(status: int) -> int:
    """A wait status as Slurm 22.05 reports ``exit_code`` (``3 << 8`` for exit 3, the signal
    number in the low bits) as the agent's exit code: the code, or minus the signal."""
    if status & 0x7F:
        return -(status & 0x7F)
    return (status >> 8) & 0xFF


def _status_exit_code(raw: Any) -> int | None:
    if isinstance(raw, bool):
        raise SlurmOutputError("exit_code: expected a number")
    if isinstance(raw, int):
        return exit_code_of(raw)
    if isinstance(raw, dict):  # data parser v0.0.39 and newer
        signal_id = raw.get("signal", {}).get("id") if isinstance(raw.get("signal"), dict) else None
        if isinstance(signal_id, int) and signal_id > 0:
            return -signal_id
        code = raw.get("return_code")
        code = code.get("number") if isinstance(code, dict) else code
        return code if isinstance(code, int) else None
    return None


def _job_state(raw: Any) -> str:
    """``job_state``: a string (22.05) or a list of flags (newer), the base state first."""
    if isinstance(raw, str) and raw:
        return raw.upper()
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        return raw[0].upper()
    raise SlurmOutputError("job_state: expected a state name")


def _job(raw: Any, gres: str) -> SlurmJob:
    if not isinstance(raw, dict):
        raise SlurmOutputError("jobs[]: expected an object")
    job_id = raw.get("job_id")
    if not isinstance(job_id, int) or isinstance(job_id, bool):
        raise SlurmOutputError("jobs[].job_id: expected an integer")
    state = _job_state(raw.get("job_state"))
    detail = raw.get("gres_detail")
    if isinstance(detail, list) and detail:
        gpus = sum(gres_count(str(item), gres) for item in detail)
    else:
        gpus = gres_count(str(raw.get("tres_per_node") or ""), gres)
    node = raw.get("nodes") or raw.get("batch_host")
    return SlurmJob(
        job_id=job_id,
        name=str(raw.get("name") or ""),
        state=state,
        exit_code=_status_exit_code(raw.get("exit_code")) if state in TERMINAL_STATES else None,
        gpus=gpus,
        node=str(node) if node else None,
        reason=str(raw.get("state_reason") or "None"),
    )


def _node(raw: Any, gres: str) -> SlurmNode:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise SlurmOutputError("nodes[].name: expected a string")
    state_raw = raw.get("state")
    state = (state_raw[0] if isinstance(state_raw, list) and state_raw else state_raw) or ""
    flags = {str(flag).upper() for flag in raw.get("state_flags") or ()}
    if isinstance(state_raw, list):
        flags |= {str(flag).upper() for flag in state_raw[1:]}
    state = str(state).lower()
    return SlurmNode(
        name=raw["name"],
        state=state,
        gpus_total=gres_count(str(raw.get("gres") or ""), gres),
        gpus_used=gres_count(str(raw.get("gres_used") or ""), gres),
        up=state not in _DOWN_NODE_STATES and not flags & _DOWN_NODE_FLAGS,
    )


def _document(text: str, command: str, key: str) -> list[Any]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SlurmOutputError(f"{command} --json: not JSON ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise SlurmOutputError(f"{command} --json: no list {key!r}")
    errors = document.get("errors") or []
    if errors:
        raise SlurmOutputError(f"{command} --json reports errors: {errors!r}"[:500])
    return list(document[key])


def parse_squeue(text: str, gres: str = "gpu") -> dict[int, SlurmJob]:
    """The jobs of ``squeue --json`` by job id; SlurmOutputError naming what is wrong."""
    jobs = [_job(raw, gres) for raw in _document(text, "squeue", "jobs")]
    return {job.job_id: job for job in jobs}


def parse_sinfo(
    text: str, gres: str = "gpu", partition: str | None = None
) -> tuple[SlurmNode, ...]:
    """The nodes of ``sinfo --json`` (of ``partition`` only, when given), each once."""
    nodes: dict[str, SlurmNode] = {}
    for raw in _document(text, "sinfo", "nodes"):
        node = _node(raw, gres)
        partitions = raw.get("partitions") if isinstance(raw, dict) else None
        if partition is not None and isinstance(partitions, list) and partition not in partitions:
            continue
        nodes[node.name] = node
    return tuple(nodes.values())

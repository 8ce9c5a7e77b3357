"""Reading ``squeue --json`` and ``sinfo --json`` (``gateway.agent.slurm.view``), on outputs
shaped as Slurm 22.05 prints them (data parser v0.0.38) and as newer parsers do."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.agent.slurm.view import (
    SlurmOutputError,
    SlurmView,
    exit_code_of,
    gres_count,
    parse_sinfo,
    parse_squeue,
)


def squeue(*jobs: dict[str, Any]) -> str:
    return json.dumps({"meta": {}, "errors": [], "jobs": list(jobs)})


def job(job_id: int, state: str, **fields: Any) -> dict[str, Any]:
    """A job as 22.05's ``squeue --json`` lists it (the fields the agent reads)."""
    return {
        "job_id": job_id,
        "name": f"dr-job-{job_id}",
        "job_state": state,
        "exit_code": 0,
        "gres_detail": ["gpu:1(IDX:0)"] if state == "RUNNING" else [],
        "tres_per_node": "gres:gpu:1",
        "nodes": "east-node",
    } | fields


def sinfo(*nodes: dict[str, Any]) -> str:
    return json.dumps({"meta": {}, "errors": [], "nodes": list(nodes)})


def node(name: str, state: str = "idle", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "state": state,
        "state_flags": [],
        "gres": "gpu:2",
        "gres_used": "gpu:0",
        "partitions": ["main"],
    } | fields


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("gpu:2", 2),
        ("gpu:a100:4(S:0-1)", 4),
        ("gpu:1(IDX:0),shard:4", 1),
        ("gpu:2(IDX:0-1),gpu:a100:1(IDX:2)", 3),
        ("gres:gpu:3", 3),
        ("gres/gpu:2", 2),
        ("shard:4", 0),
        ("gpu:0", 0),
        ("N/A", 0),
        ("(null)", 0),
        ("", 0),
        (None, 0),
    ],
)
def test_gres_strings_count_the_gpus(text: str | None, count: int) -> None:
    assert gres_count(text, "gpu") == count


@pytest.mark.parametrize(
    ("status", "code"), [(0, 0), (3 << 8, 3), (15, -15), (9, -9), (255 << 8, 255)]
)
def test_wait_status_becomes_an_exit_code_or_minus_the_signal(status: int, code: int) -> None:
    assert exit_code_of(status) == code


def test_squeue_gives_state_gpus_node_and_the_exit_code_of_ended_jobs() -> None:
    jobs = parse_squeue(
        squeue(
            job(1, "RUNNING", exit_code=0),
            job(2, "FAILED", exit_code=3 << 8),
            job(3, "PENDING", nodes="", gres_detail=[], tres_per_node="gres:gpu:2"),
            job(4, "CANCELLED", exit_code=15),
        )
    )
    assert jobs[1].state == "RUNNING" and jobs[1].exit_code is None
    assert jobs[1].gpus == 1 and jobs[1].node == "east-node" and jobs[1].holds_gpus
    assert jobs[2].ended and jobs[2].exit_code == 3 and not jobs[2].holds_gpus
    assert jobs[3].gpus == 2 and jobs[3].node is None and not jobs[3].holds_gpus
    assert jobs[4].exit_code == -15


def test_newer_parsers_state_lists_and_exit_code_objects_are_read() -> None:
    newer = job(
        7,
        ["COMPLETED"],
        exit_code={"status": ["EXITED"], "return_code": {"number": 0}, "signal": {"id": {}}},
    )
    newer_signalled = job(8, ["CANCELLED"], exit_code={"return_code": 0, "signal": {"id": 9}})
    jobs = parse_squeue(squeue(newer, newer_signalled))
    assert (jobs[7].state, jobs[7].exit_code) == ("COMPLETED", 0)
    assert (jobs[8].state, jobs[8].exit_code) == ("CANCELLED", -9)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        (json.dumps({"jobs": {}}), "no list 'jobs'"),
        (json.dumps({"jobs": [], "errors": [{"error": "boom"}]}), "reports errors"),
        (squeue({"name": "x", "job_state": "RUNNING"}), "job_id"),
        (squeue({"job_id": 1, "job_state": ""}), "job_state"),
    ],
)
def test_unreadable_squeue_output_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SlurmOutputError, match=message):
        parse_squeue(text)


def test_sinfo_counts_gpus_of_nodes_that_take_jobs_only() -> None:
    nodes = parse_sinfo(
        sinfo(
            node("a", "mixed", gres_used="gpu:1(IDX:0)"),
            node("b", "idle", state_flags=["DRAIN"]),
            node("c", "down"),
            node("d", "allocated", gres="gpu:4", gres_used="gpu:4(IDX:0-3)"),
        )
    )
    by_name = {n.name: n for n in nodes}
    assert by_name["a"].up and by_name["a"].gpus_used == 1
    assert not by_name["b"].up and not by_name["c"].up
    view = SlurmView(jobs={}, nodes=nodes)
    assert view.gpus_up == 2 + 4


def test_sinfo_of_one_partition_lists_each_node_once() -> None:
    text = sinfo(node("a"), node("a"), node("b", partitions=["other"]))
    assert [n.name for n in parse_sinfo(text, partition="main")] == ["a"]
    assert [n.name for n in parse_sinfo(text)] == ["a", "b"]


def test_gpus_held_by_jobs_the_agent_did_not_start_are_not_usable() -> None:
    jobs = parse_squeue(
        squeue(
            job(1, "RUNNING"),
            job(2, "SUSPENDED", gres_detail=["gpu:1(IDX:1)"]),
            job(3, "COMPLETED", gres_detail=["gpu:1(IDX:0)"]),
        )
    )
    view = SlurmView(jobs=jobs, nodes=parse_sinfo(sinfo(node("a"))))
    assert view.gpus_held_by_others({1}) == 1, "the suspended job keeps its GPU"
    assert view.gpus_held_by_others({1, 2}) == 0


def test_a_draining_node_keeps_the_gpus_the_agents_jobs_hold_there() -> None:
    """A node with DRAIN takes no new job but runs its jobs on: the GPUs the agent's job holds
    there stay usable by it (else its site would look over its GPUs), and other jobs' GPUs
    there are not taken from the nodes that take jobs."""
    jobs = parse_squeue(
        squeue(
            job(1, "RUNNING", nodes="b"),
            job(2, "RUNNING", nodes="b"),
            job(3, "RUNNING", nodes="a"),
        )
    )
    nodes = parse_sinfo(sinfo(node("a", "mixed"), node("b", "mixed", state_flags=["DRAIN"])))
    view = SlurmView(jobs=jobs, nodes=nodes)
    assert view.gpus_up == 2
    assert view.gpus_held_by_others({1}) == 1, "job 3 on a; job 2 on the draining b is not on a"
    assert view.gpus_usable({1}) == 2 + 1 - 1
    assert view.gpus_usable({1, 3}) == 2 + 1
    assert view.gpus_usable(set()) == 2 - 1

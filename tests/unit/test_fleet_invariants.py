"""The four fleet invariants of ``gateway/migration/invariants.py``, each in a case that holds
and one that breaks: pure checks over site views and migration rows, no server, no database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest

from gateway.migration.invariants import (
    InvariantReport,
    MigrationRow,
    SiteView,
    Violation,
    check,
    checkpoints_to_verify,
    nothing_lost,
    one_site_at_most,
    reservations_balance,
    within_capacity,
)
from gateway.sites.records import Checkpoint, JobState

SHA = "ab" * 32
OTHER_SHA = "cd" * 32


def site(
    jobs: Mapping[str, tuple[JobState, int]] | None = None,
    *,
    gpus_reserved: int = 0,
    gpus_total: int = 8,
) -> SiteView:
    """A site listing ``jobs`` (id -> (state, GPUs))."""
    listed = jobs or {}
    return SiteView(
        jobs={job_id: state for job_id, (state, _) in listed.items()},
        gpus_reserved=gpus_reserved,
        gpus_total=gpus_total,
        job_gpus={job_id: gpus for job_id, (_, gpus) in listed.items()},
    )


def migration(
    migration_id: str = "m1",
    *,
    job_id: str = "j1",
    source: str = "a",
    target: str = "b",
    ended: bool = False,
    checkpoint_gb: float = 3.0,
    checkpoint_sha256: str | None = None,
    gpus: int = 2,
) -> MigrationRow:
    return MigrationRow(
        id=migration_id,
        job_id=job_id,
        source_site_id=source,
        target_site_id=target,
        state="completed" if ended else "checkpointing",
        ended=ended,
        checkpoint_gb=checkpoint_gb,
        checkpoint_sha256=checkpoint_sha256,
        gpus=gpus,
    )


def numbers(violations: list[Violation]) -> list[int]:
    return [v.invariant for v in violations]


# ---- invariant 1: one site at most -------------------------------------------------------------

ONE_SITE_CASES: list[tuple[str, dict[str, SiteView], list[int]]] = [
    (
        "running at the source, checkpointed at the target: holds",
        {"a": site({"j1": ("running", 2)}), "b": site({"j1": ("checkpointed", 2)})},
        [],
    ),
    (
        "checkpointed at the source, restoring at the target: holds",
        {"a": site({"j1": ("checkpointed", 2)}), "b": site({"j1": ("restoring", 2)})},
        [],
    ),
    (
        "checkpointing at the source, restoring at the target: breaks",
        {"a": site({"j1": ("checkpointing", 2)}), "b": site({"j1": ("restoring", 2)})},
        [1],
    ),
    (
        "running at both: breaks",
        {"a": site({"j1": ("running", 2)}), "b": site({"j1": ("running", 2)})},
        [1],
    ),
]


@pytest.mark.parametrize(
    ("label", "views", "expected"), ONE_SITE_CASES, ids=[c[0] for c in ONE_SITE_CASES]
)
def test_invariant_1_one_site_at_most(
    label: str, views: dict[str, SiteView], expected: list[int]
) -> None:
    assert numbers(one_site_at_most(views)) == expected, label


def test_invariant_1_message_names_the_job_and_both_sites() -> None:
    views = {"a": site({"j1": ("running", 2)}), "b": site({"j1": ("restoring", 2)})}
    [violation] = one_site_at_most(views)
    assert violation.message == (
        "invariant 1: job j1 is live at 2 sites: a (running), b (restoring) (one site at most)"
    )
    assert (violation.job_id, violation.site_ids) == ("j1", ("a", "b"))


# ---- invariant 2: no job lost ------------------------------------------------------------------

CHECKPOINTED_AT_A = {"a": site({"j1": ("checkpointed", 2)}), "b": site()}
WRITTEN = Checkpoint(size_gb=3.0, sha256=SHA)

LOST_CASES: list[
    tuple[str, dict[str, SiteView], MigrationRow, Checkpoint | None, bool, list[int]]
] = [
    ("running", {"a": site({"j1": ("running", 2)}), "b": site()}, migration(), None, True, []),
    ("finished", {"a": site({"j1": ("finished", 2)}), "b": site()}, migration(), None, True, []),
    ("checkpointed, verified", CHECKPOINTED_AT_A, migration(), WRITTEN, True, []),
    (
        "checkpointed, sha256 recorded and equal",
        CHECKPOINTED_AT_A,
        migration(checkpoint_sha256=SHA),
        WRITTEN,
        True,
        [],
    ),
    (
        "real agent: another size than declared, sha256 not yet recorded",
        CHECKPOINTED_AT_A,
        migration(checkpoint_gb=1.0),
        WRITTEN,
        False,
        [],
    ),
    ("listed nowhere", {"a": site(), "b": site()}, migration(), WRITTEN, True, [2]),
    ("checkpointed without a checkpoint", CHECKPOINTED_AT_A, migration(), None, True, [2]),
    (
        "checkpoint of another size than recorded",
        CHECKPOINTED_AT_A,
        migration(checkpoint_gb=2.0),
        WRITTEN,
        True,
        [2],
    ),
    (
        "checkpoint of another sha256 than recorded",
        CHECKPOINTED_AT_A,
        migration(checkpoint_sha256=OTHER_SHA),
        WRITTEN,
        False,
        [2],
    ),
    (
        "checkpointed at a site no migration comes from",
        {"a": site(), "b": site({"j1": ("checkpointed", 2)})},
        migration(),
        WRITTEN,
        True,
        [2],
    ),
]


@pytest.mark.parametrize(
    ("label", "views", "m", "written", "exact_sizes", "expected"),
    LOST_CASES,
    ids=[c[0] for c in LOST_CASES],
)
def test_invariant_2_no_job_lost(
    label: str,
    views: dict[str, SiteView],
    m: MigrationRow,
    written: Checkpoint | None,
    exact_sizes: bool,
    expected: list[int],
) -> None:
    migrations = {m.id: m}
    checkpoints = {row.id: written for row in checkpoints_to_verify(views, migrations, ["j1"])}
    found = nothing_lost(views, migrations, checkpoints, ["j1"], exact_sizes=exact_sizes)
    assert numbers(found) == expected, label


def test_invariant_2_message_says_where_the_job_was_seen() -> None:
    [violation] = nothing_lost(CHECKPOINTED_AT_A, {"m1": migration()}, {"m1": None}, ["j1"])
    assert violation.message == (
        "invariant 2: job j1 is lost: neither live nor finished anywhere, and no verified "
        "checkpoint at a known site (a checkpointed, b not listed) (no job lost)"
    )


def test_invariant_2_asks_only_for_the_checkpoints_it_needs() -> None:
    views = {"a": site({"j1": ("checkpointed", 2), "j2": ("running", 1)}), "b": site()}
    migrations = {
        "m1": migration("m1"),
        "m2": migration("m2", source="b"),
        "m3": migration("m3", job_id="j2"),
    }
    assert [m.id for m in checkpoints_to_verify(views, migrations, ["j1", "j2"])] == ["m1"]


# ---- invariant 3: reservations balance ---------------------------------------------------------

RESERVATION_CASES: list[tuple[str, int, dict[str, MigrationRow], dict[str, MigrationRow], str]] = [
    ("settled, none reserved", 0, {}, {}, ""),
    ("covered by an unended migration", 2, {"m1": migration()}, {"m1": migration()}, ""),
    (
        "the migration ended while the sites were read",
        2,
        {"m1": migration()},
        {"m1": migration(ended=True)},
        "",
    ),
    ("planned while the sites were read", 2, {}, {"m1": migration()}, ""),
    (
        "kept after its migration ended",
        2,
        {"m1": migration(ended=True)},
        {"m1": migration(ended=True)},
        "with no unended migration to it (settled: none may be reserved; ended there: ['m1'])",
    ),
    (
        "more than the unended migrations cover",
        4,
        {"m1": migration()},
        {"m1": migration()},
        "but its unended migrations ['m1'] cover 2",
    ),
    ("settled yet reserved", 1, {}, {}, "with no unended migration to it"),
]


@pytest.mark.parametrize(
    ("label", "gpus_reserved", "before", "after", "says"),
    RESERVATION_CASES,
    ids=[c[0] for c in RESERVATION_CASES],
)
def test_invariant_3_reservations_balance(
    label: str,
    gpus_reserved: int,
    before: dict[str, MigrationRow],
    after: dict[str, MigrationRow],
    says: str,
) -> None:
    views = {"a": site(), "b": site(gpus_reserved=gpus_reserved)}
    found = reservations_balance(views, before, after)
    if not says:
        assert found == [], label
        return
    [violation] = found
    assert violation.message.startswith(f"invariant 3: site b holds {gpus_reserved} reserved")
    assert says in violation.message, label
    assert violation.site_ids == ("b",)


# ---- invariant 4: no site over its GPUs --------------------------------------------------------

CAPACITY_CASES: list[tuple[str, SiteView, list[int]]] = [
    ("full to the last GPU", site({"j1": ("running", 6)}, gpus_reserved=2), []),
    (
        "a checkpointed job holds no GPU",
        site({"j1": ("checkpointed", 6), "j2": ("running", 4)}, gpus_reserved=4),
        [],
    ),
    (
        "restoring counts",
        site({"j1": ("restoring", 6), "j2": ("running", 4)}),
        [4],
    ),
    ("live jobs plus reservations over", site({"j1": ("running", 6)}, gpus_reserved=4), [4]),
]


@pytest.mark.parametrize(
    ("label", "view", "expected"), CAPACITY_CASES, ids=[c[0] for c in CAPACITY_CASES]
)
def test_invariant_4_no_site_over_its_gpus(label: str, view: SiteView, expected: list[int]) -> None:
    assert numbers(within_capacity({"a": view})) == expected, label


def test_invariant_4_message_adds_up() -> None:
    views = {"a": site({"j1": ("running", 6), "j2": ("checkpointing", 1)}, gpus_reserved=2)}
    [violation] = within_capacity(views)
    assert violation.message == (
        "invariant 4: site a is over its GPUs: 7 held by live jobs (j1 6, j2 1) + 2 reserved "
        "= 9 > gpus_total 8 (no site over its GPUs)"
    )


# ---- the report --------------------------------------------------------------------------------


def test_report_of_a_sound_fleet_holds() -> None:
    views = {"a": site({"j1": ("checkpointed", 2)}), "b": site(gpus_reserved=2)}
    migrations = {"m1": migration()}
    report = check(views, migrations, migrations, {"m1": WRITTEN}, ["j1"])
    assert report == InvariantReport(())
    assert report.held and str(report) == "every invariant held"


def test_report_lists_every_broken_invariant_in_order() -> None:
    views = {
        "a": site({"j1": ("running", 6)}, gpus_reserved=4),
        "b": site({"j1": ("running", 6)}),
    }
    ended = {"m1": replace(migration(target="a"), ended=True)}
    report = check(views, ended, ended, {}, ["j1", "j2"])
    assert [v.invariant for v in report.violations] == [1, 2, 3, 4]
    assert not report.held
    assert report.lines()[1].startswith("invariant 2: job j2 is lost")
    assert str(report).count("\n") == 3

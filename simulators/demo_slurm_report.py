"""What ``dr-gateway demo --slurm`` measured, and its verdict.

:func:`verdict` prints the migrations, Slurm's own record of the job, the final model against
the uninterrupted run and the invariants, then one line: ``demo-slurm: OK: ...`` only when
every promise was measured kept, else ``demo-slurm: FAILED: ...`` naming each broken one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.agent.slurm.view import SlurmJob


@dataclass(frozen=True)
class MigrationLine:
    """One migration as the daemon's database holds it; ``took_s`` from plan to end [s]."""

    planned_at: datetime
    source: str
    target: str
    state: str
    took_s: float
    resumed_at_step: str | None


@dataclass(frozen=True)
class Outcome:
    """Everything the verdict rests on, each measured (none assumed)."""

    job_id: str
    start_site: str
    migrations: list[MigrationLine]
    checks: int
    """Looks at the fleet after each round, over the agents' API."""
    violations: list[str]
    """Broken invariants, one line each."""
    problems: list[str]
    """Anything else that went wrong: a hang, a job not settled at the end."""
    finished_at: list[str]
    """The sites that list the job as finished (one, when all is well)."""
    model_sha256: str | None
    reference_sha256: str
    slurm_samples: int
    slurm_errors: int
    slurm_violations: list[str]
    slurm_record: Mapping[str, list[SlurmJob]]

    @property
    def completed(self) -> list[MigrationLine]:
        return [m for m in self.migrations if m.state == "completed"]


def _slurm_lines(outcome: Outcome) -> list[str]:
    lines = []
    for site_id, jobs in outcome.slurm_record.items():
        listed = ", ".join(
            f"job {job.job_id} {job.state}"
            + ("" if job.exit_code is None else f" (exit {job.exit_code})")
            for job in jobs
        )
        lines.append(f"  {site_id}: {listed or 'none'}")
    one_at_a_time = "yes" if not outcome.slurm_violations else "NO"
    lines.append(
        f"  squeue sampled {outcome.slurm_samples} times on both clusters "
        f"({outcome.slurm_errors} failed): on one cluster at a time: {one_at_a_time}"
    )
    lines += [f"  {line}" for line in outcome.slurm_violations]
    return lines


def _problems(outcome: Outcome) -> list[str]:
    problems = list(outcome.problems)
    if not any(m.source == outcome.start_site for m in outcome.completed):
        problems.append(f"no migration away from {outcome.start_site} completed")
    if outcome.violations:
        problems.append(f"{len(outcome.violations)} invariant violation(s)")
    if outcome.checks == 0:
        problems.append("the invariants were never checked")
    if outcome.model_sha256 is None:
        problems.append(
            f"no final model.bin of {outcome.job_id} (finished at {outcome.finished_at})"
        )
    elif outcome.model_sha256 != outcome.reference_sha256:
        problems.append("the final model differs from that of an uninterrupted run")
    if outcome.slurm_violations:
        problems.append("Slurm had the job on two clusters at once")
    if outcome.slurm_samples == 0:
        problems.append("Slurm was never asked where the job runs")
    return problems


def verdict(outcome: Outcome, wall_s: float) -> int:
    """Print the summary and the verdict line; 0 when every promise held, else 1."""
    print("\nMigrations (the daemon's database):")
    for i, m in enumerate(outcome.migrations, 1):
        step = f", resumed at {m.resumed_at_step}" if m.resumed_at_step else ""
        print(
            f"  {i}. {m.planned_at:%H:%M} UTC  {m.source} -> {m.target}  {m.state} "
            f"in {m.took_s:.1f} s{step}"
        )
    if not outcome.migrations:
        print("  none")
    print(
        f"\nSlurm's own record of the batch jobs named dr-{outcome.job_id} (squeue --json; at a "
        "target the job runs in the Slurm job that held its GPUs, renamed):"
    )
    print("\n".join(_slurm_lines(outcome)))
    equal = outcome.model_sha256 == outcome.reference_sha256
    where = outcome.finished_at[0] if len(outcome.finished_at) == 1 else outcome.finished_at
    print(
        f"\nFinal model.bin (finished at {where}): sha256 {outcome.model_sha256}\n"
        f"Uninterrupted run's model.bin:   sha256 {outcome.reference_sha256}  "
        + ("(equal)" if equal else "(DIFFERENT)")
    )
    print(
        f"\nFleet invariants (one site per job, no job lost, reservations balance, no site "
        f"over its GPUs), checked after each of {outcome.checks} rounds: "
        + ("all held" if not outcome.violations else f"{len(outcome.violations)} broken")
    )
    for line in outcome.violations:
        print(f"  {line}")
    problems = _problems(outcome)
    if problems:
        print(f"\ndemo-slurm: FAILED: {'; '.join(problems)}")
        return 1
    aborted = sum(m.state == "aborted" for m in outcome.migrations)
    aborted_text = f" ({aborted} aborted and cleaned up)" if aborted else ""
    count = len(outcome.completed)
    print(
        f"\ndemo-slurm: OK: {count} migration{'' if count == 1 else 's'} completed{aborted_text}, "
        "final "
        f"model bit for bit equal to an uninterrupted run, invariants held in {outcome.checks} "
        f"checks, Slurm ran the job on one cluster at a time ({outcome.slurm_samples} samples); "
        f"{wall_s:.0f} s"
    )
    return 0

"""One migration driven by the gateway's real Dispatcher, round after round, until it has ended
and been cleaned up, with invariant 1 (the job lives at one site at most) checked after every
round. The site-agent tests (processes) and the Slurm tests (batch jobs) each say how they see
where the job lives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import SystemClock
from gateway.db import unit_of_work
from gateway.migration.dispatch import Dispatcher
from gateway.planner.snapshot import MigrationDecision
from gateway.sites.client import SiteControllerClient
from models import FINAL_STATES, Migration
from simulators.hang_guard import HANG_GUARD_S


def cleaned_up(sessions: sessionmaker[Session], migration_id: str) -> bool:
    with unit_of_work(sessions) as session:
        migration = session.get(Migration, migration_id)
        return migration is not None and migration.cleaned_up_at is not None


async def migrate_until_cleaned_up(
    sessions: sessionmaker[Session],
    clients: Mapping[str, SiteControllerClient],
    decision: MigrationDecision,
    live_sites: Callable[[], Sequence[str]],
    *,
    planned: Callable[[str], Awaitable[None]] | None = None,
    round_s: float = 0.01,
    timeout_s: float = HANG_GUARD_S,
) -> tuple[str, list[str], float]:
    """Carry out ``decision`` with the Dispatcher until the migration ended and was cleaned
    up; (final state, states seen, wall time [s]). ``planned`` runs with the migration id
    before the first round; ``live_sites`` says where the job lives, at most one site after
    every round; ``round_s`` [s] between rounds."""
    dispatcher = Dispatcher(sessions, clients, SystemClock())
    migration_id = dispatcher.create(decision)
    assert migration_id is not None
    if planned is not None:
        await planned(migration_id)
    started = time.monotonic()
    seen: list[str] = []
    while True:
        state = await dispatcher.advance(migration_id)
        if not seen or seen[-1] != state:
            seen.append(state)
        live = live_sites()
        assert len(live) <= 1, f"the job ran at two sites at once: {list(live)}"
        if state in FINAL_STATES and cleaned_up(sessions, migration_id):
            return state, seen, time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"stuck in {seen}"
        await asyncio.sleep(round_s)

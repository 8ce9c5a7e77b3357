"""When the next planning round must run so that load changes at the instants events ask.

A shed is met by moving jobs off the site when its interval starts (the load leaves with the
checkpoint); an absorb by moving jobs in early enough to run at the site when it starts; a
change of interval may change the ask. Regular rounds fall between those instants, so the
daemon also plans at each of them (and the campaign's stepped clock stops at them).

Pure: the events with their opts, a snapshot and the parameters in, an instant out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from gateway.events import DrEvent, Opt
from gateway.planner.params import PolicyParams
from gateway.planner.plan import fleet_arrays
from gateway.planner.rounds import RoundState, plan_absorbs
from gateway.planner.snapshot import Snapshot


def event_instants(events: Iterable[tuple[DrEvent, Opt | None]], at: datetime) -> list[datetime]:
    """Starts, interval boundaries and ends of the opted-in, non-test events after ``at``."""
    out: list[datetime] = []
    for event, opt in events:
        if opt != "optIn" or event.test_event or event.is_over_at(at):
            continue
        start = event.effective_start_at
        out.append(start)
        for signal in event.signals:
            elapsed_s = 0.0
            for interval in signal.intervals:
                if interval.duration_s <= 0:
                    break
                elapsed_s += interval.duration_s
                out.append(start + timedelta(seconds=elapsed_s))
        if event.end_at is not None:
            out.append(event.end_at)
        if event.cancel_effective_at is not None:
            out.append(event.cancel_effective_at)
    return [t for t in out if t > at]


def absorb_departures(snapshot: Snapshot, params: PolicyParams) -> list[datetime]:
    """When the jobs that absorbs need must leave, for those not due in this round."""
    given = fleet_arrays(snapshot, params)
    state = RoundState.of(given.fleet)
    return [
        snapshot.at + timedelta(seconds=depart_in_s)
        for *_, depart_in_s in plan_absorbs(given.fleet, params, state)
        if depart_in_s > params.absorb_early_s
    ]


def next_plan_at(
    events: Sequence[tuple[DrEvent, Opt | None]], snapshot: Snapshot, params: PolicyParams
) -> datetime | None:
    """The first instant after the snapshot at which a round must plan, or None."""
    instants = event_instants(events, snapshot.at) + absorb_departures(snapshot, params)
    return min(instants, default=None)

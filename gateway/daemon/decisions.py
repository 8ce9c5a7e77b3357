"""What the daemon decides, each decision on one look at the fleet.

The look is a :class:`~gateway.planner.snapshot.Snapshot`: the sites, their jobs and what the
opted-in events ask of them, a shed or absorb in force with the baseline the meter judges it
against. On it the :class:`Decider` plans the moves (:meth:`Decider.look_and_plan`), answers
the VEN's question for the new versions of a distribution (:meth:`Decider.decide`), finds the
opts a new plan changes (:meth:`Decider.opt_changes`) and the next instant an event needs a
plan (:meth:`Decider.next_plan_at`).

Every method here reads the store and runs in a worker thread (``asyncio.to_thread``); the
site statuses come in as a copy taken on the event loop. The daemon's rounds
(:mod:`gateway.daemon.gateway`) call them and act on what they return.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from gateway import fleet
from gateway.baseline_forecast import BaselineForecast, predicted_baseline_kw
from gateway.clock import Clock
from gateway.db import unit_of_work
from gateway.events import DrEvent, OptDecision
from gateway.planner import opt
from gateway.planner.params import PolicyParams
from gateway.planner.plan import plan
from gateway.planner.requests import event_requests
from gateway.planner.review import review
from gateway.planner.signals import targeted_sites
from gateway.planner.snapshot import MigrationDecision, SiteRequest, Snapshot
from gateway.planner.timing import next_plan_at
from gateway.settings import Settings
from gateway.sites.records import SiteStatus
from gateway.ven import store as event_store

log = logging.getLogger(__name__)


def policy_params(settings: Settings) -> PolicyParams:
    """The planner's parameters from ``[feasibility]`` and ``[planner]``."""
    f = settings.feasibility
    return PolicyParams(
        feasibility=f.params(gpus=1),
        checkpoint_write_gb_per_s=f.checkpoint_write_gb_per_s,
        restore_gb_per_s=f.restore_gb_per_s,
        min_residence_s=settings.planner.min_residence_s,
        min_gain_s=settings.planner.min_gain_s,
        max_migrations=settings.planner.max_migrations_per_plan,
        horizon_s=settings.planner.forecast_horizon_s,
        event_guard_s=settings.planner.event_guard_s,
        delivery_margin=settings.planner.delivery_margin,
    )


class Decider:
    """The daemon's decisions on the fleet as its store and its last poll show it."""

    def __init__(
        self, settings: Settings, clock: Clock, session_factory: sessionmaker[Session]
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._sessions = session_factory
        self.policy_params = policy_params(settings)
        self.signal_policy = settings.signal_policy()
        self._known_baselines: dict[tuple[str, int, str], float | None] = {}
        """Baselines of sheds in force, by (request source, modification, site) [kW]."""

    # -- the look at the fleet ------------------------------------------------------------

    def snapshot(self, session: Session, statuses: Mapping[str, SiteStatus]) -> Snapshot:
        """The fleet now; ``statuses`` is a copy of the daemon's site statuses taken on the
        event loop (this runs in worker threads)."""
        now = self._clock.now()
        base = fleet.build_snapshot(
            session,
            self._settings.site,
            statuses,
            (),
            now,
            idle_kw_per_gpu=self._settings.feasibility.idle_kw_per_gpu,
        )
        requests = self._requests(session, base)
        return Snapshot(
            at=base.at,
            sites=base.sites,
            jobs=base.jobs,
            requests=tuple(requests),
            delivered_kw=base.delivered_kw,
            absorbed_kw=base.absorbed_kw,
            arriving_kw=base.arriving_kw,
        )

    def _requests(self, session: Session, base: Snapshot) -> list[SiteRequest]:
        """What opted-in, non-test events ask of the sites, now or soon; a shed or absorb
        in force carries the baseline the meter judges it against."""
        participations = event_store.participations(session, current_at=base.at)
        requests = event_requests(
            [(p.event, p.opt) for p in participations],
            base.sites,
            opt.flexible_kw(base),
            base.at,
            self.policy_params.horizon_s,
            self.signal_policy,
        )
        events = {f"{p.event.vtn_id}/{p.event.event_id}": p.event for p in participations}
        return [self._with_baseline(session, r, events.get(r.source), base) for r in requests]

    def _with_baseline(
        self, session: Session, request: SiteRequest, event: DrEvent | None, base: Snapshot
    ) -> SiteRequest:
        """The request with its baseline once its event has started (the rows a baseline
        reads then all lie in the past; kept per event version and site)."""
        if request.kind == "cap" or event is None or request.start_at > base.at:
            return request
        key = (request.source, event.modification_number, request.site_id)
        if key not in self._known_baselines:
            site = base.site(request.site_id)
            self._known_baselines[key] = predicted_baseline_kw(
                session.connection(), event, request.site_id, site.load_kw
            )
        known = self._known_baselines[key]
        return request if known is None else replace(request, baseline_kw=known)

    # -- plans ----------------------------------------------------------------------------

    def look_and_plan(
        self, statuses: Mapping[str, SiteStatus]
    ) -> tuple[Snapshot, list[MigrationDecision]]:
        """One look at the fleet and the moves the configured policy plans on it."""
        with unit_of_work(self._sessions) as session:
            snapshot = self.snapshot(session, statuses)
        policy = self._settings.planner.policy
        if policy == "static":
            return snapshot, []
        return snapshot, list(plan(snapshot, self.policy_params, policy))

    def next_plan_at(self, statuses: Mapping[str, SiteStatus]) -> datetime | None:
        """The next instant an opted-in event needs a planning round
        (:mod:`gateway.planner.timing`), or None."""
        with unit_of_work(self._sessions) as session:
            snapshot = self.snapshot(session, statuses)
            events = [
                (p.event, p.opt)
                for p in event_store.participations(session, current_at=snapshot.at)
            ]
        return next_plan_at(events, snapshot, self.policy_params)

    # -- answers to events ----------------------------------------------------------------

    def decide(
        self, events: Sequence[DrEvent], statuses: Mapping[str, SiteStatus]
    ) -> list[OptDecision]:
        """Opt in or out of each of ``events``, all judged on one look at the fleet."""
        with unit_of_work(self._sessions) as session:
            snapshot = self.snapshot(session, statuses)
            forecast = BaselineForecast(session.connection())
            out = [self._decide_one(forecast, event, snapshot) for event in events]
        return out

    def _decide_one(
        self, forecast: BaselineForecast, event: DrEvent, snapshot: Snapshot
    ) -> OptDecision:
        """One version's answer; optOut with the reason when the planner fails on it (one
        event never sinks the others of its distribution)."""
        try:
            baselines = self._baselines(forecast, event, snapshot)
            decision = opt.decide(
                event, snapshot, self.policy_params, self.signal_policy, baselines
            )
        except Exception as exc:  # one event's boundary
            log.exception(
                "event %s/%s #%d: deciding failed, opting out",
                event.vtn_id,
                event.event_id,
                event.modification_number,
            )
            decision = OptDecision("optOut", f"the planner failed: {type(exc).__name__}: {exc}")
        log.info(
            "event %s/%s #%d: %s (%s)",
            event.vtn_id,
            event.event_id,
            event.modification_number,
            decision.opt,
            decision.reason,
        )
        return decision

    def _baselines(
        self, forecast: BaselineForecast, event: DrEvent, snapshot: Snapshot
    ) -> dict[str, float]:
        """The baseline each site the event addresses will be measured against, as predicted
        from the ledger and the programme's method [kW]."""
        out: dict[str, float] = {}
        for site in targeted_sites(event, snapshot.sites):
            predicted = forecast.predicted_kw(event, site.site_id, site.load_kw)
            if predicted is not None:
                out[site.site_id] = predicted
        return out

    def opt_changes(
        self,
        snapshot: Snapshot | None,
        moved: Collection[str],
        statuses: Mapping[str, SiteStatus],
        vtn_ids: Collection[str],
    ) -> list[tuple[DrEvent, OptDecision]]:
        """The opts the plan changes (of events of ``vtn_ids``; :mod:`gateway.planner.review`).

        snapshot: the fleet as the round's plan saw it; None takes one now. moved: the sites
        the round's moves leave or go to (an optOut at one of them waits for the next round).
        """
        with unit_of_work(self._sessions) as session:
            if snapshot is None:
                snapshot = self.snapshot(session, statuses)
            current = [
                known
                for known in event_store.participations(session, current_at=snapshot.at)
                if known.opt != "optOut"
                or not any(s.site_id in moved for s in targeted_sites(known.event, snapshot.sites))
            ]
            forecast = BaselineForecast(session.connection())
            baselines = {
                (known.event.vtn_id, known.event.event_id): self._baselines(
                    forecast, known.event, snapshot
                )
                for known in current
                if known.event.vtn_id in vtn_ids
                and known.opt == "optOut"
                and known.response_code == 200
                and known.event.effective_start_at > snapshot.at
            }
        changes = []
        for known in current:
            if known.event.vtn_id not in vtn_ids:
                continue
            decision = review(
                known.event,
                known.opt,
                known.response_code,
                snapshot,
                self.policy_params,
                self.signal_policy,
                baselines.get((known.event.vtn_id, known.event.event_id)),
            )
            if decision is not None:
                changes.append((known.event, decision))
        return changes

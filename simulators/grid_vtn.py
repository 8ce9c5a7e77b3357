"""A VTN driven by a real grid signal: CAISO's marginal emissions rate (MOER).

It replays the hourly MOER trace ``data/traces/caiso-moer-hourly.csv.gz`` (kg CO2 per kWh,
``data/traces/PROVENANCE.md``) against simulated time, the way
:class:`simulators.traces.RenewableTrace` replays renewable power: simulated time ``at`` reads
the trace at ``trace_start_at + (at - sim_start_at)``, wrapped around the trace's year. Each
:meth:`GridVtn.step`, for every coming hour (up to ``lookahead_hours`` ahead):

- an hour whose MOER is at most ``surplus_moer_kg_per_kwh`` (near zero: renewables on the
  margin) is a **surplus** hour, one at or above ``curtail_moer_kg_per_kwh`` a
  **curtailment** hour;
- the gateway's offers for that hour come from the reports its VEN sends (``docs/ei-report.md``):
  ``upRegulationCapacityAvailable`` is what a site can shed, ``downRegulationCapacityAvailable``
  what it can absorb, ``x-notice`` the notice it needs, each a projected reading whose
  ``dtstart`` is the hour's start (the newest reading of each wins);
- every site (resource id) with a non-zero offer in the needed direction gets a LOAD_DISPATCH
  event with signal type ``delta`` for that hour: ``-dispatch_fraction * shed`` for
  curtailment, ``+dispatch_fraction * absorb`` for surplus [kW], issued only while the hour
  starts at least the offer's notice from now, once per (VEN, site, hour).

Each dispatch is recorded (:attr:`GridVtn.dispatches`) with what was offered and asked, and
:meth:`GridVtn.outcome` says what the site delivered, from its TELEMETRY_USAGE readings:

- baseline: the mean of the site's usage readings in the ``baseline_s`` before the event was
  issued (the load as it was when the VTN asked; a shed that starts ahead of the event does
  not lower it);
- delivered: the mean of its usage readings inside the event's hour minus the baseline [kW];
  negative is load shed, positive load absorbed, the sign convention of the ``delta`` asked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from openleadr import enums

from gateway.errors import InputError
from gateway.evaluation.input_sites import SiteSpec
from gateway.evaluation.input_traces import load_traces
from gateway.evaluation.trace_build import MOER_AREAS, MOER_FILE
from gateway.feasibility import FloatArray
from simulators.vtn import ScenarioEvent, SimulatedVtn, TelemetryReading

logger = logging.getLogger(__name__)

GridKind = Literal["surplus", "curtailment"]
MOER_PATH = Path(__file__).resolve().parent.parent / "data" / "traces" / MOER_FILE
"""The bundled hourly CAISO MOER trace."""
SHED = enums.REPORT_TYPE.UP_REGULATION_CAPACITY_AVAILABLE
ABSORB = enums.REPORT_TYPE.DOWN_REGULATION_CAPACITY_AVAILABLE
NOTICE = "x-notice"
USAGE = enums.REPORT_TYPE.READING
HOUR_S = 3600.0


@dataclass(frozen=True, eq=False)
class MoerTrace:
    """An hourly MOER series replayed against simulated time [kg CO2/kWh].

    values: one value per hour from ``first_at``; sim_start_at maps to trace_start_at.
    """

    values: FloatArray
    first_at: datetime
    sim_start_at: datetime
    trace_start_at: datetime
    step_s: float = HOUR_S

    def at(self, at: datetime) -> float:
        """The MOER of the trace hour that simulated time ``at`` falls in [kg CO2/kWh]."""
        offset_s = (at - self.sim_start_at).total_seconds()
        position_s = (self.trace_start_at - self.first_at).total_seconds() + offset_s
        index = math.floor(position_s / self.step_s + 1e-9) % len(self.values)
        return float(self.values[index])


def load_moer(
    area: str,
    sim_start_at: datetime,
    trace_start_at: datetime,
    path: Path | str = MOER_PATH,
) -> MoerTrace:
    """One balancing area's column of the MOER trace (read with the evaluation's trace
    loader: one column per area instead of per site). Raises InputError for an unknown area."""
    if area not in MOER_AREAS:
        raise InputError(f"MOER area {area!r}: expected one of {', '.join(MOER_AREAS)}")
    for name, at in (("sim_start_at", sim_start_at), ("trace_start_at", trace_start_at)):
        if at.tzinfo is None:
            raise InputError(f"{name} must be timezone-aware UTC")
    columns = [
        SiteSpec(name, gpus_total=1, it_power_max_kw=1.0, pue=1.0, wan_bandwidth_gbps=1.0)
        for name in MOER_AREAS
    ]
    traces = load_traces(path, columns)
    if traces.step_s != HOUR_S:
        raise InputError(f"{path}: expected hourly rows, got a step of {traces.step_s:g} s")
    return MoerTrace(
        values=np.asarray(traces.site_kw(area), dtype=np.float64),
        first_at=traces.start_at,
        sim_start_at=sim_start_at.astimezone(UTC),
        trace_start_at=trace_start_at.astimezone(UTC),
    )


def classify(moer: float, surplus_at_most: float, curtail_at_least: float) -> GridKind | None:
    """Surplus, curtailment or neither for a MOER [kg CO2/kWh]."""
    if moer <= surplus_at_most:
        return "surplus"
    if moer >= curtail_at_least:
        return "curtailment"
    return None


@dataclass(frozen=True)
class Offer:
    """A site's offer for one hour, as read from its VEN's reports."""

    shed_kw: float
    absorb_kw: float
    notice_s: float


@dataclass(frozen=True)
class Dispatch:
    """A LOAD_DISPATCH event the grid VTN issued, and why."""

    event_id: str
    ven_id: str
    resource_id: str
    kind: GridKind
    moer_kg_per_kwh: float
    issued_at: datetime
    start_at: datetime
    end_at: datetime
    offered_kw: float
    """What the offer said the site could shed (curtailment) or absorb (surplus) [kW]."""
    notice_s: float
    """The notice the offer asked for [s]."""
    requested_kw: float
    """The delta asked: negative sheds, positive absorbs [kW]."""


@dataclass(frozen=True)
class Outcome:
    """What a site delivered for a dispatch, from its usage readings [kW]."""

    baseline_kw: float
    during_kw: float
    delivered_kw: float
    """during minus baseline: negative shed, positive absorbed."""
    readings_during: int


def delivered(
    usage: Sequence[tuple[datetime, float]],
    issued_at: datetime,
    start_at: datetime,
    end_at: datetime,
    baseline_s: float,
) -> Outcome | None:
    """Baseline and delivery from (at, kW) usage readings; None while either is unknown.

    baseline: mean of the readings in [issued_at - baseline_s, issued_at]; during: mean of
    the readings in [start_at, end_at).
    """
    since = issued_at - timedelta(seconds=baseline_s)
    before = [kw for at, kw in usage if since <= at <= issued_at]
    during = [kw for at, kw in usage if start_at <= at < end_at]
    if not before or not during:
        return None
    baseline_kw = float(np.mean(before))
    during_kw = float(np.mean(during))
    return Outcome(baseline_kw, during_kw, during_kw - baseline_kw, len(during))


@dataclass
class GridVtn:
    """Issues LOAD_DISPATCH events from the MOER trace, sized against the gateway's offers.

    vtn: the simulated VTN that the gateway's VEN registers with (it receives the reports)
    moer: the grid signal
    surplus_moer_kg_per_kwh: at or below: a surplus hour [kg CO2/kWh]
    curtail_moer_kg_per_kwh: at or above: a curtailment hour [kg CO2/kWh]; the defaults are
        about the 5th and 95th percentiles of the bundled PG&E trace
    dispatch_fraction: share of the offer that is asked [-]
    min_request_kw: smaller asks are not sent [kW]
    lookahead_hours: how many coming hours are considered [-]
    baseline_s: the span before the issue whose usage is the baseline [s]
    """

    vtn: SimulatedVtn
    moer: MoerTrace
    surplus_moer_kg_per_kwh: float = 0.05
    curtail_moer_kg_per_kwh: float = 0.42
    dispatch_fraction: float = 1.0
    min_request_kw: float = 0.1
    lookahead_hours: int = 4
    baseline_s: float = 900.0
    dispatches: list[Dispatch] = field(default_factory=list)
    _done: set[tuple[str, str, datetime]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.surplus_moer_kg_per_kwh < self.curtail_moer_kg_per_kwh:
            raise InputError(
                "surplus_moer_kg_per_kwh must be below curtail_moer_kg_per_kwh, got "
                f"{self.surplus_moer_kg_per_kwh} and {self.curtail_moer_kg_per_kwh}"
            )
        if not 0 < self.dispatch_fraction <= 1:
            raise InputError(f"dispatch_fraction must be in (0, 1], got {self.dispatch_fraction}")
        if self.lookahead_hours < 1:
            raise InputError(f"lookahead_hours must be >= 1, got {self.lookahead_hours}")

    def offers(self) -> dict[tuple[str, str, datetime], Offer]:
        """(venID, resource id, hour start) -> the newest offer read from the reports."""
        newest: dict[tuple[str, str, datetime], dict[str, float]] = {}
        for reading in self.vtn.readings(reading_type=enums.READING_TYPE.PROJECTED):
            if reading.ven_id is None or reading.resource_id is None:
                continue
            key = (reading.ven_id, reading.resource_id, reading.at)
            if reading.report_type in (SHED, ABSORB, NOTICE):
                newest.setdefault(key, {})[str(reading.report_type)] = reading.value
        return {
            key: Offer(values[SHED], values[ABSORB], values[NOTICE])
            for key, values in newest.items()
            if {SHED, ABSORB, NOTICE} <= values.keys()
        }

    def step(self) -> list[Dispatch]:
        """Issue the events that the coming hours' MOER and the offers call for; the new ones."""
        now = self.vtn.clock.now()
        first = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        hours = [first + timedelta(hours=k) for k in range(self.lookahead_hours)]
        offers = self.offers()
        issued = []
        for hour in hours:
            moer = self.moer.at(hour)
            kind = classify(moer, self.surplus_moer_kg_per_kwh, self.curtail_moer_kg_per_kwh)
            if kind is None:
                continue
            for (ven_id, resource_id, at), offer in sorted(offers.items()):
                if at != hour or (ven_id, resource_id, hour) in self._done:
                    continue
                if ven_id not in self.vtn.registrations:
                    continue
                offered_kw = offer.shed_kw if kind == "curtailment" else offer.absorb_kw
                ask_kw = self.dispatch_fraction * offered_kw
                if ask_kw < self.min_request_kw:
                    continue
                if (hour - now).total_seconds() < offer.notice_s:
                    continue  # too late for this offer
                requested_kw = -ask_kw if kind == "curtailment" else ask_kw
                issued.append(
                    self._issue(ven_id, resource_id, kind, moer, hour, offer, requested_kw)
                )
        return issued

    def _issue(
        self,
        ven_id: str,
        resource_id: str,
        kind: GridKind,
        moer: float,
        hour: datetime,
        offer: Offer,
        requested_kw: float,
    ) -> Dispatch:
        now = self.vtn.clock.now()
        spec = ScenarioEvent(
            issue_at=now,
            start_at=hour,
            duration_s=HOUR_S,
            signal_name="LOAD_DISPATCH",
            signal_type="delta",
            intervals=(requested_kw,),
            resource_ids=(resource_id,),
            kind=kind,
        )
        event_id = self.vtn.add_event_now(spec, ven_id=ven_id)
        self._done.add((ven_id, resource_id, hour))
        dispatch = Dispatch(
            event_id=event_id,
            ven_id=ven_id,
            resource_id=resource_id,
            kind=kind,
            moer_kg_per_kwh=moer,
            issued_at=now,
            start_at=hour,
            end_at=hour + timedelta(seconds=HOUR_S),
            offered_kw=offer.shed_kw if kind == "curtailment" else offer.absorb_kw,
            notice_s=offer.notice_s,
            requested_kw=requested_kw,
        )
        self.dispatches.append(dispatch)
        logger.info(
            "MOER %.3f kg/kWh at %s: %s event %s asks %s for %+.2f kW (offered %.2f kW)",
            moer,
            hour.isoformat(),
            kind,
            event_id,
            resource_id,
            requested_kw,
            dispatch.offered_kw,
        )
        return dispatch

    def usage(self, ven_id: str, resource_id: str) -> list[tuple[datetime, float]]:
        """A site's TELEMETRY_USAGE readings (at, kW)."""
        return [
            (r.at, r.value)
            for r in self.vtn.readings(report_type=USAGE, resource_id=resource_id)
            if r.ven_id == ven_id and _is_kw(r)
        ]

    def outcome(self, dispatch: Dispatch) -> Outcome | None:
        """What the site delivered for ``dispatch`` so far; None while unknown."""
        return delivered(
            self.usage(dispatch.ven_id, dispatch.resource_id),
            dispatch.issued_at,
            dispatch.start_at,
            dispatch.end_at,
            self.baseline_s,
        )

    def answer(self, dispatch: Dispatch) -> str | None:
        """The opt the VEN sent for the dispatch's event (its newest), if any."""
        opts = self.vtn.opts_for(dispatch.event_id)
        return opts[-1].opt_type if opts else None

    async def run(self, interval_s: float = 60.0) -> None:
        """:meth:`step` every ``interval_s`` of simulated time, until cancelled [s] (for a
        :class:`~gateway.clock.ScaledClock`; on a ManualClock call :meth:`step` yourself)."""
        while True:
            self.step()
            await self.vtn.clock.sleep(interval_s)


def _is_kw(reading: TelemetryReading) -> bool:
    return reading.unit == "kW"

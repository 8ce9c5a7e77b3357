"""``/metrics`` in the Prometheus text format (or OpenMetrics when asked for).

The figures are read from the database at every scrape by a custom collector on a registry of
the gateway's own (not the process-wide default), so they are the same after a restart and
whichever process serves them. Every family is one row of :data:`FAMILIES`; the names, units
and labels are listed in ``docs/web.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.reports.queries import energy_captured_kwh
from gateway.web import data
from models import FINAL_STATES, MIGRATION_STATES

log = logging.getLogger(__name__)

PREFIX = "dr_gateway"
REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)


def _events_received(session: Session) -> Metric:
    family = CounterMetricFamily(
        f"{PREFIX}_events_received",
        "Demand-response events (distinct VTN event ids) received, by VTN.",
        labels=["vtn_id"],
    )
    for vtn_id, count in sorted(data.events_received(session).items()):
        family.add_metric([vtn_id], count)
    return family


def _opts(session: Session) -> Metric:
    family = CounterMetricFamily(
        f"{PREFIX}_opts",
        "Opt answers given to events (each change of answer counts), by VTN and opt type.",
        labels=["vtn_id", "opt"],
    )
    for (vtn_id, opt), count in sorted(data.opts_given(session).items()):
        family.add_metric([vtn_id, opt], count)
    return family


def _inbound_refusals(session: Session) -> Metric:
    family = CounterMetricFamily(
        f"{PREFIX}_inbound_refusals",
        "Messages from a VTN the VEN refused before parsing them (a DTD or entity, a body "
        "over the size cap, an empty body, an encoding it cannot scan), by VTN and reason.",
        labels=["vtn_id", "reason"],
    )
    for (vtn_id, reason), count in sorted(data.inbound_refusals(session).items()):
        family.add_metric([vtn_id, reason], count)
    return family


def _migrations(session: Session) -> Iterator[Metric]:
    counts = data.migration_counts(session)
    ended = CounterMetricFamily(
        f"{PREFIX}_migrations",
        "Migrations that have ended, by outcome (completed or aborted).",
        labels=["outcome"],
    )
    for outcome in sorted(FINAL_STATES):
        ended.add_metric([outcome], counts[outcome])
    yield ended
    in_flight = GaugeMetricFamily(
        f"{PREFIX}_migrations_in_flight",
        "Migrations in flight now, by state.",
        labels=["state"],
    )
    for state in MIGRATION_STATES:
        if state not in FINAL_STATES:
            in_flight.add_metric([state], counts[state])
    yield in_flight


def _energy_captured(session: Session) -> Metric:
    return CounterMetricFamily(
        f"{PREFIX}_energy_captured_kwh",
        "Captured surplus energy of the fleet over all time: on-site renewable energy used "
        "plus grid energy drawn during utilities' surplus events [kWh].",
        value=energy_captured_kwh(session.connection()),
    )


def _sites(session: Session) -> Iterator[Metric]:
    records = data.sites(session)
    yield GaugeMetricFamily(f"{PREFIX}_sites", "Sites the gateway knows.", value=len(records))
    yield GaugeMetricFamily(
        f"{PREFIX}_sites_online",
        "Sites whose controller answered the last poll.",
        value=sum(1 for s in records if s.online),
    )
    load = GaugeMetricFamily(
        f"{PREFIX}_site_load_kw",
        "Facility power of a site at its last poll (IT power times PUE) [kW].",
        labels=["site_id"],
    )
    renewable = GaugeMetricFamily(
        f"{PREFIX}_site_renewable_kw",
        "Power a site's own renewable plant could deliver at its last poll [kW].",
        labels=["site_id"],
    )
    for site in records:
        if site.load_kw is not None:
            load.add_metric([site.site_id], site.load_kw)
        if site.renewable_kw is not None:
            renewable.add_metric([site.site_id], site.renewable_kw)
    yield load
    yield renewable


FAMILIES: tuple[Callable[[Session], Iterable[Metric]], ...] = (
    lambda session: [_events_received(session)],
    lambda session: [_opts(session)],
    lambda session: [_inbound_refusals(session)],
    _migrations,
    lambda session: [_energy_captured(session)],
    _sites,
)
"""Each row reads one or more metric families from an open session."""


class DatabaseCollector:
    """Reads every family of :data:`FAMILIES` from the database, in one session per scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterable[Metric]:
        with self._sessions() as session:
            return [metric for read in FAMILIES for metric in read(session)]


def make_registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    """A registry of its own holding the gateway's collector (nothing process-wide)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(sessions))
    return registry


async def metrics(request: web.Request) -> web.Response:
    """The scrape: encoded as the ``Accept`` header asks (text 0.0.4 by default)."""
    registry = request.app[REGISTRY_KEY]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    try:
        body = await asyncio.to_thread(encoder, registry)
    except SQLAlchemyError as exc:
        log.warning("a metrics scrape failed: the database did not answer: %s", exc)
        return web.Response(
            status=HTTPStatus.SERVICE_UNAVAILABLE,
            text="the gateway's database did not answer; see /healthz\n",
        )
    return web.Response(body=body, headers={"Content-Type": content_type})

"""The reports the VEN offers each VTN: one row per data point, repeated for every site.

``docs/ei-report.md`` describes them for a utility. Three reports, each one openleadr report
(one report specifier) with a data point (an ``rID``, ``{resource id}-{source}``) per site:

- ``dr-gateway-TELEMETRY_USAGE`` (TELEMETRY_USAGE): the site's facility power now
  (reportType ``reading``, readingType ``Direct Read``, RealPower in kW);
- ``dr-gateway-TELEMETRY_STATUS`` (TELEMETRY_STATUS): whether the site controller answers
  (``oadrOnline``) and whether the operator has set ``manual_override`` for the site
  (``oadrManualOverride``), sent as the ``oadrPayloadResourceStatus`` structure of 2.0b
  (reportType ``x-resourceStatus``, readingType ``x-notApplicable``);
- ``dr-gateway-OFFERS`` (named TELEMETRY_USAGE, see below): the site's flexibility offers for
  the coming hours as projected readings (readingType ``Projected``), one reading per offered
  hour, its ``dtstart`` the hour's start and its duration one hour. Three points per site:
  the load it can shed as ``upRegulationCapacityAvailable`` and the load it can absorb as
  ``downRegulationCapacityAvailable`` (RealPower in kW, never negative), and the notice the
  offer needs as ``x-notice`` (a custom unit ``notice`` in ``s``): an event announced at
  least that long before it starts gets what the offer says.

The direction follows the grid's convention (as in the ISOs' regulation markets):
up-regulation raises the system's net supply, which a load delivers by *shedding*;
down-regulation lowers it, which a load delivers by *absorbing*.

openleadr 0.5.36 and how this module handles it (``docs/openadr-notes.md`` pitfall 8, measured):

- its VTN requests only reports named TELEMETRY_USAGE or TELEMETRY_STATUS (other names,
  ``x-`` ones included, are skipped with a warning), so the offers travel in a report named
  TELEMETRY_USAGE; every data point carries its reportType and readingType, which tell
  usage from offers;
- ``create_report`` gives every report request of one ``oadrCreateReport`` the same list
  of rIDs, so each report job looks up the other reports' points too and logs "No callback
  found" for each, every cycle (2 per cycle with usage and status). :func:`own_points_only`
  gives each request its own points;
- its ``oadrUpdateReport`` template writes every value as ``payloadFloat``, and the
  ``before_send_xml`` hook only sees the finished (and, with TLS, signed) message. A status
  reading is therefore a :class:`ResourceStatus`, and :func:`render_status_payloads` renders
  messages that carry one with this module's template (:data:`STATUS_TEMPLATE`, added to
  openleadr's template environment under a name of its own) before openleadr signs them;
- it gives report readings no duration; :class:`OutgoingReports` sets one hour on each
  offered reading, and keeps reports without a single reading from being sent (the openleadr
  VTN answers those with HTTP 500).

:func:`offer` puts all of it on a new openleadr client: every point of every site the client
serves, at a sampling rate checked up front (:func:`report_granularity`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

import jinja2
from openleadr import enums, objects
from openleadr import messaging as openleadr_messaging

from gateway.clock import Clock
from gateway.errors import ConfigError
from gateway.planner.offers import OFFER_INTERVAL_S, SiteOffer
from gateway.settings_sites import SiteSettings
from gateway.settings_vtn import REPORT_INTERVAL_RULE, is_report_interval

logger = logging.getLogger(__name__)

ReportSource = Literal["power_kw", "status", "shed_kw", "absorb_kw", "notice_s"]
"""Where a data point's value comes from; also the suffix of its rID."""
ReaderName = Literal["power_kw", "status", "offers"]


@dataclass(frozen=True)
class ResourceStatus:
    """A site's TELEMETRY_STATUS reading."""

    online: bool
    """The site controller answered the last poll."""
    manual_override: bool
    """The operator has taken the site out of automatic control (``[[site]] manual_override``)."""


Reading = tuple[datetime, float | ResourceStatus]
TelemetryKw = Callable[[str], float | None]
"""Current facility power of a site [kW], by site id; None when unknown."""
StatusReader = Callable[[str], ResourceStatus | None]
"""A site's status, by site id; None when unknown."""
OffersReader = Callable[[str], Sequence[SiteOffer]]
"""A site's stored offers for the coming hours, by site id; empty when there are none."""


@dataclass(frozen=True)
class Readers:
    """What the VEN reads its reports from; a report whose reader is None is not offered."""

    power_kw: TelemetryKw
    status: StatusReader | None = None
    offers: OffersReader | None = None


@dataclass(frozen=True)
class ReportPoint:
    """One data point every site offers: what openleadr announces and where the value is."""

    report_name: str
    """openleadr.enums.REPORT_NAME."""
    report_specifier_id: str
    """The report it belongs to; points with the same id travel in one report."""
    report_type: str
    """openleadr.enums.REPORT_TYPE or an ``x-`` name."""
    reading_type: str
    """openleadr.enums.READING_TYPE or an ``x-`` name."""
    measurement: str | None
    """A member of openleadr.enums.MEASUREMENTS, a custom description, or None (status)."""
    unit: str | None
    scale: str
    """openleadr.enums.SI_SCALE_CODE: ``k`` turns W into kW."""
    source: ReportSource
    reader: ReaderName
    """Which of :class:`Readers` gives the value; None there leaves the point out."""
    slowest_sampling_s: float | None = None
    """The VTN may ask for readings as seldom as this [s]; None: only at the report interval."""
    reading_duration_s: float | None = None
    """Each reading holds for this long [s]; None: an instant."""


_USAGE = "dr-gateway-TELEMETRY_USAGE"
_STATUS = "dr-gateway-TELEMETRY_STATUS"
_OFFERS = "dr-gateway-OFFERS"
_PROJECTED = enums.READING_TYPE.PROJECTED

REPORTS: tuple[ReportPoint, ...] = (
    ReportPoint(
        "TELEMETRY_USAGE", _USAGE, enums.REPORT_TYPE.READING, enums.READING_TYPE.DIRECT_READ,
        "REAL_POWER", "W", "k", source="power_kw", reader="power_kw",
    ),
    ReportPoint(
        "TELEMETRY_STATUS", _STATUS, enums.REPORT_TYPE.X_RESOURCE_STATUS,
        enums.READING_TYPE.X_NOT_APPLICABLE, None, None, "none", source="status", reader="status",
    ),
    ReportPoint(
        "TELEMETRY_USAGE", _OFFERS, enums.REPORT_TYPE.UP_REGULATION_CAPACITY_AVAILABLE,
        _PROJECTED, "REAL_POWER", "W", "k", source="shed_kw", reader="offers",
        slowest_sampling_s=3600.0, reading_duration_s=OFFER_INTERVAL_S,
    ),
    ReportPoint(
        "TELEMETRY_USAGE", _OFFERS, enums.REPORT_TYPE.DOWN_REGULATION_CAPACITY_AVAILABLE,
        _PROJECTED, "REAL_POWER", "W", "k", source="absorb_kw", reader="offers",
        slowest_sampling_s=3600.0, reading_duration_s=OFFER_INTERVAL_S,
    ),
    ReportPoint(
        "TELEMETRY_USAGE", _OFFERS, "x-notice", _PROJECTED, "notice", "s", "none",
        source="notice_s", reader="offers",
        slowest_sampling_s=3600.0, reading_duration_s=OFFER_INTERVAL_S,
    ),
)  # fmt: skip


def offered(readers: Readers) -> tuple[ReportPoint, ...]:
    """The rows of :data:`REPORTS` whose reader is given."""
    return tuple(point for point in REPORTS if getattr(readers, point.reader) is not None)


def r_id(point: ReportPoint, resource_id: str) -> str:
    """The rID of ``point`` for the site with OpenADR resource id ``resource_id``."""
    return f"{resource_id}-{point.source}"


def measurement(point: ReportPoint) -> objects.Measurement | None:
    """openleadr's measurement for ``point``, a copy: openleadr would otherwise change the shared
    ``enums.MEASUREMENTS`` entry for the whole process when it sets the scale."""
    if point.measurement is None:
        return None
    known = getattr(enums.MEASUREMENTS, point.measurement, None)
    if isinstance(known, objects.Measurement):
        return replace(known, scale=point.scale)
    return objects.Measurement(
        name="customUnit", description=point.measurement, unit=point.unit, scale=point.scale
    )


def sampling_rate(point: ReportPoint, interval: timedelta) -> objects.SamplingRate:
    """The sampling rates offered for ``point``: from the report interval to its slowest."""
    slowest = interval
    if point.slowest_sampling_s is not None:
        slowest = max(interval, timedelta(seconds=point.slowest_sampling_s))
    return objects.SamplingRate(min_period=interval, max_period=slowest, on_change=False)


# -- readings -------------------------------------------------------------------------------


def _power(readers: Readers, site_id: str, now: datetime) -> list[Reading]:
    value = readers.power_kw(site_id)
    return [] if value is None else [(now, float(value))]


def _status(readers: Readers, site_id: str, now: datetime) -> list[Reading]:
    status = None if readers.status is None else readers.status(site_id)
    return [] if status is None else [(now, status)]


def _offer(field: Literal["shed_kw", "absorb_kw", "notice_s"]) -> _Read:
    def read(readers: Readers, site_id: str, now: datetime) -> list[Reading]:
        offers = () if readers.offers is None else readers.offers(site_id)
        return [
            (offer.interval_start_at, float(getattr(offer, field)))
            for offer in offers
            if offer.interval_end_at > now
        ]

    return read


_Read = Callable[[Readers, str, datetime], list[Reading]]
READINGS: Mapping[ReportSource, _Read] = {
    "power_kw": _power,
    "status": _status,
    "shed_kw": _offer("shed_kw"),
    "absorb_kw": _offer("absorb_kw"),
    "notice_s": _offer("notice_s"),
}
"""How each source's readings are taken: (readers, site id, now) -> [(at, value)]."""


def read(point: ReportPoint, readers: Readers, site_id: str, now: datetime) -> list[Reading]:
    """The readings of ``point`` for one site; empty when unknown."""
    return READINGS[point.source](readers, site_id, now)


# -- openleadr's client: what this module changes ----------------------------------------


class OutgoingReports(asyncio.Queue[Any]):
    """openleadr's outgoing report queue: gives readings their duration, and drops reports
    without a single reading (the openleadr VTN answers them with HTTP 500).

    durations: how long the readings of each rID hold
    """

    def __init__(self, durations: Mapping[str, timedelta]) -> None:
        super().__init__()
        self._durations = dict(durations)

    async def put(self, item: Any) -> None:
        intervals = getattr(item, "intervals", None)
        if not intervals:
            logger.debug("not sending report %s: no readings", getattr(item, "report_name", "?"))
            return
        for interval in intervals:
            duration = self._durations.get(interval.report_payload.r_id)
            if duration is not None and interval.duration is None:
                interval.duration = duration
        await super().put(item)


def own_points_only(client: Any) -> None:
    """Make each report request of ``client`` poll only its own report's points.

    openleadr's ``create_report`` gives every request of one ``oadrCreateReport`` the same
    list of rIDs; its report jobs then look up the other reports' points and log "No
    callback found" for each, every cycle.
    """
    create_report = client.create_report

    async def create_report_then_split(response_payload: Any) -> Any:
        result = await create_report(response_payload)
        for request in client.report_requests or ():
            specifier = request["report_specifier_id"]
            request["r_ids"] = [
                r for r in request["r_ids"] if (specifier, r) in client.report_callbacks
            ]
        return result

    client.create_report = create_report_then_split


STATUS_TEMPLATE_NAME = "dr-gateway/oadrUpdateReport.xml"
"""The name :data:`STATUS_TEMPLATE` has in openleadr's template environment."""
STATUS_TEMPLATE = """\
<oadr:oadrSignedObject xmlns:oadr="http://openadr.org/oadr-2.0b/2012/07" \
xmlns:pyld="http://docs.oasis-open.org/ns/energyinterop/201110/payloads" oadr:Id="oadrSignedObject">
<oadr:oadrUpdateReport ei:schemaVersion="2.0b" \
xmlns:ei="http://docs.oasis-open.org/ns/energyinterop/201110">
<pyld:requestID>{{ request_id }}</pyld:requestID>
{% for report in reports %}
<oadr:oadrReport xmlns:xcal="urn:ietf:params:xml:ns:icalendar-2.0" \
xmlns:strm="urn:ietf:params:xml:ns:icalendar-2.0:stream">
{% if report.dtstart %}
<xcal:dtstart><xcal:date-time>{{ report.dtstart|datetimeformat }}</xcal:date-time></xcal:dtstart>
{% endif %}
<strm:intervals>
{% for interval in report.intervals %}
<ei:interval>
<xcal:dtstart><xcal:date-time>{{ interval.dtstart|datetimeformat }}</xcal:date-time></xcal:dtstart>
{% if interval.duration %}
<xcal:duration>
<xcal:duration>{{ interval.duration|timedeltaformat }}</xcal:duration>
</xcal:duration>
{% endif %}
<oadr:oadrReportPayload>
<ei:rID>{{ interval.report_payload.r_id }}</ei:rID>
{% set value = interval.report_payload.value %}
{% if value.online is defined %}
<oadr:oadrPayloadResourceStatus>
<oadr:oadrOnline>{{ value.online|booleanformat }}</oadr:oadrOnline>
<oadr:oadrManualOverride>{{ value.manual_override|booleanformat }}</oadr:oadrManualOverride>
</oadr:oadrPayloadResourceStatus>
{% else %}
<ei:payloadFloat><ei:value>{{ value }}</ei:value></ei:payloadFloat>
{% endif %}
</oadr:oadrReportPayload>
</ei:interval>
{% endfor %}
</strm:intervals>
<ei:eiReportID>{{ report_ids[loop.index0] }}</ei:eiReportID>
<ei:reportRequestID>{{ report.report_request_id }}</ei:reportRequestID>
<ei:reportSpecifierID>{{ report.report_specifier_id }}</ei:reportSpecifierID>
<ei:reportName>{{ report.report_name }}</ei:reportName>
<ei:createdDateTime>{{ report.created_date_time|datetimeformat }}</ei:createdDateTime>
</oadr:oadrReport>
{% endfor %}
{% if ven_id %}<ei:venID>{{ ven_id }}</ei:venID>{% endif %}
</oadr:oadrUpdateReport>
</oadr:oadrSignedObject>
"""
"""An ``oadrUpdateReport`` whose status readings are ``oadrPayloadResourceStatus``."""


def _install_status_template() -> None:
    """Add :data:`STATUS_TEMPLATE` to openleadr's template environment (once; no template of
    openleadr's is replaced: its own loader is asked first)."""
    environment = openleadr_messaging.TEMPLATES
    ours = jinja2.DictLoader({STATUS_TEMPLATE_NAME: STATUS_TEMPLATE})
    loader = environment.loader
    if isinstance(loader, jinja2.ChoiceLoader) and ours.mapping.keys() <= set(
        loader.list_templates()
    ):
        return
    environment.loader = jinja2.ChoiceLoader([loader, ours] if loader is not None else [ours])


def _carries_status(payload: Mapping[str, Any]) -> bool:
    return any(
        isinstance(interval.report_payload.value, ResourceStatus)
        for report in payload.get("reports") or ()
        for interval in report.intervals or ()
    )


def render_status_payloads(client: Any) -> None:
    """Render ``client``'s update reports that carry status readings with
    :data:`STATUS_TEMPLATE`; openleadr then signs them as usual (with TLS)."""
    _install_status_template()
    create_message = client._create_message

    def create(message_type: str, **payload: Any) -> Any:
        if message_type == "oadrUpdateReport" and _carries_status(payload):
            template = STATUS_TEMPLATE_NAME.removesuffix(".xml")
            report_ids = [uuid.uuid4().hex for _ in payload.get("reports") or ()]
            return create_message(template, report_ids=report_ids, **payload)
        return create_message(message_type, **payload)

    client._create_message = create


# -- the reports of one openleadr client ----------------------------------------------------


def report_granularity(interval_s: float) -> timedelta:
    """The report sampling rate; openleadr schedules reports with cron (``utils.cron_config``),
    which needs it to divide a minute, an hour or a day (pitfall 8): checked up front."""
    if not is_report_interval(interval_s):
        raise ConfigError(f"report_interval_s = {interval_s}: expected {REPORT_INTERVAL_RULE}")
    return timedelta(seconds=interval_s)


def offer(
    client: Any,
    sites: Sequence[SiteSettings],
    readers: Readers,
    granularity: timedelta,
    clock: Clock,
) -> None:
    """Offer on a new openleadr ``client`` every point of :func:`offered` for every site in
    ``sites`` at the sampling rate ``granularity``, with this module's changes to openleadr's
    reporting; openleadr registers them with the VTN when it starts. Readings are stamped
    with ``clock``."""
    points = offered(readers)
    client.pending_reports = OutgoingReports(
        {
            r_id(point, site.openadr_resource_id): timedelta(seconds=point.reading_duration_s)
            for site in sites
            for point in points
            if point.reading_duration_s is not None
        }
    )
    own_points_only(client)
    render_status_payloads(client)
    for site in sites:
        for point in points:
            client.add_report(
                callback=partial(_read_for_job, point, readers, site.id, clock),
                resource_id=site.openadr_resource_id,
                measurement=measurement(point),
                unit=point.unit,
                scale=point.scale,
                report_name=point.report_name,
                report_type=point.report_type,
                reading_type=point.reading_type,
                report_specifier_id=point.report_specifier_id,
                r_id=r_id(point, site.openadr_resource_id),
                sampling_rate=sampling_rate(point, granularity),
                report_duration=granularity,
            )


def _read_for_job(
    point: ReportPoint, readers: Readers, site_id: str, clock: Clock
) -> list[Reading]:
    """The readings for openleadr's report job; none when the value is unknown."""
    try:
        return read(point, readers, site_id, clock.now())
    except Exception:  # a report job is a task boundary inside openleadr's scheduler
        logger.exception("reading %s of site %s failed", point.source, site_id)
        return []

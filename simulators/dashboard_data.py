"""A small fleet's history in the gateway's database, for the dashboard to show.

Two sites (alpha online, beta offline after two polls) with their ledger rows, three
migrations (completed, aborted, in flight) and two events (the first changed from optIn to
optOut), stored by the gateway's own writers. The dashboard's tests, the web API's contract
test and the HTTP fuzzer (:mod:`simulators.http_fuzz`) serve this data, so that every answer
has content to check.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from gateway import fleet
from gateway.db import unit_of_work
from gateway.events import DrEvent, EventInterval, EventSignal, EventTarget, OptDecision
from gateway.settings import Settings, parse_settings
from gateway.sites.records import JobStatus, SiteStatus
from gateway.ven import store as event_store
from models import Migration

WEB_TOKEN = "web-test-token-abcdefghijklmnop"
"""The dashboard's bearer token in :func:`dashboard_settings`."""
FIRST_POLL_AT = datetime(2027, 6, 21, 10, 0, tzinfo=UTC)
"""The first of the three polls the data holds, 300 s apart; the events are a day later."""


def dashboard_settings(database_url: str = "sqlite://") -> Settings:
    """The daemon's settings for the data: VTN ``utility`` serving sites alpha and beta (8 GPUs,
    6 kW, PUE 1.2; no controller answers), the dashboard on an OS-assigned port with
    :data:`WEB_TOKEN`."""
    return parse_settings(
        {
            "database": {"url": database_url},
            "vtn": [
                {
                    "id": "utility",
                    "url": "http://127.0.0.1:9/OpenADR2/Simple/2.0b",
                    "ven_name": "web-test",
                }
            ],
            "site": [
                {
                    "id": site_id,
                    "gpus_total": 8,
                    "it_power_max_kw": 6.0,
                    "pue": 1.2,
                    "wan_bandwidth_gbps": 10.0,
                    "controller_url": f"http://127.0.0.1:9/{site_id}",
                    "controller_token": "controller-token",
                    "vtn": "utility",
                }
                for site_id in ("alpha", "beta")
            ],
            "web": {"enabled": True, "port": 0, "token": WEB_TOKEN, "refresh_s": 1.5},
        },
        "test",
    )


def _status(site_id: str, at: datetime, it_kw: float, renewable_kw: float, job: str) -> SiteStatus:
    return SiteStatus(
        site_id=site_id,
        at=at,
        gpus_total=8,
        gpus_free=6,
        gpus_reserved=0,
        it_power_kw=it_kw,
        renewable_kw=renewable_kw,
        forecast_step_s=900.0,
        renewable_forecast_kw=(),
        jobs=(JobStatus(job, 2, 1.3, 4.0, 50.0, True, 1, "running"),),
    )


def _event(event_id: str, modification: int, start_at: datetime, *targets: str) -> DrEvent:
    return DrEvent(
        vtn_id="utility",
        event_id=event_id,
        modification_number=modification,
        status="far",
        market_context="http://utility.example/dr",
        start_at=start_at,
        duration_s=3600.0,
        signals=(
            EventSignal("sig-0", "LOAD_DISPATCH", "delta", (EventInterval(0, 3600.0, -1.0),)),
        ),
        targets=tuple(EventTarget("resource_id", t) for t in targets),
    )


def migration_row(migration_id: str, job_id: str, state: str, at: datetime) -> Migration:
    """A migration of ``job_id`` from alpha to beta planned ``at``, with the timestamps,
    figures and error of a migration in ``state`` (completed, aborted or one in flight)."""
    row = Migration(
        id=migration_id,
        job_id=job_id,
        source_site_id="alpha",
        target_site_id="beta",
        state=state,
        reason="test move",
        checkpoint_gb=4.0,
        expected_s=60.0,
        expected_kwh=0.05,
        attempts=1,
        planned_at=at,
        updated_at=at,
    )
    row.target_reserved_at = at
    if state != "aborted":
        row.checkpointing_at = at + timedelta(seconds=1)
        row.transferring_at = at + timedelta(seconds=2)
    if state == "completed":
        row.restoring_at = at + timedelta(seconds=3)
        row.completed_at = at + timedelta(seconds=4)
        row.downtime_s = 3.0
        row.migration_kwh = 0.04
    if state == "aborted":
        row.aborted_at = at + timedelta(seconds=5)
        row.error = "checkpoint refused"
    return row


def seed_dashboard(sessions: sessionmaker[Session], settings: Settings) -> None:
    """Two sites (alpha online, beta offline after two polls), ledger rows, three migrations
    (completed, aborted, transferring), two events (the first changed from optIn to optOut)."""
    alpha, beta = settings.site
    with unit_of_work(sessions) as session:
        fleet.sync_sites(session, settings.site, FIRST_POLL_AT)
    for step in range(3):
        at = FIRST_POLL_AT + timedelta(seconds=300 * step)
        with unit_of_work(sessions) as session:
            fleet.record_status(session, alpha, _status("alpha", at, 2.0, 5.0, "job-a"), at)
            if step < 2:
                fleet.record_status(session, beta, _status("beta", at, 1.0, 0.5, "job-b"), at)
            else:
                fleet.mark_offline(session, "beta", at)
    with unit_of_work(sessions) as session:
        session.add(migration_row("m-completed", "job-a", "completed", FIRST_POLL_AT))
        session.add(
            migration_row("m-aborted", "job-b", "aborted", FIRST_POLL_AT + timedelta(seconds=60))
        )
        session.add(
            migration_row(
                "m-flying", "job-b", "transferring", FIRST_POLL_AT + timedelta(seconds=120)
            )
        )
    with unit_of_work(sessions) as session:
        day = FIRST_POLL_AT + timedelta(days=1)
        first, _ = event_store.save_event(session, _event("EVT-1", 0, day, "alpha"), FIRST_POLL_AT)
        event_store.save_response(
            session, first, OptDecision("optIn", "alpha: shed"), FIRST_POLL_AT
        )
        changed, _ = event_store.save_event(
            session, _event("EVT-1", 1, day, "alpha"), FIRST_POLL_AT
        )
        event_store.save_response(
            session, changed, OptDecision("optOut", "plan changed"), FIRST_POLL_AT
        )
        second, _ = event_store.save_event(
            session, _event("EVT-2", 0, day + timedelta(days=1)), FIRST_POLL_AT
        )
        event_store.save_response(
            session, second, OptDecision("optIn", "fleet: shed"), FIRST_POLL_AT
        )

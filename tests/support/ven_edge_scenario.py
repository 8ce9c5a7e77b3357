"""Every hostile form of :mod:`tests.support.hostile_xml` sent to a real VEN, in a process of
its own.

``python -m tests.support.ven_edge_scenario DATABASE_URL`` starts a scripted VTN on loopback
(:class:`simulators.scripted_vtn.ScriptedVtn`) and a :class:`gateway.ven.client.VenConnection`
with ``max_message_size_bytes`` = :data:`tests.support.hostile_xml.OVERSIZE_CAP_BYTES` on a new
database (the models' tables: ``tests/integration/test_alembic_schema.py`` shows the migrations
build the same), then for each form: the VTN answers one poll with the form (event id
``EVT-<form>``), then the next poll with a valid distribution of ``NEXT-<form>``. It prints one
JSON object: per form, whether the VEN's poll returned and the connection stayed up, which
event rows were stored, the form's refusal count in ``/metrics`` before and after, and the
answers the VTN received to the valid event; exit status 0.

It runs in a subprocess (``tests/system/test_ven_inbound.py``) because the entity forms crash
the interpreter (SIGSEGV in libxml2) should anything parse them with openleadr's schema-bound
parser: a gap in the edge then fails one test instead of taking pytest down.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock
from gateway.db import make_engine, make_session_factory, unit_of_work
from gateway.settings_vtn import VtnSettings
from gateway.ven.client import VenConnection
from gateway.web.metrics import make_registry
from models import Base
from models import event as rows
from simulators.scripted_vtn import ScriptedVtn, event_dict
from tests.support.hostile_xml import FORMS, OVERSIZE_CAP_BYTES
from tests.support.ven import VTN_ID, Planner, site

POLL_S = 3600
"""The VTN asks for an hourly poll: the scenario polls itself, one message each."""


def refusals_in_metrics(sessions: sessionmaker[Session]) -> dict[str, float]:
    """``dr_gateway_inbound_refusals_total`` of :data:`VTN_ID` by reason, as scraped."""
    text = generate_latest(make_registry(sessions)).decode()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "dr_gateway_inbound_refusals"
        for sample in family.samples
        if sample.labels.get("vtn_id") == VTN_ID and sample.name.endswith("_total")
    }


def stored_event_ids(sessions: sessionmaker[Session]) -> list[str]:
    with unit_of_work(sessions) as session:
        return sorted(session.scalars(select(rows.Event.event_id).distinct()))


async def scenario(database_url: str) -> dict[str, Any]:
    engine = make_engine(database_url)
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    vtn = ScriptedVtn(poll_interval_s=POLL_S)
    await vtn.start()
    clock = ManualClock(datetime.now(UTC))
    connection = VenConnection(
        VtnSettings(
            id=VTN_ID,
            url=vtn.url,
            ven_name="dr-gateway-edge",
            max_message_size_bytes=OVERSIZE_CAP_BYTES,
        ),
        (site("site-a"),),
        clock,
        sessions,
        Planner(),
        lambda site_id: None,
        report_interval_s=60,
    )
    report: dict[str, Any] = {}
    try:
        await connection.start()
        for name, (build, reason) in FORMS.items():
            start_at = clock.now() + timedelta(hours=2)
            before = refusals_in_metrics(sessions).get(reason, 0.0)
            vtn.send_raw(build(f"EVT-{name}", start_at))
            polled = True
            try:
                await connection._client._poll()
            except Exception as exc:  # recorded: the parent test fails on it
                polled = False
                report.setdefault("errors", []).append(f"{name}: {type(exc).__name__}: {exc}")
            up_after_form = connection.available
            await connection.settled()  # the refusal is counted by a task of its own
            after = refusals_in_metrics(sessions).get(reason, 0.0)
            next_id = f"NEXT-{name}"
            vtn.distribute([event_dict(next_id, start_at=start_at)])
            await connection._client._poll()
            report[name] = {
                "polled": polled,
                "up": up_after_form and connection.available,
                "queue_left": len(vtn.queue),
                "stored": [e for e in stored_event_ids(sessions) if e.endswith(name)],
                "counted": after - before,
                "next_answers": [(r.opt_type, r.response_code) for r in vtn.responses_to(next_id)],
            }
    finally:
        await connection.stop()
        await vtn.stop()
        engine.dispose()
    return report


def main(argv: list[str]) -> int:
    report = asyncio.run(scenario(argv[1]))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

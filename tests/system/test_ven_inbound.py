"""The VEN's edge (``gateway/ven/inbound.py``): no DTD, entity, oversized or empty answer of a
VTN reaches an XML parser, the VEN survives each and answers the next valid distribution.

The forms go to a real VEN over loopback in a subprocess (``tests/support/ven_edge_scenario.py``):
should the edge let an entity through, openleadr's schema-bound parser would crash that
process (SIGSEGV), not pytest. ``docs/conformance.md`` ("The VEN's edge") lists the rules.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from openleadr.messaging import validate_xml_schema
from sqlalchemy.orm import Session, sessionmaker

from gateway.clock import ManualClock
from gateway.ven import inbound, parsing, refusals
from gateway.web import data
from tests.support.hostile_xml import FORMS, distribution

ROOT = Path(__file__).resolve().parents[2]
SCENARIO_TIMEOUT_S = 120.0
"""Hang guard of the subprocess (it takes about 10 s)."""
T0 = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def edge_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str]:
    """The scenario's exit status, its report and its stderr (one run for the module)."""
    database = tmp_path_factory.mktemp("edge") / "edge.db"
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.ven_edge_scenario", f"sqlite:///{database}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        check=False,
    )
    report = json.loads(done.stdout) if done.returncode == 0 and done.stdout else {}
    return done.returncode, report, done.stderr


def test_the_vens_process_survives_every_form(edge_run: tuple[int, dict[str, Any], str]) -> None:
    returncode, report, stderr = edge_run
    assert returncode == 0, f"the VEN's process ended with {returncode}:\n{stderr[-3000:]}"
    assert "errors" not in report
    assert set(report) == set(FORMS)
    assert "Traceback" not in stderr


@pytest.mark.parametrize("form", list(FORMS))
def test_each_form_is_refused_counted_and_the_next_distribution_answered(
    edge_run: tuple[int, dict[str, Any], str], form: str
) -> None:
    returncode, report, _stderr = edge_run
    assert returncode == 0
    outcome = report[form]
    assert outcome["polled"], "the poll that fetched the form returned normally"
    assert outcome["up"], "the connection stayed registered"
    assert outcome["queue_left"] == 0, "the VEN fetched both messages"
    assert f"EVT-{form}" not in outcome["stored"], "nothing of the refused message is stored"
    assert f"NEXT-{form}" in outcome["stored"]
    assert outcome["counted"] == 1.0, "dr_gateway_inbound_refusals_total grew by one"
    assert outcome["next_answers"] == [["optIn", 200]]


# -- the scan, form by form ---------------------------------------------------------------


@pytest.mark.parametrize("form", [name for name in FORMS if name != "oversize"])
def test_scan_refuses_each_form_with_its_reason(form: str) -> None:
    build, reason = FORMS[form]
    refusal = inbound.scan(build("EVT-1", T0).encode())
    assert refusal is not None and refusal.reason == reason


def test_oversize_is_refused_while_reading_not_by_the_scan() -> None:
    build, _reason = FORMS["oversize"]
    assert inbound.scan(build("EVT-1", T0).encode()) is None  # valid XML, only too long


ACCEPTED = {
    "plain distribution": distribution("EVT-1", T0),
    "predefined and character references": distribution("A&amp;B&lt;C&#60;&#x3C;&quot;", T0),
    "a comment and CDATA": distribution("EVT-1", T0).replace(
        "<ei:vtnID>", "<!-- note --><ei:vtnID>"
    ),
    "UTF-8 byte-order mark": "\ufeff" + distribution("EVT-1", T0),
    "non-ASCII id": distribution("ÉVT-ü-东", T0),
}


@pytest.mark.parametrize("body", ACCEPTED.values(), ids=list(ACCEPTED))
def test_scan_lets_well_formed_messages_without_a_dtd_through(body: str) -> None:
    content = body.encode()
    assert inbound.scan(content) is None
    parsing.validate(content, None)  # and openleadr's schema accepts them


REFUSED_ENCODINGS = {
    "UTF-16 with byte-order mark": distribution("EVT-1", T0).encode("utf-16"),
    "UTF-16 without byte-order mark": distribution("EVT-1", T0).encode("utf-16-le"),
    "declared UTF-7": distribution("EVT-1", T0)
    .replace('encoding="utf-8"', 'encoding="UTF-7"')
    .encode(),
    "not UTF-8": distribution("EVT-1", T0).replace("EVT-1", "EVT-\xe9").encode("latin-1"),
    "unclosed declaration": b'<?xml version="1.0"' + b" " * 2000,
}


@pytest.mark.parametrize("content", REFUSED_ENCODINGS.values(), ids=list(REFUSED_ENCODINGS))
def test_scan_refuses_encodings_it_cannot_read_byte_by_byte(content: bytes) -> None:
    refusal = inbound.scan(content)
    assert refusal is not None and refusal.reason == "encoding"


def test_latin1_declared_is_scanned_as_single_bytes() -> None:
    body = distribution("EVT-\xe9", T0).replace('encoding="utf-8"', 'encoding="ISO-8859-1"')
    content = body.encode("latin-1")
    assert inbound.scan(content) is None
    validate_xml_schema(content)


# -- logging and counting ------------------------------------------------------------------


async def test_refusals_are_logged_once_per_vtn_and_counted_in_the_database(
    session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(T0)

    async def record(vtn_id: str, reason: inbound.Reason, refused: int) -> None:
        await refusals.count(session_factory, clock, vtn_id, reason, refused)

    log_a = inbound.RefusalLog("vtn-a", record)
    log_b = inbound.RefusalLog("vtn-b", record)
    empty = inbound.Refusal("empty", "the body is empty")
    dtd = inbound.Refusal("dtd", "a declaration")
    with caplog.at_level(logging.DEBUG, logger="gateway.ven.inbound"):
        for refusal in (empty, dtd, empty):
            await log_a.refused("OadrPoll", refusal)
        await log_b.refused("EiEvent", dtd)
        await log_a.settled()
        await log_b.settled()
    warnings = [(r.levelno, r.getMessage()[:26]) for r in caplog.records if r.levelno >= 30]
    assert warnings == [
        (logging.WARNING, "VTN vtn-a: refused its ans"),
        (logging.WARNING, "VTN vtn-b: refused its ans"),
    ]
    assert sum(1 for r in caplog.records if r.levelno == logging.DEBUG) == 2
    with session_factory() as session:
        assert data.inbound_refusals(session) == {
            ("vtn-a", "empty"): 2,
            ("vtn-a", "dtd"): 1,
            ("vtn-b", "dtd"): 1,
        }


async def test_a_refusal_that_cannot_be_counted_does_not_stop_the_ven(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(vtn_id: str, reason: inbound.Reason, refused: int) -> None:
        raise OSError("database gone")

    log = inbound.RefusalLog("vtn-a", broken)
    await log.refused("OadrPoll", inbound.Refusal("empty", "the body is empty"))
    await log.settled()
    assert log.counts["empty"] == 1
    assert any("could not count 1 refusal(s)" in r.getMessage() for r in caplog.records)

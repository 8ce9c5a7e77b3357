"""The delivery views report the opt the VEN committed to, not a cancellation's acknowledgement.

An ``oadrCreatedEvent`` answering a cancellation says ``optIn`` (OpenADR 2.0b: the VEN
acknowledges it); it is no promise to deliver. Revision 0006's ``event_interval_delivery`` and
``event_delivery`` took the opt of the latest answer to the event's latest version, so an
event the VEN opted out of and the VTN then cancelled was reported opted in. From this
revision their ``opt`` is the latest answer to a version of the event up to the row's own
that is not a cancellation, and the cancellation's answer only where no other exists (an event
cancelled before the VEN answered it).

The views are 0006's with that one CTE (``answers``) replaced; 0006's SQL is loaded from its
file, which does not change once released.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 01:00:00.000000
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision_0006() -> ModuleType:
    path = Path(__file__).with_name("0006_programme_baselines.py")
    spec = importlib.util.spec_from_file_location("_dr_gateway_revision_0006", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R0006 = _revision_0006()

LATEST_ANSWER = """
    answers AS (
        SELECT r.event_pk, r.opt
        FROM event_responses AS r
        WHERE NOT EXISTS (
            SELECT 1
            FROM event_responses AS later
            WHERE later.event_pk = r.event_pk
            AND (
                later.responded_at > r.responded_at
                OR (later.responded_at = r.responded_at AND later.id > r.id)
            )
        )
    )"""
"""0006's CTE: the latest answer to the row's own version."""

COMMITTED_ANSWER = """
    answers AS (
        SELECT v.id AS event_pk, r.opt
        FROM events AS v
        JOIN events AS a
            ON a.vtn_id = v.vtn_id
            AND a.event_id = v.event_id
            AND a.modification_number <= v.modification_number
        JOIN event_responses AS r ON r.event_pk = a.id
        WHERE NOT EXISTS (
            SELECT 1
            FROM events AS a2
            JOIN event_responses AS later ON later.event_pk = a2.id
            WHERE a2.vtn_id = v.vtn_id
            AND a2.event_id = v.event_id
            AND a2.modification_number <= v.modification_number
            AND (
                CASE WHEN a2.status = 'cancelled' THEN 0 ELSE 1 END,
                later.responded_at,
                later.id
            ) > (
                CASE WHEN a.status = 'cancelled' THEN 0 ELSE 1 END,
                r.responded_at,
                r.id
            )
        )
    )"""
"""The answer an event's row reports: among the answers to its versions up to this one, those
to a version that is not a cancellation rank first, then the latest."""


def _committed(select_sql: str) -> str:
    if select_sql.count(LATEST_ANSWER) != 1:
        raise RuntimeError("revision 0006's answers CTE is not where revision 0008 expects it")
    return select_sql.replace(LATEST_ANSWER, COMMITTED_ANSWER)


def _recreate(committed: bool) -> None:
    dialect: Any = R0006.DIALECTS[op.get_bind().dialect.name]
    for name, _select_sql in reversed(R0006.VIEWS):
        op.execute(f"DROP VIEW {name}")
    for name, select_sql in R0006.VIEWS:
        sql = select_sql(dialect)
        op.execute(f"CREATE VIEW {name} AS {_committed(sql) if committed else sql}")


def upgrade() -> None:
    _recreate(committed=True)


def downgrade() -> None:
    _recreate(committed=False)

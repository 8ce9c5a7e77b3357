"""Counts of the messages the VEN refused at its edge, by VTN and reason.

``inbound_refusals``: one row per (VTN, reason) with the number of messages refused before
any XML parser saw them (a DTD or entity declaration, an entity reference, a body over the
size cap, an empty body, an encoding the edge cannot scan; ``gateway/ven/inbound.py``) and
when the first and the last came. ``/metrics`` serves them as
``dr_gateway_inbound_refusals_total``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 07:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_refusals",
        sa.Column("vtn_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("vtn_id", "reason", name=op.f("pk_inbound_refusals")),
    )


def downgrade() -> None:
    op.drop_table("inbound_refusals")

"""Event semantics the VEN applies itself: the VEN id an event was sent to, the randomised
start, when a cancellation takes effect, implied cancels, and whether each answer was
required and sent.

Nullable columns (and one with a server default) added and dropped in place: no batch
rebuild, the reporting views stay as they are.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("ven_id", sa.String(length=128), nullable=True))
    op.add_column("events", sa.Column("start_offset_s", sa.Float(), nullable=True))
    op.add_column(
        "events",
        sa.Column("cancel_effective_at", models.base.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "events",
        sa.Column("implied_cancel_at", models.base.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "event_responses",
        sa.Column("required", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.add_column(
        "event_responses",
        sa.Column("sent_at", models.base.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35 or newer), not a batch rebuild: the
    # reporting views read both tables and would break a rebuild's rename step.
    for column in ("sent_at", "required"):
        op.drop_column("event_responses", column)
    for column in ("implied_cancel_at", "cancel_effective_at", "start_offset_s", "ven_id"):
        op.drop_column("events", column)

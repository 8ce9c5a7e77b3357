"""Site maintenance windows and their availability schedules (EiOpt): ``availability_windows``.

A new table that no reporting view reads: no batch rebuild, the views stay as they are.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "availability_windows",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("start_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("opt_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("vtn_id", sa.String(length=64), nullable=True),
        sa.Column("sent_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("response_description", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("cancelled_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancel_sent_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancel_response_code", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_availability_windows_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_availability_windows")),
        sa.UniqueConstraint("opt_id", name=op.f("uq_availability_windows_opt_id")),
    )
    op.create_index(
        op.f("ix_availability_windows_site_id"),
        "availability_windows",
        ["site_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_availability_windows_site_id"), table_name="availability_windows")
    op.drop_table("availability_windows")

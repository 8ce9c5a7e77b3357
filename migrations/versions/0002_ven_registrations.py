"""The VEN's registration with each VTN (``ven_registrations``).

A new table that no reporting view reads: no batch rebuild, the views stay as they are.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ven_registrations",
        sa.Column("vtn_id", sa.String(length=64), nullable=False),
        sa.Column("ven_id", sa.String(length=128), nullable=False),
        sa.Column("registration_id", sa.String(length=128), nullable=False),
        sa.Column("vtn_url", sa.String(length=512), nullable=False),
        sa.Column("registered_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("vtn_id", name=op.f("pk_ven_registrations")),
    )


def downgrade() -> None:
    op.drop_table("ven_registrations")

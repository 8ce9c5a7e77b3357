"""An interval's uid is text, as OpenADR 2.0b defines it.

``xcal:uid`` is an ``xs:string`` in the 2.0b schema (``uid`` of the iCalendar ``text`` type);
the column was an INTEGER, so a VTN's 60-digit (or any non-numeric) uid made storing the
event fail with a traceback and no answer. From this revision ``event_intervals.uid`` is a
VARCHAR(128) holding the text as sent; stored integers become their decimal text.

The column is replaced in place (add ``uid_text``, copy, drop ``uid``, rename), not by a batch
rebuild: the reporting views of 0005 and 0006 read ``event_intervals`` (never its uid) and
would break a rebuild's rename step. Plain ALTER TABLE ... DROP / RENAME COLUMN needs SQLite
3.35 or newer.

Downgrade keeps the uids that are whole numbers of at most nine digits (they fit the old
INTEGER column) and sets the others to null: they cannot be stored as integers.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FITS_INTEGER = {
    "sqlite": "uid NOT GLOB '*[^0-9]*' AND length(uid) BETWEEN 1 AND 9",
    "postgresql": "uid ~ '^[0-9]{1,9}$'",
}
"""A uid text that the old INTEGER column can hold, by dialect."""


def _replace_uid(new_type: sa.types.TypeEngine[object], copy_sql: str) -> None:
    op.add_column("event_intervals", sa.Column("uid_new", new_type, nullable=True))
    op.execute(f"UPDATE event_intervals SET uid_new = {copy_sql}")
    op.drop_column("event_intervals", "uid")
    op.execute("ALTER TABLE event_intervals RENAME COLUMN uid_new TO uid")


def upgrade() -> None:
    _replace_uid(sa.String(length=128), "CAST(uid AS VARCHAR(128))")


def downgrade() -> None:
    fits = _FITS_INTEGER[op.get_bind().dialect.name]
    _replace_uid(sa.Integer(), f"CASE WHEN {fits} THEN CAST(uid AS INTEGER) ELSE NULL END")

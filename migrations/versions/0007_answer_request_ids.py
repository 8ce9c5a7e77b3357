"""Answers remember the distribution they answer and what the planner predicted.

``event_responses.request_id``: the requestID of the ``oadrDistributeEvent`` an answer
answers (conformance rule 42: every answer to a distribution carries that distribution's
requestID, also when it goes out later in a separate message); null for answers stored
before this revision. ``event_responses.predicted_kw``: the planner's predicted deliverable
power at the facility meter when it answered [kW]; null when it predicted none.

Nullable columns added and dropped in place: no batch rebuild, so the reporting views of
0005 and 0006 that read ``event_responses`` stay as they are.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 21:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("event_responses", sa.Column("request_id", sa.String(length=128), nullable=True))
    op.add_column("event_responses", sa.Column("predicted_kw", sa.Float(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35 or newer), not a batch rebuild: the
    # reporting views read event_responses and would break a rebuild's rename step.
    for column in ("predicted_kw", "request_id"):
        op.drop_column("event_responses", column)

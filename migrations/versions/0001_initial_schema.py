"""Initial schema: the state tables and the reporting views.

The tables are what ``alembic revision --autogenerate`` produced from ``models`` (tidied by
ruff). The four reporting views (``site_energy``, ``site_migrations``, ``site_events`` and
``site_report``, documented in ``docs/views.md``) are plain SQL that runs unchanged on
SQLite and PostgreSQL; autogenerate does not compare views, so they never show up as drift.

SQLite caution for later revisions: a batch operation that rebuilds a table which a view
reads (sites, ledger, migrations, events, event_targets, event_responses) fails on the rename
step while the views exist. Such a revision must drop the views first and create them again
afterwards, with its own copy of their SQL.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 22:23:40.802992
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SITE_ENERGY_SQL = """
SELECT
    s.id AS site_id,
    COALESCE(SUM(l.load_kwh), 0.0) AS load_kwh,
    COALESCE(SUM(l.renewable_kwh), 0.0) AS renewable_kwh,
    COALESCE(SUM(l.renewable_used_kwh), 0.0) AS renewable_used_kwh,
    COALESCE(SUM(l.grid_kwh), 0.0) AS grid_kwh,
    COALESCE(SUM(l.curtailed_kwh), 0.0) AS curtailed_kwh,
    COALESCE(SUM(l.migration_kwh), 0.0) AS migration_kwh,
    SUM(l.renewable_used_kwh) / NULLIF(SUM(l.load_kwh), 0.0) AS renewable_share,
    MIN(l.interval_start_at) AS first_interval_at,
    MAX(l.interval_end_at) AS last_interval_at
FROM sites AS s
LEFT JOIN ledger AS l ON l.site_id = s.id
GROUP BY s.id
"""
"""Energy per site over the whole ledger [kWh]; renewable_share is NULL without load."""

SITE_MIGRATIONS_SQL = """
SELECT
    s.id AS site_id,
    COUNT(CASE WHEN m.source_site_id = s.id THEN 1 END) AS migrations_out,
    COUNT(CASE WHEN m.target_site_id = s.id THEN 1 END) AS migrations_in,
    COUNT(CASE WHEN m.source_site_id = s.id AND m.state = 'completed' THEN 1 END)
        AS completed_out,
    COUNT(CASE WHEN m.source_site_id = s.id AND m.state = 'aborted' THEN 1 END)
        AS aborted_out,
    COUNT(CASE WHEN m.state NOT IN ('completed', 'aborted') THEN 1 END) AS in_flight,
    COALESCE(
        SUM(CASE WHEN m.source_site_id = s.id AND m.state = 'completed' THEN m.downtime_s END),
        0.0
    ) AS downtime_s,
    COALESCE(
        SUM(
            CASE WHEN m.source_site_id = s.id AND m.state = 'completed' THEN m.migration_kwh END
        ),
        0.0
    ) AS migration_kwh
FROM sites AS s
LEFT JOIN migrations AS m ON m.source_site_id = s.id OR m.target_site_id = s.id
GROUP BY s.id
"""
"""Migrations per site: counts as source and target, downtime [s] and energy [kWh] out."""

SITE_EVENTS_SQL = """
SELECT
    s.id AS site_id,
    COUNT(latest.id) AS events,
    COUNT(CASE WHEN answer.opt = 'optIn' THEN 1 END) AS opted_in,
    COUNT(CASE WHEN answer.opt = 'optOut' THEN 1 END) AS opted_out,
    COUNT(CASE WHEN latest.status = 'cancelled' THEN 1 END) AS cancelled
FROM sites AS s
LEFT JOIN (
    SELECT e.id, e.vtn_id, e.status
    FROM events AS e
    WHERE e.modification_number = (
        SELECT MAX(v.modification_number)
        FROM events AS v
        WHERE v.vtn_id = e.vtn_id AND v.event_id = e.event_id
    )
) AS latest
    ON latest.vtn_id = s.vtn_id
    AND (
        EXISTS (
            SELECT 1
            FROM event_targets AS t
            WHERE t.event_pk = latest.id AND t.kind = 'resource_id' AND t.value = s.resource_id
        )
        OR NOT EXISTS (
            SELECT 1
            FROM event_targets AS t
            WHERE t.event_pk = latest.id AND t.kind = 'resource_id'
        )
    )
LEFT JOIN (
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
) AS answer ON answer.event_pk = latest.id
GROUP BY s.id
"""
"""Demand-response events addressing each site, by the latest version of each event."""

SITE_REPORT_SQL = """
SELECT
    energy.site_id,
    energy.renewable_used_kwh,
    energy.grid_kwh,
    energy.curtailed_kwh,
    energy.load_kwh,
    energy.renewable_share,
    energy.migration_kwh,
    moves.migrations_out,
    moves.migrations_in,
    moves.completed_out AS completed_migrations,
    moves.downtime_s,
    dr.events,
    dr.opted_in,
    dr.opted_out
FROM site_energy AS energy
JOIN site_migrations AS moves ON moves.site_id = energy.site_id
JOIN site_events AS dr ON dr.site_id = energy.site_id
"""
"""One row per site: the operator's summary, joined from the three views above."""

VIEWS: tuple[tuple[str, str], ...] = (
    ("site_energy", SITE_ENERGY_SQL),
    ("site_migrations", SITE_MIGRATIONS_SQL),
    ("site_events", SITE_EVENTS_SQL),
    ("site_report", SITE_REPORT_SQL),
)
"""Every reporting view and its SELECT, in creation order (a view after those it reads)."""


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vtn_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("modification_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("market_context", sa.String(length=512), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("test_event", sa.Boolean(), nullable=False),
        sa.Column("response_required", sa.String(length=16), nullable=False),
        sa.Column("start_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("ramp_up_s", sa.Float(), nullable=True),
        sa.Column("start_after_s", sa.Float(), nullable=True),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("received_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint(
            "vtn_id",
            "event_id",
            "modification_number",
            name=op.f("uq_events_vtn_id_event_id_modification_number"),
        ),
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("gpus_total", sa.Integer(), nullable=False),
        sa.Column("it_power_max_kw", sa.Float(), nullable=False),
        sa.Column("pue", sa.Float(), nullable=False),
        sa.Column("wan_bandwidth_gbps", sa.Float(), nullable=False),
        sa.Column("controller_url", sa.String(length=512), nullable=False),
        sa.Column("vtn_id", sa.String(length=64), nullable=True),
        sa.Column("resource_id", sa.String(length=128), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("gpus_free", sa.Integer(), nullable=True),
        sa.Column("it_power_kw", sa.Float(), nullable=True),
        sa.Column("renewable_kw", sa.Float(), nullable=True),
        sa.Column("last_status_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
    )
    op.create_table(
        "event_responses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_pk", sa.Integer(), nullable=False),
        sa.Column("opt", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("response_code", sa.Integer(), nullable=False),
        sa.Column("responded_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_pk"],
            ["events.id"],
            name=op.f("fk_event_responses_event_pk_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_responses")),
    )
    with op.batch_alter_table("event_responses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_responses_event_pk"), ["event_pk"], unique=False)

    op.create_table(
        "event_signals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_pk", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("signal_id", sa.String(length=128), nullable=False),
        sa.Column("signal_name", sa.String(length=64), nullable=False),
        sa.Column("signal_type", sa.String(length=32), nullable=False),
        sa.Column("units", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_pk"],
            ["events.id"],
            name=op.f("fk_event_signals_event_pk_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_signals")),
    )
    with op.batch_alter_table("event_signals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_signals_event_pk"), ["event_pk"], unique=False)

    op.create_table(
        "event_targets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_pk"],
            ["events.id"],
            name=op.f("fk_event_targets_event_pk_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_targets")),
    )
    with op.batch_alter_table("event_targets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_targets_event_pk"), ["event_pk"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=True),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("power_kw", sa.Float(), nullable=False),
        sa.Column("checkpoint_gb", sa.Float(), nullable=False),
        sa.Column("work_remaining_gpu_h", sa.Float(), nullable=False),
        sa.Column("migratable", sa.Boolean(), nullable=False),
        sa.Column("flex_tier", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("first_seen_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("arrived_at_site_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_jobs_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_site_id"), ["site_id"], unique=False)

    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("interval_start_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("interval_end_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("load_kwh", sa.Float(), nullable=False),
        sa.Column("renewable_kwh", sa.Float(), nullable=False),
        sa.Column("renewable_used_kwh", sa.Float(), nullable=False),
        sa.Column("grid_kwh", sa.Float(), nullable=False),
        sa.Column("curtailed_kwh", sa.Float(), nullable=False),
        sa.Column("migration_kwh", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_ledger_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger")),
        sa.UniqueConstraint(
            "site_id", "interval_start_at", name=op.f("uq_ledger_site_id_interval_start_at")
        ),
    )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_interval_start_at", ["interval_start_at"], unique=False)

    op.create_table(
        "offers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("interval_start_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("interval_end_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("shed_kw", sa.Float(), nullable=False),
        sa.Column("absorb_kw", sa.Float(), nullable=False),
        sa.Column("notice_s", sa.Float(), nullable=False),
        sa.Column("computed_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_offers_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offers")),
        sa.UniqueConstraint(
            "site_id", "interval_start_at", name=op.f("uq_offers_site_id_interval_start_at")
        ),
    )
    op.create_table(
        "site_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("sampled_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("it_power_kw", sa.Float(), nullable=False),
        sa.Column("load_kw", sa.Float(), nullable=False),
        sa.Column("renewable_kw", sa.Float(), nullable=False),
        sa.Column("gpus_free", sa.Integer(), nullable=False),
        sa.Column("jobs_running", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.id"],
            name=op.f("fk_site_samples_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site_samples")),
        sa.UniqueConstraint(
            "site_id", "sampled_at", name=op.f("uq_site_samples_site_id_sampled_at")
        ),
    )
    with op.batch_alter_table("site_samples", schema=None) as batch_op:
        batch_op.create_index("ix_site_samples_sampled_at", ["sampled_at"], unique=False)

    op.create_table(
        "event_intervals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("signal_pk", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("uid", sa.Integer(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["signal_pk"],
            ["event_signals.id"],
            name=op.f("fk_event_intervals_signal_pk_event_signals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_intervals")),
    )
    with op.batch_alter_table("event_intervals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_event_intervals_signal_pk"), ["signal_pk"], unique=False
        )

    op.create_table(
        "migrations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("source_site_id", sa.String(length=64), nullable=False),
        sa.Column("target_site_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("event_ref", sa.String(length=256), nullable=True),
        sa.Column("checkpoint_gb", sa.Float(), nullable=False),
        sa.Column("expected_s", sa.Float(), nullable=False),
        sa.Column("expected_kwh", sa.Float(), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True),
        sa.Column("downtime_s", sa.Float(), nullable=True),
        sa.Column("migration_kwh", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("planned_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("target_reserved_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("checkpointing_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("transferring_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("restoring_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("aborted_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cleaned_up_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_migrations_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["source_site_id"], ["sites.id"], name=op.f("fk_migrations_source_site_id_sites")
        ),
        sa.ForeignKeyConstraint(
            ["target_site_id"], ["sites.id"], name=op.f("fk_migrations_target_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migrations")),
    )
    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_migrations_event_ref"), ["event_ref"], unique=False)
        batch_op.create_index(batch_op.f("ix_migrations_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_migrations_source_site_id"), ["source_site_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_migrations_state"), ["state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_migrations_target_site_id"), ["target_site_id"], unique=False
        )

    for name, select_sql in VIEWS:
        op.execute(f"CREATE VIEW {name} AS {select_sql}")


def downgrade() -> None:
    for name, _select_sql in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")

    with op.batch_alter_table("migrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_migrations_target_site_id"))
        batch_op.drop_index(batch_op.f("ix_migrations_state"))
        batch_op.drop_index(batch_op.f("ix_migrations_source_site_id"))
        batch_op.drop_index(batch_op.f("ix_migrations_job_id"))
        batch_op.drop_index(batch_op.f("ix_migrations_event_ref"))

    op.drop_table("migrations")
    with op.batch_alter_table("event_intervals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_intervals_signal_pk"))

    op.drop_table("event_intervals")
    with op.batch_alter_table("site_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_site_samples_sampled_at")

    op.drop_table("site_samples")
    op.drop_table("offers")
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_interval_start_at")

    op.drop_table("ledger")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_site_id"))

    op.drop_table("jobs")
    with op.batch_alter_table("event_targets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_targets_event_pk"))

    op.drop_table("event_targets")
    with op.batch_alter_table("event_signals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_signals_event_pk"))

    op.drop_table("event_signals")
    with op.batch_alter_table("event_responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_responses_event_pk"))

    op.drop_table("event_responses")
    op.drop_table("sites")
    op.drop_table("events")

"""Programme baselines: each event measured the way its programme's utility measures it.

Table ``programmes`` (market context, baseline method and parameters), written from
``[[programme]]`` when the daemon starts (``gateway.fleet.sync_programmes``); events join it by
market context, ``*`` taking any other, and a market context without a row gets the defaults.

Views (``docs/views.md``):

- ``event_interval_delivery`` (new): per event, site and interval of the event's first mapped
  signal that asks something, the requested, baseline, actual and delivered energy, with the
  programme's baseline method (``like-days``, ``meter-before-after``, ``hour-before``) read
  from the ledger (facility energy) pro rata;
- ``event_delivery`` (replaced): the same columns as revision 0005's, now the sums of the
  intervals above.

The baselines are the SQL twin of ``gateway/baselines.py``: the same rules on the same rows.
0005's dialect fragments (``_Sql``) and its ``event_delivery`` (for the downgrade) are loaded
from that revision's file, which does not change once released.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 21:00:00.000000
"""

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from alembic import op

import models

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision_0005() -> ModuleType:
    path = Path(__file__).with_name("0005_rollups_and_report_views.py")
    spec = importlib.util.spec_from_file_location("_dr_gateway_revision_0005", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R0005 = _revision_0005()
DIALECTS: dict[str, Any] = R0005.DIALECTS

LEDGER_ROW_LOOKBACK_S = 3600.0
"""A ledger row counts in a window when it starts at most this long before it
(``gateway.baselines.LEDGER_ROW_LOOKBACK_S``)."""

DEFAULTS = {
    "baseline_method": "'like-days'",
    "like_days": "10",
    "lookback_days": "45",
    "min_like_days": "5",
    "adjustment_window_s": "10800.0",
    "adjustment_gap_s": "3600.0",
    "adjustment_cap": "0.2",
    "meter_window_s": "900.0",
}
"""The baseline of an event whose market context has no programme row
(``gateway.baselines.BaselineParams``'s defaults)."""


def _least(a: str, b: str) -> str:
    return f"(CASE WHEN {a} < {b} THEN {a} ELSE {b} END)"


def _greatest(a: str, b: str) -> str:
    return f"(CASE WHEN {a} > {b} THEN {a} ELSE {b} END)"


def _weekend(day_s: str) -> str:
    """1 when the UTC day starting at ``day_s`` [s] is a Saturday or Sunday (1970-01-01 was a
    Thursday), else 0."""
    return f"(CASE WHEN ((CAST(({day_s}) / 86400 AS INTEGER) + 4) % 7) IN (0, 6) THEN 1 ELSE 0 END)"


def event_interval_delivery_sql(d: Any) -> str:
    """Per event, site and asking interval: requested, baseline, actual and delivered."""
    ls = d.epoch("l.interval_start_at")
    le = d.epoch("l.interval_end_at")
    overlap_s = f"({_least(le, 'sp.b_s')} - {_greatest(ls, 'sp.a_s')})"
    params = ",\n            ".join(
        f"COALESCE(pe.{name}, pa.{name}, {default}) AS {name}" for name, default in DEFAULTS.items()
    )
    return f"""
WITH
    windows AS (
        SELECT
            w.*,
            {d.floor_to("w.start_s", 86400)} AS day0_s,
            {_weekend(d.floor_to("w.start_s", 86400))} AS weekend
        FROM event_site_windows AS w
    ),
    params AS (
        SELECT
            w.event_pk,
            w.site_id,
            {params}
        FROM windows AS w
        LEFT JOIN programmes AS pe ON pe.market_context = w.market_context
        LEFT JOIN programmes AS pa ON pa.market_context = '*'
    ),
    first_signal AS (
        SELECT event_pk, MIN(signal_position) AS signal_position
        FROM event_site_intervals
        GROUP BY event_pk
    ),
    asked AS (
        SELECT
            i.event_pk,
            i.site_id,
            i.interval_position,
            i.ask,
            i.action,
            i.shed_fraction,
            i.power_kw,
            i.start_s,
            i.end_s,
            i.start_at,
            i.end_at,
            i.duration_s
        FROM event_site_intervals AS i
        JOIN first_signal AS f
            ON f.event_pk = i.event_pk AND f.signal_position = i.signal_position
        WHERE i.ask IS NOT NULL AND i.end_s IS NOT NULL AND i.end_s > i.start_s
    ),
    candidate_days AS (
        SELECT
            w.event_pk,
            w.site_id,
            {d.epoch("dr.period_start_at")} AS day_s,
            ROW_NUMBER() OVER (
                PARTITION BY w.event_pk, w.site_id ORDER BY dr.period_start_at DESC
            ) AS recency
        FROM windows AS w
        JOIN params AS p ON p.event_pk = w.event_pk AND p.site_id = w.site_id
        JOIN energy_rollup_day AS dr
            ON dr.site_id = w.site_id
            AND dr.period_start_at < {d.at("w.day0_s")}
            AND dr.period_start_at >= {d.at("w.day0_s - p.lookback_days * 86400.0")}
        WHERE p.baseline_method = 'like-days'
        AND {_weekend(d.epoch("dr.period_start_at"))} = w.weekend
        AND NOT EXISTS (
            SELECT 1
            FROM windows AS o
            WHERE o.site_id = w.site_id
            AND (o.stop_s IS NULL OR o.stop_s > o.start_s)
            AND o.start_s < {d.epoch("dr.period_start_at")} + 86400.0
            AND (o.stop_s IS NULL OR o.stop_s > {d.epoch("dr.period_start_at")})
        )
    ),
    like_days AS (
        SELECT c.event_pk, c.site_id, c.day_s
        FROM candidate_days AS c
        JOIN params AS p ON p.event_pk = c.event_pk AND p.site_id = c.site_id
        WHERE c.recency <= p.like_days
    ),
    day_counts AS (
        SELECT event_pk, site_id, COUNT(*) AS days
        FROM like_days
        GROUP BY event_pk, site_id
    ),
    spans AS (
        SELECT
            iv.event_pk, iv.site_id, 'like' AS purpose, iv.interval_position AS position,
            ld.day_s,
            iv.start_s - (w.day0_s - ld.day_s) AS a_s,
            iv.end_s - (w.day0_s - ld.day_s) AS b_s
        FROM asked AS iv
        JOIN windows AS w ON w.event_pk = iv.event_pk AND w.site_id = iv.site_id
        JOIN like_days AS ld ON ld.event_pk = iv.event_pk AND ld.site_id = iv.site_id
        UNION ALL
        SELECT
            w.event_pk, w.site_id, 'like_adjustment', -1, ld.day_s,
            w.start_s - p.adjustment_gap_s - p.adjustment_window_s - (w.day0_s - ld.day_s),
            w.start_s - p.adjustment_gap_s - (w.day0_s - ld.day_s)
        FROM windows AS w
        JOIN params AS p ON p.event_pk = w.event_pk AND p.site_id = w.site_id
        JOIN like_days AS ld ON ld.event_pk = w.event_pk AND ld.site_id = w.site_id
        WHERE p.adjustment_window_s > 0
        UNION ALL
        SELECT
            w.event_pk, w.site_id, 'adjustment', -1, w.day0_s,
            w.start_s - p.adjustment_gap_s - p.adjustment_window_s,
            w.start_s - p.adjustment_gap_s
        FROM windows AS w
        JOIN params AS p ON p.event_pk = w.event_pk AND p.site_id = w.site_id
        WHERE p.baseline_method = 'like-days' AND p.adjustment_window_s > 0
        UNION ALL
        SELECT
            w.event_pk, w.site_id, 'meter', -1, w.day0_s,
            w.start_s - p.meter_window_s, w.start_s
        FROM windows AS w
        JOIN params AS p ON p.event_pk = w.event_pk AND p.site_id = w.site_id
        WHERE p.baseline_method IN ('like-days', 'meter-before-after')
        UNION ALL
        SELECT w.event_pk, w.site_id, 'hour', -1, w.day0_s, w.start_s - 3600.0, w.start_s
        FROM windows AS w
        UNION ALL
        SELECT iv.event_pk, iv.site_id, 'actual', iv.interval_position, 0.0, iv.start_s, iv.end_s
        FROM asked AS iv
    ),
    measured AS (
        SELECT
            sp.event_pk,
            sp.site_id,
            sp.purpose,
            sp.position,
            sp.day_s,
            sp.b_s - sp.a_s AS window_s,
            COALESCE(SUM(l.load_kwh * {overlap_s} / ({le} - {ls})), 0.0) AS load_kwh,
            COALESCE(SUM(CASE WHEN l.id IS NOT NULL THEN {overlap_s} END), 0.0) AS covered_s
        FROM spans AS sp
        LEFT JOIN ledger AS l
            ON l.site_id = sp.site_id
            AND l.interval_start_at >= {d.at(f"sp.a_s - {LEDGER_ROW_LOOKBACK_S}")}
            AND l.interval_start_at < {d.at("sp.b_s")}
            AND l.interval_end_at > {d.at("sp.a_s")}
        GROUP BY sp.event_pk, sp.site_id, sp.purpose, sp.position, sp.day_s, sp.a_s, sp.b_s
    ),
    per_site AS (
        SELECT
            m.event_pk,
            m.site_id,
            SUM(CASE WHEN m.purpose = 'like_adjustment' THEN m.load_kwh END) AS like_adjust_kwh,
            MAX(CASE WHEN m.purpose = 'like_adjustment' THEN m.window_s END) AS adjust_window_s,
            MAX(CASE WHEN m.purpose = 'adjustment' THEN m.load_kwh END) AS adjust_kwh,
            MAX(CASE WHEN m.purpose = 'adjustment' THEN m.covered_s END) AS adjust_covered_s,
            MAX(
                CASE WHEN m.purpose = 'meter' AND m.covered_s > 0
                    THEN m.load_kwh / (m.covered_s / 3600.0) END
            ) AS meter_kw,
            MAX(
                CASE WHEN m.purpose = 'hour' AND m.covered_s > 0
                    THEN m.load_kwh / (m.covered_s / 3600.0) END
            ) AS hour_kw
        FROM measured AS m
        WHERE m.purpose IN ('like_adjustment', 'adjustment', 'meter', 'hour')
        GROUP BY m.event_pk, m.site_id
    ),
    chosen AS (
        SELECT
            w.event_pk,
            w.site_id,
            CASE
                WHEN p.baseline_method = 'like-days' AND COALESCE(dc.days, 0) >= p.min_like_days
                    THEN 'like-days'
                WHEN p.baseline_method IN ('like-days', 'meter-before-after')
                    AND ps.meter_kw IS NOT NULL THEN 'meter-before-after'
                WHEN ps.hour_kw IS NOT NULL THEN 'hour-before'
            END AS method,
            COALESCE(dc.days, 0) AS days,
            CASE
                WHEN ps.adjust_covered_s > 0 AND ps.like_adjust_kwh > 0
                    THEN (ps.adjust_kwh / (ps.adjust_covered_s / 3600.0))
                        / (ps.like_adjust_kwh / dc.days / (ps.adjust_window_s / 3600.0))
                ELSE 1.0
            END AS raw_ratio,
            p.adjustment_cap,
            ps.meter_kw,
            ps.hour_kw
        FROM windows AS w
        JOIN params AS p ON p.event_pk = w.event_pk AND p.site_id = w.site_id
        LEFT JOIN day_counts AS dc ON dc.event_pk = w.event_pk AND dc.site_id = w.site_id
        LEFT JOIN per_site AS ps ON ps.event_pk = w.event_pk AND ps.site_id = w.site_id
    ),
    ratios AS (
        SELECT
            c.*,
            CASE
                WHEN c.method IS NULL OR c.method <> 'like-days' THEN NULL
                WHEN c.raw_ratio < 1.0 - c.adjustment_cap THEN 1.0 - c.adjustment_cap
                WHEN c.raw_ratio > 1.0 + c.adjustment_cap THEN 1.0 + c.adjustment_cap
                ELSE c.raw_ratio
            END AS adjustment
        FROM chosen AS c
    ),
    interval_sums AS (
        SELECT
            event_pk,
            site_id,
            position,
            SUM(CASE WHEN purpose = 'like' THEN load_kwh END) AS like_kwh,
            MAX(CASE WHEN purpose = 'actual' THEN load_kwh END) AS actual_kwh
        FROM measured
        WHERE purpose IN ('like', 'actual')
        GROUP BY event_pk, site_id, position
    ),
    ledger_ends AS (
        SELECT
            s.site_id,
            (
                SELECT MAX(x.interval_start_at) FROM ledger AS x WHERE x.site_id = s.site_id
            ) AS last_start_at
        FROM (SELECT DISTINCT site_id FROM windows) AS s
    ),
    baselined AS (
        SELECT
            iv.*,
            r.method,
            CASE WHEN r.method = 'like-days' THEN r.days ELSE 0 END AS days,
            r.adjustment,
            CASE r.method
                WHEN 'like-days' THEN
                    COALESCE(sums.like_kwh, 0.0) / r.days * r.adjustment
                        / (iv.duration_s / 3600.0)
                WHEN 'meter-before-after' THEN r.meter_kw
                WHEN 'hour-before' THEN r.hour_kw
            END AS baseline_kw,
            CASE
                WHEN ends.last_start_at >= {d.at("iv.end_s")} THEN sums.actual_kwh
            END AS actual_kwh
        FROM asked AS iv
        JOIN ratios AS r ON r.event_pk = iv.event_pk AND r.site_id = iv.site_id
        LEFT JOIN interval_sums AS sums
            ON sums.event_pk = iv.event_pk
            AND sums.site_id = iv.site_id
            AND sums.position = iv.interval_position
        LEFT JOIN ledger_ends AS ends ON ends.site_id = iv.site_id
    ),
    requested AS (
        SELECT
            b.*,
            b.duration_s / 3600.0 AS duration_h,
            b.baseline_kw * b.duration_s / 3600.0 AS baseline_kwh,
            CASE b.action
                WHEN 'shed_fraction_by_level' THEN b.shed_fraction * b.baseline_kw
                WHEN 'shed_or_absorb_kw' THEN b.power_kw
                WHEN 'absorb_at_or_below_price' THEN
                    CASE
                        WHEN b.power_kw > b.baseline_kw THEN b.power_kw - b.baseline_kw
                        ELSE 0.0
                    END
                ELSE
                    CASE
                        WHEN b.baseline_kw > b.power_kw THEN b.baseline_kw - b.power_kw
                        ELSE 0.0
                    END
            END AS requested_kw
        FROM baselined AS b
    ),
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
    )
SELECT
    w.vtn_id,
    w.event_id,
    w.modification_number,
    w.status,
    q.site_id,
    q.interval_position AS interval_index,
    q.start_at,
    q.end_at,
    q.duration_s,
    CASE WHEN q.ask = 'absorb' THEN 'absorb' ELSE 'shed' END AS kind,
    q.requested_kw,
    q.requested_kw * q.duration_h AS requested_kwh,
    q.baseline_kw,
    q.baseline_kwh,
    q.actual_kwh,
    CASE
        WHEN q.ask = 'absorb' THEN q.actual_kwh - q.baseline_kwh
        ELSE q.baseline_kwh - q.actual_kwh
    END AS delivered_kwh,
    CASE
        WHEN q.ask = 'absorb' THEN q.actual_kwh - q.baseline_kwh
        ELSE q.baseline_kwh - q.actual_kwh
    END / NULLIF(q.requested_kw * q.duration_h, 0.0) AS delivery_ratio,
    q.method AS baseline_method,
    q.days AS baseline_days,
    q.adjustment AS baseline_adjustment,
    ans.opt
FROM requested AS q
JOIN windows AS w ON w.event_pk = q.event_pk AND w.site_id = q.site_id
LEFT JOIN answers AS ans ON ans.event_pk = q.event_pk
"""


def event_delivery_sql(d: Any) -> str:
    """Per event and site: the sums of ``event_interval_delivery`` (revision 0005's columns).

    The signal is read from the event's tables (its first signal the default table maps),
    not from ``event_site_intervals``, which PostgreSQL would evaluate once per event.
    """
    del d  # the same on both backends
    return f"""
WITH
{R0005.SIGNAL_MAP_SQL},
    mapped AS (
        SELECT sg.event_pk, sg.position, sg.signal_name, sg.signal_type
        FROM event_signals AS sg
        JOIN signal_map AS m ON m.signal_name = sg.signal_name AND m.signal_type = sg.signal_type
        WHERE EXISTS (SELECT 1 FROM event_intervals AS i WHERE i.signal_pk = sg.id)
    ),
    signals AS (
        SELECT mp.event_pk, mp.signal_name, mp.signal_type
        FROM mapped AS mp
        WHERE mp.position = (SELECT MIN(o.position) FROM mapped AS o WHERE o.event_pk = mp.event_pk)
    ),
    totals AS (
        SELECT
            vtn_id,
            event_id,
            modification_number,
            site_id,
            SUM(requested_kwh) AS requested_kwh,
            SUM(baseline_kwh) AS baseline_kwh,
            CASE WHEN COUNT(actual_kwh) = COUNT(*) THEN SUM(actual_kwh) END AS actual_kwh,
            CASE WHEN COUNT(delivered_kwh) = COUNT(*) THEN SUM(delivered_kwh) END
                AS delivered_kwh,
            COUNT(*) AS asked_intervals,
            SUM(CASE WHEN kind = 'absorb' THEN 1 ELSE 0 END) AS absorb_intervals,
            MAX(baseline_method) AS baseline_method,
            MAX(baseline_days) AS baseline_days
        FROM event_interval_delivery
        GROUP BY vtn_id, event_id, modification_number, site_id
    ),
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
    )
SELECT
    w.vtn_id,
    w.event_id,
    w.modification_number,
    w.status,
    w.site_id,
    sg.signal_name || '/' || sg.signal_type AS signal,
    CASE
        WHEN t.asked_intervals IS NULL THEN NULL
        WHEN t.absorb_intervals = t.asked_intervals THEN 'absorb'
        WHEN t.absorb_intervals = 0 THEN 'shed'
        ELSE 'mixed'
    END AS direction,
    w.start_at,
    w.end_at,
    ans.opt,
    CASE
        WHEN t.asked_intervals IS NOT NULL THEN t.requested_kwh
        WHEN w.stop_s IS NOT NULL THEN 0.0
    END AS requested_kwh,
    t.baseline_kwh,
    t.baseline_method,
    COALESCE(t.baseline_days, 0) AS baseline_days,
    t.actual_kwh,
    t.delivered_kwh,
    t.delivered_kwh / NULLIF(t.requested_kwh, 0.0) AS delivery_ratio
FROM event_site_windows AS w
LEFT JOIN totals AS t
    ON t.vtn_id = w.vtn_id
    AND t.event_id = w.event_id
    AND t.modification_number = w.modification_number
    AND t.site_id = w.site_id
LEFT JOIN signals AS sg ON sg.event_pk = w.event_pk
LEFT JOIN answers AS ans ON ans.event_pk = w.event_pk
"""


VIEWS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("event_interval_delivery", event_interval_delivery_sql),
    ("event_delivery", event_delivery_sql),
)
"""The views of this revision and their SQL per dialect, in creation order."""


def upgrade() -> None:
    op.create_table(
        "programmes",
        sa.Column("market_context", sa.String(length=512), nullable=False),
        sa.Column("baseline_method", sa.String(length=32), nullable=False),
        sa.Column("like_days", sa.Integer(), nullable=False),
        sa.Column("lookback_days", sa.Integer(), nullable=False),
        sa.Column("min_like_days", sa.Integer(), nullable=False),
        sa.Column("adjustment_window_s", sa.Float(), nullable=False),
        sa.Column("adjustment_gap_s", sa.Float(), nullable=False),
        sa.Column("adjustment_cap", sa.Float(), nullable=False),
        sa.Column("meter_window_s", sa.Float(), nullable=False),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("market_context", name=op.f("pk_programmes")),
    )
    dialect = DIALECTS[op.get_bind().dialect.name]
    op.execute("DROP VIEW event_delivery")
    for name, select_sql in VIEWS:
        op.execute(f"CREATE VIEW {name} AS {select_sql(dialect)}")


def downgrade() -> None:
    for name, _select_sql in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
    dialect = DIALECTS[op.get_bind().dialect.name]
    op.execute(f"CREATE VIEW event_delivery AS {R0005.event_delivery_sql(dialect)}")
    op.drop_table("programmes")

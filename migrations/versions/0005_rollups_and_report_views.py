"""Reporting at a year of data: energy rollups, grid carbon intensity and the report views.

Tables: ``energy_rollup_hour`` and ``energy_rollup_day`` (the ledger's sums per site and UTC
hour or day, kept up to date by ``gateway/reports/rollups.py`` in the same transaction as each
ledger row) and ``grid_carbon_intensity`` (loaded with ``dr-gateway carbon load``).

Views (documented in ``docs/views.md``), in creation order:

- ``event_site_windows``: each event's latest version per site it addresses, with the period
  this VEN acts on (randomised start, cancellations);
- ``event_site_intervals``: each signal interval of those, with what it asks of the site;
- ``ledger_accounted``: each ledger row with its hour and day, captured surplus and emissions;
  the rollups are sums of this view (the backfill below, and the upsert per row);
- ``site_energy_hourly``, ``site_energy_daily``: the rollups with shares and emissions;
- ``migration_timeline``: each migration with the time of every state and phase durations;
- ``event_delivery``: per event and site, requested against delivered energy and the baseline.

Time arithmetic differs between the backends, so each view's SQL is rendered per dialect from
one template (:class:`_Sql`); this revision keeps its own copy of every statement. The upgrade
backfills the rollups from the ledger rows already stored.

SQLite caution for later revisions: as for 0001's views, a batch rebuild of any table these
views read (sites, ledger, migrations, events, event_targets, event_signals, event_intervals,
event_responses, grid_carbon_intensity, the rollups) must drop the views first and create them
again afterwards.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 04:00:00.000000
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import op

import models

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


@dataclass(frozen=True)
class _Sql:
    """The fragments of SQL that differ between SQLite and PostgreSQL.

    Timestamps are compared as epoch seconds (double precision) wherever arithmetic is done;
    timestamps computed from epoch seconds come back in the form the backend stores (on
    SQLite the text SQLAlchemy writes, ``YYYY-MM-DD HH:MM:SS.ffffff``), so that they compare
    with stored columns.
    """

    epoch: Callable[[str], str]
    """A timestamp expression -> seconds since 1970-01-01 UTC [s]."""
    at: Callable[[str], str]
    """Seconds since 1970-01-01 UTC -> a timestamp as stored."""
    hour: Callable[[str], str]
    """A timestamp -> the start of its UTC hour, as stored."""
    day: Callable[[str], str]
    """A timestamp -> the start of its UTC day, as stored."""
    plus_hours: Callable[[str, int], str]
    """A timestamp plus whole hours, as stored."""
    floor_to: Callable[[str, int], str]
    """Non-negative epoch seconds rounded down to a multiple of n seconds."""
    real: str
    """The double precision type name."""


def _sqlite_epoch(ts: str) -> str:
    # strftime('%s') gives whole seconds exactly; the fraction is the text after them.
    return f"(CAST(strftime('%s', {ts}) AS REAL) + COALESCE(CAST(substr({ts}, 20) AS REAL), 0.0))"


SQLITE = _Sql(
    epoch=_sqlite_epoch,
    at=lambda s: f"(strftime('%Y-%m-%d %H:%M:%f', {s}, 'unixepoch') || '000')",
    hour=lambda ts: f"strftime('%Y-%m-%d %H:00:00.000000', {ts})",
    day=lambda ts: f"strftime('%Y-%m-%d 00:00:00.000000', {ts})",
    plus_hours=lambda ts, n: f"strftime('%Y-%m-%d %H:%M:%S.000000', {ts}, '+{n} hours')",
    floor_to=lambda s, n: f"((CAST({s} AS INTEGER) / {n}) * {n})",
    real="REAL",
)

POSTGRESQL = _Sql(
    epoch=lambda ts: f"CAST(EXTRACT(EPOCH FROM {ts}) AS double precision)",
    at=lambda s: f"to_timestamp({s})",
    hour=lambda ts: f"(date_trunc('hour', {ts} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')",
    day=lambda ts: f"(date_trunc('day', {ts} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')",
    plus_hours=lambda ts, n: f"({ts} + INTERVAL '{n} hours')",
    floor_to=lambda s, n: f"(FLOOR({s} / {n}) * {n})",
    real="double precision",
)

DIALECTS = {"sqlite": SQLITE, "postgresql": POSTGRESQL}

SIGNAL_MAP_SQL = """
    signal_map (signal_name, signal_type, action) AS (
        VALUES
            ('SIMPLE', 'level', 'shed_fraction_by_level'),
            ('simple', 'level', 'shed_fraction_by_level'),
            ('LOAD_DISPATCH', 'delta', 'shed_or_absorb_kw'),
            ('LOAD_DISPATCH', 'setpoint', 'cap_kw'),
            ('ELECTRICITY_PRICE', 'price', 'absorb_at_or_below_price'),
            ('ELECTRICITY_PRICE', 'priceRelative', 'absorb_at_or_below_price'),
            ('LOAD_CONTROL', 'x-loadControlCapacity', 'cap_fraction_of_max')
    )"""
"""The default signal table (``gateway.planner.signals.default_rules``) with its default
parameters: SIMPLE levels 1/2/3 shed 25/50/100 %, a price at or below 0 is grid surplus."""


def event_site_windows_sql(d: _Sql) -> str:
    """Latest version of each non-test event, per site it addresses, with its period."""
    return f"""
SELECT
    w.event_pk,
    w.vtn_id,
    w.event_id,
    w.modification_number,
    w.status,
    w.market_context,
    s.id AS site_id,
    s.it_power_max_kw,
    s.pue,
    w.start_s,
    w.stop_s,
    {d.at("w.start_s")} AS start_at,
    {d.at("w.stop_s")} AS end_at
FROM (
    SELECT
        t.event_pk,
        t.vtn_id,
        t.event_id,
        t.modification_number,
        t.status,
        t.market_context,
        t.ven_id,
        t.start_s,
        CASE
            WHEN t.cancelled = 1 AND (t.cancel_s IS NULL OR t.cancel_s <= t.start_s)
                THEN t.start_s
            WHEN t.cancelled = 1 AND (t.end_s IS NULL OR t.cancel_s < t.end_s) THEN t.cancel_s
            ELSE t.end_s
        END AS stop_s
    FROM (
        SELECT
            e.id AS event_pk,
            e.vtn_id,
            e.event_id,
            e.modification_number,
            e.status,
            e.market_context,
            e.ven_id,
            {d.epoch("e.start_at")} + COALESCE(e.start_offset_s, 0.0) AS start_s,
            CASE
                WHEN e.duration_s > 0
                    THEN {d.epoch("e.start_at")} + COALESCE(e.start_offset_s, 0.0) + e.duration_s
            END AS end_s,
            CASE
                WHEN e.status = 'cancelled' OR e.implied_cancel_at IS NOT NULL THEN 1 ELSE 0
            END AS cancelled,
            {d.epoch("e.cancel_effective_at")} AS cancel_s
        FROM events AS e
        WHERE NOT e.test_event
        AND e.modification_number = (
            SELECT MAX(v.modification_number)
            FROM events AS v
            WHERE v.vtn_id = e.vtn_id AND v.event_id = e.event_id
        )
    ) AS t
) AS w
JOIN sites AS s ON s.vtn_id = w.vtn_id
WHERE EXISTS (
    SELECT 1
    FROM event_targets AS t
    WHERE t.event_pk = w.event_pk
    AND (
        (t.kind = 'resource_id' AND t.value = s.resource_id)
        OR (t.kind = 'ven_id' AND t.value = w.ven_id)
    )
)
OR NOT EXISTS (
    SELECT 1
    FROM event_targets AS t
    WHERE t.event_pk = w.event_pk AND t.kind IN ('resource_id', 'ven_id')
)
"""


def event_site_intervals_sql(d: _Sql) -> str:
    """Each interval of each mapped signal of an event, per site, placed in time."""
    return f"""
WITH
{SIGNAL_MAP_SQL},
    intervals AS (
        SELECT
            sg.event_pk,
            sg.position AS signal_position,
            sg.signal_name,
            sg.signal_type,
            m.action,
            i.position AS interval_position,
            i.value,
            i.duration_s,
            COALESCE(
                SUM(i.duration_s) OVER (
                    PARTITION BY i.signal_pk ORDER BY i.position
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
                ),
                0.0
            ) AS offset_s,
            COALESCE(
                SUM(CASE WHEN i.duration_s <= 0 THEN 1 ELSE 0 END) OVER (
                    PARTITION BY i.signal_pk ORDER BY i.position
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
                ),
                0
            ) AS open_before
        FROM event_signals AS sg
        JOIN signal_map AS m ON m.signal_name = sg.signal_name AND m.signal_type = sg.signal_type
        JOIN event_intervals AS i ON i.signal_pk = sg.id
    ),
    placed AS (
        SELECT
            w.event_pk,
            w.vtn_id,
            w.event_id,
            w.site_id,
            w.it_power_max_kw,
            w.pue,
            w.stop_s,
            iv.signal_position,
            iv.signal_name,
            iv.signal_type,
            iv.action,
            iv.interval_position,
            iv.value,
            w.start_s + iv.offset_s AS raw_start_s,
            CASE
                WHEN iv.duration_s > 0 THEN w.start_s + iv.offset_s + iv.duration_s
                ELSE w.stop_s
            END AS raw_end_s
        FROM event_site_windows AS w
        JOIN intervals AS iv ON iv.event_pk = w.event_pk
        WHERE iv.open_before = 0
    ),
    clipped AS (
        SELECT
            p.*,
            CASE
                WHEN p.stop_s IS NOT NULL AND p.raw_start_s > p.stop_s THEN p.stop_s
                ELSE p.raw_start_s
            END AS start_s,
            CASE
                WHEN p.raw_end_s IS NULL THEN p.stop_s
                WHEN p.stop_s IS NULL THEN p.raw_end_s
                WHEN p.raw_end_s < p.stop_s THEN p.raw_end_s
                ELSE p.stop_s
            END AS end_s
        FROM placed AS p
    )
SELECT
    c.event_pk,
    c.vtn_id,
    c.event_id,
    c.site_id,
    c.signal_position,
    c.signal_name,
    c.signal_type,
    c.action,
    c.interval_position,
    c.value,
    CASE c.action
        WHEN 'shed_fraction_by_level' THEN CASE WHEN ROUND(c.value) >= 1 THEN 'shed' END
        WHEN 'shed_or_absorb_kw' THEN
            CASE WHEN c.value < 0 THEN 'shed' WHEN c.value > 0 THEN 'absorb' END
        WHEN 'cap_kw' THEN 'cap'
        WHEN 'absorb_at_or_below_price' THEN CASE WHEN c.value <= 0 THEN 'absorb' END
        WHEN 'cap_fraction_of_max' THEN 'cap'
    END AS ask,
    CASE
        WHEN c.action = 'shed_fraction_by_level' THEN
            CASE
                WHEN ROUND(c.value) = 1 THEN CAST(0.25 AS {d.real})
                WHEN ROUND(c.value) = 2 THEN CAST(0.5 AS {d.real})
                WHEN ROUND(c.value) >= 3 THEN CAST(1.0 AS {d.real})
            END
    END AS shed_fraction,
    CASE c.action
        WHEN 'shed_or_absorb_kw' THEN ABS(c.value)
        WHEN 'cap_kw' THEN CASE WHEN c.value > 0 THEN c.value ELSE 0.0 END
        WHEN 'absorb_at_or_below_price' THEN c.it_power_max_kw * c.pue
        WHEN 'cap_fraction_of_max' THEN
            CASE WHEN c.value > 0 THEN c.value ELSE 0.0 END * c.it_power_max_kw * c.pue
    END AS power_kw,
    c.start_s,
    c.end_s,
    {d.at("c.start_s")} AS start_at,
    {d.at("c.end_s")} AS end_at,
    c.end_s - c.start_s AS duration_s
FROM clipped AS c
"""


def _intensity(d: _Sql, scope: str) -> str:
    """The intensity in force at the ledger row's start for one scope, or NULL [g/kWh]."""
    return f"""(
            SELECT CASE WHEN c.end_at > l.interval_start_at THEN c.g_co2_per_kwh END
            FROM grid_carbon_intensity AS c
            WHERE {scope} AND c.start_at <= l.interval_start_at
            ORDER BY c.start_at DESC
            LIMIT 1
        )"""


def ledger_accounted_sql(d: _Sql) -> str:
    """Each ledger row with its hour and day, captured surplus and emissions.

    ``hull``, the span from a site's first surplus interval to its last, is computed once per
    query; only rows inside it look for the interval in force (a correlated EXISTS), so that
    the backfill of millions of rows stays a scan.
    """
    start_s = d.epoch("l.interval_start_at")
    return f"""
SELECT
    a.id,
    a.site_id,
    a.interval_start_at,
    a.interval_end_at,
    {d.hour("a.interval_start_at")} AS hour_start_at,
    {d.day("a.interval_start_at")} AS day_start_at,
    a.load_kwh,
    a.renewable_kwh,
    a.renewable_used_kwh,
    a.grid_kwh,
    a.curtailed_kwh,
    a.migration_kwh,
    a.in_surplus_event,
    a.renewable_used_kwh + a.in_surplus_event * a.grid_kwh AS captured_surplus_kwh,
    a.g_co2_per_kwh,
    a.grid_kwh * a.g_co2_per_kwh / 1000.0 AS emissions_kg
FROM (
    SELECT
        l.id,
        l.site_id,
        l.interval_start_at,
        l.interval_end_at,
        l.load_kwh,
        l.renewable_kwh,
        l.renewable_used_kwh,
        l.grid_kwh,
        l.curtailed_kwh,
        l.migration_kwh,
        CASE
            WHEN hull.site_id IS NOT NULL AND {start_s} >= hull.first_s AND {start_s} < hull.last_s
                THEN
                    CASE
                        WHEN EXISTS (
                            SELECT 1
                            FROM event_site_intervals AS w
                            WHERE w.site_id = l.site_id
                            AND w.ask = 'absorb'
                            AND w.start_s <= {start_s}
                            AND (w.end_s IS NULL OR {start_s} < w.end_s)
                        ) THEN 1
                        ELSE 0
                    END
            ELSE 0
        END AS in_surplus_event,
        COALESCE(
            {_intensity(d, "c.site_id = l.site_id")},
            {_intensity(d, "c.site_id IS NULL")}
        ) AS g_co2_per_kwh
    FROM ledger AS l
    LEFT JOIN (
        SELECT site_id, MIN(start_s) AS first_s, MAX(COALESCE(end_s, 1.0e18)) AS last_s
        FROM event_site_intervals
        WHERE ask = 'absorb'
        GROUP BY site_id
    ) AS hull ON hull.site_id = l.site_id
) AS a
"""


def _site_energy_sql(d: _Sql, rollup: str, hours: int) -> str:
    return f"""
SELECT
    r.site_id,
    r.period_start_at,
    {d.plus_hours("r.period_start_at", hours)} AS period_end_at,
    r.ledger_rows,
    r.load_kwh,
    r.renewable_kwh,
    r.renewable_used_kwh,
    r.grid_kwh,
    r.curtailed_kwh,
    r.captured_surplus_kwh,
    r.migration_kwh,
    r.renewable_used_kwh / NULLIF(r.load_kwh, 0.0) AS renewable_share,
    CASE WHEN r.emissions_rows > 0 THEN r.emissions_kg END AS emissions_kg,
    CAST(r.emissions_rows AS {d.real}) / r.ledger_rows AS emissions_coverage
FROM {rollup} AS r
"""


def site_energy_hourly_sql(d: _Sql) -> str:
    """The hourly rollup with renewable share and emissions."""
    return _site_energy_sql(d, "energy_rollup_hour", 1)


def site_energy_daily_sql(d: _Sql) -> str:
    """The daily rollup with renewable share and emissions."""
    return _site_energy_sql(d, "energy_rollup_day", 24)


def migration_timeline_sql(d: _Sql) -> str:
    """Each migration with the time of every state and the time spent in each."""

    def span(start: str, *ends: str) -> str:
        """Seconds from ``start`` to the first of ``ends`` reached [s]."""
        end = "COALESCE(" + ", ".join(f"m.{e}" for e in ends) + ")"
        return f"{d.epoch(end)} - {d.epoch(start)}"

    return f"""
SELECT
    m.id AS migration_id,
    m.job_id,
    m.source_site_id,
    m.target_site_id,
    m.state,
    CASE
        WHEN m.state IN ('completed', 'aborted') THEN m.state ELSE 'in_flight'
    END AS outcome,
    m.reason,
    m.event_ref,
    m.planned_at,
    m.target_reserved_at,
    m.checkpointing_at,
    m.transferring_at,
    m.restoring_at,
    m.completed_at,
    m.aborted_at,
    COALESCE(m.completed_at, m.aborted_at) AS ended_at,
    m.checkpoint_gb,
    m.checkpoint_gb * 1.0e9 AS checkpoint_bytes,
    m.expected_s,
    m.downtime_s,
    m.expected_kwh,
    m.migration_kwh,
    m.attempts,
    m.error,
    {
        span(
            "m.planned_at",
            "target_reserved_at",
            "checkpointing_at",
            "transferring_at",
            "restoring_at",
            "completed_at",
            "aborted_at",
        )
    } AS planned_s,
    {
        span(
            "m.target_reserved_at",
            "checkpointing_at",
            "transferring_at",
            "restoring_at",
            "completed_at",
            "aborted_at",
        )
    } AS target_reserved_s,
    {
        span("m.checkpointing_at", "transferring_at", "restoring_at", "completed_at", "aborted_at")
    } AS checkpointing_s,
    {span("m.transferring_at", "restoring_at", "completed_at", "aborted_at")} AS transferring_s,
    {span("m.restoring_at", "completed_at", "aborted_at")} AS restoring_s,
    {span("m.planned_at", "completed_at", "aborted_at")} AS total_s
FROM migrations AS m
"""


def event_delivery_sql(d: _Sql) -> str:
    """Per event and site: requested, baseline, actual and delivered energy."""

    def overlap_h(hour_start: str, start_s: str, end_s: str) -> str:
        """Hours of [start_s, end_s) inside the hour starting at ``hour_start`` [h]."""
        h = d.epoch(hour_start)
        return (
            f"(CASE WHEN {h} + 3600.0 < {end_s} THEN {h} + 3600.0 ELSE {end_s} END"
            f" - CASE WHEN {h} > {start_s} THEN {h} ELSE {start_s} END) / 3600.0"
        )

    def hours_between(alias: str, site: str, start_s: str, end_s: str) -> str:
        """Join condition: hourly rollup rows of ``site`` that overlap [start_s, end_s)."""
        return (
            f"{alias}.site_id = {site}"
            f" AND {alias}.period_start_at > {d.at(f'{start_s} - 3600.0')}"
            f" AND {alias}.period_start_at < {d.at(end_s)}"
        )

    shifted_start = "iv.start_s - (iv.day0_s - bd.day_s)"
    shifted_end = "iv.end_s - (iv.day0_s - bd.day_s)"
    return f"""
WITH
    windows AS (
        SELECT
            w.*,
            {d.floor_to("w.start_s", 86400)} AS day0_s,
            {d.floor_to("w.stop_s", 3600)}
                + CASE WHEN w.stop_s > {d.floor_to("w.stop_s", 3600)} THEN 3600 ELSE 0 END
                AS accounted_by_s
        FROM event_site_windows AS w
    ),
    first_signal AS (
        SELECT event_pk, MIN(signal_position) AS signal_position
        FROM event_site_intervals
        GROUP BY event_pk
    ),
    asked AS (
        SELECT i.*, w.day0_s
        FROM event_site_intervals AS i
        JOIN first_signal AS f
            ON f.event_pk = i.event_pk AND f.signal_position = i.signal_position
        JOIN windows AS w ON w.event_pk = i.event_pk AND w.site_id = i.site_id
        WHERE i.ask IS NOT NULL AND i.end_s IS NOT NULL
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
        JOIN energy_rollup_day AS dr
            ON dr.site_id = w.site_id
            AND dr.period_start_at < {d.at("w.day0_s")}
            AND dr.period_start_at >= {d.at("w.day0_s - 30.0 * 86400.0")}
        WHERE NOT EXISTS (
            SELECT 1
            FROM event_site_windows AS o
            WHERE o.site_id = w.site_id
            AND (o.stop_s IS NULL OR o.stop_s > o.start_s)
            AND o.start_s < {d.epoch("dr.period_start_at")} + 86400.0
            AND (o.stop_s IS NULL OR o.stop_s > {d.epoch("dr.period_start_at")})
        )
    ),
    baseline_days AS (
        SELECT event_pk, site_id, day_s
        FROM candidate_days
        WHERE recency <= 10
    ),
    day_counts AS (
        SELECT event_pk, site_id, COUNT(*) AS days
        FROM baseline_days
        GROUP BY event_pk, site_id
    ),
    same_hours AS (
        SELECT
            iv.event_pk,
            iv.site_id,
            iv.signal_position,
            iv.interval_position,
            SUM(
                h.load_kwh * {overlap_h("h.period_start_at", shifted_start, shifted_end)}
            ) AS load_kwh
        FROM asked AS iv
        JOIN baseline_days AS bd ON bd.event_pk = iv.event_pk AND bd.site_id = iv.site_id
        JOIN energy_rollup_hour AS h ON {
        hours_between("h", "iv.site_id", shifted_start, shifted_end)
    }
        GROUP BY iv.event_pk, iv.site_id, iv.signal_position, iv.interval_position
    ),
    hour_before AS (
        SELECT
            w.event_pk,
            w.site_id,
            SUM(h.load_kwh * {overlap_h("h.period_start_at", "w.start_s - 3600.0", "w.start_s")})
                AS load_kwh
        FROM windows AS w
        JOIN energy_rollup_hour AS h
            ON {hours_between("h", "w.site_id", "w.start_s - 3600.0", "w.start_s")}
        GROUP BY w.event_pk, w.site_id
    ),
    actual AS (
        SELECT
            iv.event_pk,
            iv.site_id,
            iv.signal_position,
            iv.interval_position,
            SUM(h.load_kwh * {overlap_h("h.period_start_at", "iv.start_s", "iv.end_s")})
                AS load_kwh
        FROM asked AS iv
        JOIN energy_rollup_hour AS h ON {hours_between("h", "iv.site_id", "iv.start_s", "iv.end_s")}
        GROUP BY iv.event_pk, iv.site_id, iv.signal_position, iv.interval_position
    ),
    accounted AS (
        SELECT w.event_pk, w.site_id
        FROM windows AS w
        WHERE EXISTS (
            SELECT 1
            FROM energy_rollup_hour AS x
            WHERE x.site_id = w.site_id AND x.period_start_at >= {d.at("w.accounted_by_s")}
        )
    ),
    measured AS (
        SELECT
            iv.event_pk,
            iv.site_id,
            iv.ask,
            iv.action,
            iv.shed_fraction,
            iv.power_kw,
            iv.duration_s / 3600.0 AS duration_h,
            CASE
                WHEN dc.days > 0 THEN COALESCE(sh.load_kwh, 0.0) / dc.days
                WHEN hb.load_kwh IS NOT NULL THEN hb.load_kwh * iv.duration_s / 3600.0
            END AS baseline_kwh,
            CASE WHEN acc.event_pk IS NOT NULL THEN COALESCE(a.load_kwh, 0.0) END AS actual_kwh
        FROM asked AS iv
        LEFT JOIN day_counts AS dc ON dc.event_pk = iv.event_pk AND dc.site_id = iv.site_id
        LEFT JOIN same_hours AS sh
            ON sh.event_pk = iv.event_pk
            AND sh.site_id = iv.site_id
            AND sh.signal_position = iv.signal_position
            AND sh.interval_position = iv.interval_position
        LEFT JOIN hour_before AS hb ON hb.event_pk = iv.event_pk AND hb.site_id = iv.site_id
        LEFT JOIN actual AS a
            ON a.event_pk = iv.event_pk
            AND a.site_id = iv.site_id
            AND a.signal_position = iv.signal_position
            AND a.interval_position = iv.interval_position
        LEFT JOIN accounted AS acc ON acc.event_pk = iv.event_pk AND acc.site_id = iv.site_id
    ),
    per_interval AS (
        SELECT
            m.*,
            CASE m.action
                WHEN 'shed_fraction_by_level' THEN m.shed_fraction * m.baseline_kwh
                WHEN 'shed_or_absorb_kw' THEN m.power_kw * m.duration_h
                WHEN 'absorb_at_or_below_price' THEN
                    CASE
                        WHEN m.power_kw * m.duration_h > m.baseline_kwh
                            THEN m.power_kw * m.duration_h - m.baseline_kwh
                        ELSE 0.0
                    END
                ELSE
                    CASE
                        WHEN m.baseline_kwh > m.power_kw * m.duration_h
                            THEN m.baseline_kwh - m.power_kw * m.duration_h
                        ELSE 0.0
                    END
            END AS requested_kwh,
            CASE
                WHEN m.ask = 'absorb' THEN m.actual_kwh - m.baseline_kwh
                ELSE m.baseline_kwh - m.actual_kwh
            END AS delivered_kwh
        FROM measured AS m
    ),
    totals AS (
        SELECT
            event_pk,
            site_id,
            SUM(requested_kwh) AS requested_kwh,
            SUM(baseline_kwh) AS baseline_kwh,
            SUM(actual_kwh) AS actual_kwh,
            SUM(delivered_kwh) AS delivered_kwh,
            COUNT(*) AS asked_intervals,
            SUM(CASE WHEN ask = 'absorb' THEN 1 ELSE 0 END) AS absorb_intervals
        FROM per_interval
        GROUP BY event_pk, site_id
    ),
    signals AS (
        SELECT DISTINCT i.event_pk, i.signal_name, i.signal_type
        FROM event_site_intervals AS i
        JOIN first_signal AS f
            ON f.event_pk = i.event_pk AND f.signal_position = i.signal_position
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
    COALESCE(t.requested_kwh, CASE WHEN w.stop_s IS NOT NULL THEN 0.0 END) AS requested_kwh,
    t.baseline_kwh,
    CASE
        WHEN t.asked_intervals IS NULL THEN NULL
        WHEN dc.days > 0 THEN 'previous_days'
        WHEN hb.load_kwh IS NOT NULL THEN 'hour_before'
    END AS baseline_method,
    COALESCE(dc.days, 0) AS baseline_days,
    t.actual_kwh,
    t.delivered_kwh,
    t.delivered_kwh / NULLIF(t.requested_kwh, 0.0) AS delivery_ratio
FROM windows AS w
LEFT JOIN totals AS t ON t.event_pk = w.event_pk AND t.site_id = w.site_id
LEFT JOIN signals AS sg ON sg.event_pk = w.event_pk
LEFT JOIN day_counts AS dc ON dc.event_pk = w.event_pk AND dc.site_id = w.site_id
LEFT JOIN hour_before AS hb ON hb.event_pk = w.event_pk AND hb.site_id = w.site_id
LEFT JOIN answers AS ans ON ans.event_pk = w.event_pk
"""


VIEWS: tuple[tuple[str, Callable[[_Sql], str]], ...] = (
    ("event_site_windows", event_site_windows_sql),
    ("event_site_intervals", event_site_intervals_sql),
    ("ledger_accounted", ledger_accounted_sql),
    ("site_energy_hourly", site_energy_hourly_sql),
    ("site_energy_daily", site_energy_daily_sql),
    ("migration_timeline", migration_timeline_sql),
    ("event_delivery", event_delivery_sql),
)
"""The views of this revision and their SQL per dialect, in creation order."""

ROLLUP_COLUMNS = (
    "site_id, period_start_at, ledger_rows, load_kwh, renewable_kwh, renewable_used_kwh, "
    "grid_kwh, curtailed_kwh, migration_kwh, captured_surplus_kwh, emissions_kg, emissions_rows"
)
BACKFILL_HOUR_SQL = f"""
INSERT INTO energy_rollup_hour ({ROLLUP_COLUMNS})
SELECT
    site_id,
    hour_start_at,
    COUNT(*),
    SUM(load_kwh),
    SUM(renewable_kwh),
    SUM(renewable_used_kwh),
    SUM(grid_kwh),
    SUM(curtailed_kwh),
    SUM(migration_kwh),
    SUM(captured_surplus_kwh),
    COALESCE(SUM(emissions_kg), 0.0),
    COUNT(emissions_kg)
FROM ledger_accounted
GROUP BY site_id, hour_start_at
"""


def backfill_day_sql(d: _Sql) -> str:
    """The daily rollup from the hourly one."""
    day = d.day("period_start_at")
    return f"""
INSERT INTO energy_rollup_day ({ROLLUP_COLUMNS})
SELECT
    site_id,
    {day},
    SUM(ledger_rows),
    SUM(load_kwh),
    SUM(renewable_kwh),
    SUM(renewable_used_kwh),
    SUM(grid_kwh),
    SUM(curtailed_kwh),
    SUM(migration_kwh),
    SUM(captured_surplus_kwh),
    SUM(emissions_kg),
    SUM(emissions_rows)
FROM energy_rollup_hour
GROUP BY site_id, {day}
"""


def _rollup_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("period_start_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ledger_rows", sa.Integer(), nullable=False),
        sa.Column("load_kwh", sa.Float(), nullable=False),
        sa.Column("renewable_kwh", sa.Float(), nullable=False),
        sa.Column("renewable_used_kwh", sa.Float(), nullable=False),
        sa.Column("grid_kwh", sa.Float(), nullable=False),
        sa.Column("curtailed_kwh", sa.Float(), nullable=False),
        sa.Column("migration_kwh", sa.Float(), nullable=False),
        sa.Column("captured_surplus_kwh", sa.Float(), nullable=False),
        sa.Column("emissions_kg", sa.Float(), nullable=False),
        sa.Column("emissions_rows", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f(f"fk_{name}_site_id_sites"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("site_id", "period_start_at", name=op.f(f"pk_{name}")),
        sqlite_with_rowid=False,
    )
    op.create_index(op.f(f"ix_{name}_period_start_at"), name, ["period_start_at"], unique=False)


def upgrade() -> None:
    _rollup_table("energy_rollup_hour")
    _rollup_table("energy_rollup_day")
    op.create_table(
        "grid_carbon_intensity",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=True),
        sa.Column("start_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("end_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("g_co2_per_kwh", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("loaded_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grid_carbon_intensity")),
    )
    op.create_index(
        op.f("ix_grid_carbon_intensity_site_id"),
        "grid_carbon_intensity",
        ["site_id", "start_at"],
        unique=False,
    )
    # the all-sites intervals: PostgreSQL reads `site_id IS NULL ... ORDER BY start_at DESC`
    # in order only from a partial index
    op.create_index(
        op.f("ix_grid_carbon_intensity_all_sites"),
        "grid_carbon_intensity",
        ["start_at"],
        unique=False,
        postgresql_where=sa.text("site_id IS NULL"),
        sqlite_where=sa.text("site_id IS NULL"),
    )
    dialect = DIALECTS[op.get_bind().dialect.name]
    for name, select_sql in VIEWS:
        op.execute(f"CREATE VIEW {name} AS {select_sql(dialect)}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("SET LOCAL jit = off")  # compiling the views' expressions costs seconds
    op.execute(BACKFILL_HOUR_SQL)
    op.execute(backfill_day_sql(dialect))


def downgrade() -> None:
    for name, _select_sql in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
    op.drop_index(op.f("ix_grid_carbon_intensity_all_sites"), table_name="grid_carbon_intensity")
    op.drop_index(op.f("ix_grid_carbon_intensity_site_id"), table_name="grid_carbon_intensity")
    op.drop_table("grid_carbon_intensity")
    for name in ("energy_rollup_day", "energy_rollup_hour"):
        op.drop_index(op.f(f"ix_{name}_period_start_at"), table_name=name)
        op.drop_table(name)

"""The options of ``dr-gateway report KIND``, checked into a :class:`ReportRequest`.

Every bad option ends in :class:`InputError` with one line that names the option (exit
code 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.commands.report_kinds import KINDS_BY_NAME, NO_GROUPING, PERIODS, TIME_EXAMPLE
from gateway.errors import InputError
from gateway.reports.formats import REPORT_FORMATS, ReportFormat


@dataclass(frozen=True)
class ReportRequest:
    """What one ``dr-gateway report KIND`` invocation asks for, validated."""

    kind: str
    since: datetime | None
    """Only periods (energy), migrations or events from this instant on [aware UTC]."""
    until: datetime | None
    """Only those before this instant [aware UTC]."""
    site_ids: tuple[str, ...] | None
    """Only these sites; ``None`` for every site."""
    by: tuple[str, ...]
    """Energy grouping keys, in ``REPORT_BY_KEYS``; ``()`` for one fleet-total row."""
    fmt: ReportFormat
    output: Path | None
    """Write the report here instead of standard output."""
    plot: Path | None
    """Also draw the energy report into this PNG."""


def parse_time(option: str, text: str) -> datetime:
    """An aware UTC instant from an ISO 8601 date or date-time; UTC when no zone is given.

    :param option: the option's name, for the error message (``--since``).
    :param text: e.g. ``2026-06-01``, ``2026-06-01T12:00``, ``2026-06-01T14:00+02:00``.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{option} {text}: not an ISO 8601 date or date-time such as {TIME_EXAMPLE}"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_sites(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """Site ids from repeated ``--site`` options, each possibly a comma list, in order.

    :param values: the options' values; ``None`` (no option) for every site.
    """
    if values is None:
        return None
    site_ids: list[str] = []
    for value in values:
        for part in value.split(","):
            site_id = part.strip()
            if not site_id:
                raise InputError(f"--site {value!r}: an empty site id")
            if site_id not in site_ids:
                site_ids.append(site_id)
    return tuple(site_ids)


def parse_by(text: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """Grouping keys from a ``--by`` comma list; ``none`` for no grouping.

    :param text: e.g. ``site,day``.
    :param allowed: the keys the energy report knows (``REPORT_BY_KEYS``).
    """
    if text.strip() == NO_GROUPING:
        return ()
    keys = tuple(part.strip() for part in text.split(","))
    for key in keys:
        if key not in allowed:
            raise InputError(
                f"--by {text}: unknown key {key!r}; use a comma list of "
                f"{', '.join(allowed)}, or {NO_GROUPING}"
            )
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise InputError(f"--by {text}: {', '.join(duplicates)} given more than once")
    periods = [key for key in keys if key in PERIODS]
    if len(periods) > 1:
        raise InputError(f"--by {text}: choose one of {' and '.join(periods)}")
    return keys


def parse_level(text: str, levels: Sequence[str]) -> str:
    """The ``--by`` level of a kind that reports at several levels (``events``).

    :param text: e.g. ``interval``.
    :param levels: the kind's levels (``ReportKind.levels``).
    """
    level = text.strip()
    if level not in levels:
        raise InputError(f"--by {text}: unknown level; choose one of {', '.join(levels)}")
    return level


def parse_format(text: str) -> ReportFormat:
    """The ``--format`` value, checked against ``REPORT_FORMATS``."""
    for fmt in REPORT_FORMATS:
        if text == fmt:
            return fmt
    raise InputError(f"--format {text}: unknown format; choose one of {', '.join(REPORT_FORMATS)}")


def request_from_args(args: argparse.Namespace, allowed_by: Sequence[str]) -> ReportRequest:
    """The validated request of a ``report KIND`` command line.

    :param args: the parsed command line.
    :param allowed_by: the energy report's grouping keys (``REPORT_BY_KEYS``).
    """
    kind = KINDS_BY_NAME[args.report_kind]
    since = None if args.since is None else parse_time("--since", args.since)
    until = None if args.until is None else parse_time("--until", args.until)
    if since is not None and until is not None and since >= until:
        raise InputError(
            f"--until {args.until}: must be after --since {args.since} "
            f"({until.isoformat()} <= {since.isoformat()})"
        )
    fmt = parse_format(args.format)
    output = None if args.output is None else Path(args.output)
    if fmt == "parquet" and output is None:
        raise InputError(
            f"--format {fmt}: a binary format, not written to standard output; give --output FILE"
        )
    plot = Path(args.plot) if kind.grouped and args.plot is not None else None
    if plot is not None and plot.suffix.lower() != ".png":
        raise InputError(f"--plot {plot}: the plot is a PNG; name the file *.png")
    if plot is not None and output is not None and plot.resolve() == output.resolve():
        raise InputError(f"--plot {plot}: the same file as --output")
    for option, path in (("--output", output), ("--plot", plot)):
        if path is not None and not path.parent.is_dir():
            raise InputError(f"{option} {path}: the directory {path.parent} does not exist")
    by = parse_by(args.by, allowed_by) if kind.grouped else ()
    if kind.levels:
        by = (parse_level(args.by, kind.levels),)
    if kind.grouped:
        _check_boundaries(by, (("--since", args.since, since), ("--until", args.until, until)))
    return ReportRequest(
        kind=kind.name,
        since=since,
        until=until,
        site_ids=parse_sites(args.site),
        by=by,
        fmt=fmt,
        output=output,
        plot=plot,
    )


def on_boundary(at: datetime, period: str) -> bool:
    """Whether ``at`` starts a UTC hour or day (``period`` in ``PERIODS``)."""
    return (at - datetime(2000, 1, 1, tzinfo=UTC)) % PERIODS[period] == timedelta(0)


def _check_boundaries(
    by: Sequence[str], bounds: Sequence[tuple[str, str | None, datetime | None]]
) -> None:
    """The energy rollups answer whole periods: the ``--by`` period's, else whole hours."""
    period = next((key for key in by if key in PERIODS), None)
    for option, text, at in bounds:
        if at is None:
            continue
        if period is not None and not on_boundary(at, period):
            raise InputError(
                f"{option} {text}: not on a {period} boundary (UTC), which --by {period} needs"
            )
        if not on_boundary(at, "hour"):
            raise InputError(
                f"{option} {text}: not on an hour boundary (UTC); energy is kept per whole hour"
            )

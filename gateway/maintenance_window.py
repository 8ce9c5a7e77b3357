"""A maintenance window and the checks every source of windows applies (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

MAX_REASON_CHARS = 200


@dataclass(frozen=True)
class Window:
    """A span in which a site is in maintenance: ``[start_at, end_at)`` [aware UTC]."""

    site_id: str
    start_at: datetime
    end_at: datetime
    reason: str = "maintenance"

    @property
    def duration_s(self) -> float:
        return (self.end_at - self.start_at).total_seconds()


def instant_problem(value: datetime) -> str | None:
    """Why ``value`` cannot bound a window, or None: it must be timezone-aware and in whole
    seconds (OpenADR durations travel in whole seconds)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return "expected a timezone-aware timestamp such as 2026-07-01T22:00:00Z"
    if value.microsecond:
        return "expected whole seconds (OpenADR durations travel in whole seconds)"
    return None


def span_problem(start_at: datetime, end_at: datetime) -> str | None:
    """Why ``[start_at, end_at)`` is not a window, or None."""
    if end_at <= start_at:
        return f"must be after the start ({start_at.isoformat()}), got {end_at.isoformat()}"
    return None


def reason_problem(reason: str) -> str | None:
    if not reason.strip():
        return "must not be empty"
    if len(reason) > MAX_REASON_CHARS:
        return f"at most {MAX_REASON_CHARS} characters, got {len(reason)}"
    return None

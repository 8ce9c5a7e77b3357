"""What every section of the settings (``gateway/settings.py``) is built from.

:class:`Section` is the strict base model (unknown keys rejected, frozen, no NaN or infinity);
:class:`KeyProblem` is the error a cross-field check raises to name its key; ``Id``,
``PositiveFloat`` and ``NonNegativeFloat`` are the bounded field types, within
:data:`QUANTITY_MAX`, :data:`COUNT_MAX` and the instants between :data:`INSTANT_MIN` and
:data:`INSTANT_MAX`. The site agent's and the evaluation's configurations use them too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

QUANTITY_MAX = 1e9
"""The largest number any quantity of a configuration may take, in its unit (s, kW, GB,
Gbit/s, ...): far beyond any real value, and below where time arithmetic overflows."""
COUNT_MAX = 1_000_000
"""The largest count (GPUs, migrations per round) a configuration may give."""
INSTANT_MIN = datetime(2000, 1, 1, tzinfo=UTC)
INSTANT_MAX = datetime(2200, 1, 1, tzinfo=UTC)
"""Instants in a configuration lie in [INSTANT_MIN, INSTANT_MAX): a date far outside cannot
be meant, and near the calendar's ends adding a duration overflows."""

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
PositiveFloat = Annotated[float, Field(gt=0, le=QUANTITY_MAX)]
NonNegativeFloat = Annotated[float, Field(ge=0, le=QUANTITY_MAX)]


def instant_range_problem(value: datetime) -> str | None:
    """Why an aware ``value`` is outside the instants a configuration may name, or None."""
    if not INSTANT_MIN <= value < INSTANT_MAX:
        return (
            f"{value.isoformat()} is outside {INSTANT_MIN.year} to {INSTANT_MAX.year - 1}; "
            "expected a timestamp such as 2026-06-21T00:00:00Z"
        )
    return None


def url_credentials_problem(url: AnyHttpUrl, token_key: str) -> str | None:
    """Why ``url`` must not be used as it is, when it carries ``user:password@``: the
    message names ``token_key`` and never the password."""
    if url.username is None and url.password is None:
        return None
    return (
        "credentials in the URL (user:password@) are not used and would be sent in the "
        f"clear; remove them and set {token_key} instead"
    )


class Section(BaseModel):
    """A section of a configuration: unknown keys are rejected, values are frozen and no
    number is NaN or infinite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class KeyProblem(ValueError):
    """A cross-field problem that knows which key it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message

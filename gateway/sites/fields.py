"""Reading one JSON object of the site controller API field by field (``docs/site-api.md``).

:class:`Fields` gives typed access to the fields of a request body or an answer; every problem
raises :class:`FieldError`, whose message names the field's path (``job.gpus``,
``renewable_forecast_kw[3]``) and echoes at most a short piece of a bad value. The records of
:mod:`gateway.sites.records` are read through it; the servers answer a FieldError with
``400 bad_request`` (:mod:`gateway.sites.serving`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from yarl import URL

_Choice = TypeVar("_Choice", bound=str)

ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")
"""Job and migration ids: safe as a URL path segment and as a file name (no ``/``, no ``..``)."""
_ECHO_MAX_CHARS = 40


class FieldError(ValueError):
    """A JSON document lacks a field or holds a value of the wrong type; names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field '{field}': {problem}")
        self.field = field


def _kind_of(value: object) -> str:
    return "null" if value is None else type(value).__name__


class Fields:
    """Typed access to the fields of one JSON object; every error names the field's path."""

    def __init__(self, document: object, path: str = "") -> None:
        if not isinstance(document, dict):
            raise FieldError(path or "body", f"expected a JSON object, got {_kind_of(document)}")
        self._doc: dict[str, Any] = document
        self._path = path

    def _name(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _get(self, key: str) -> Any:
        if key not in self._doc:
            raise FieldError(self._name(key), "missing")
        return self._doc[key]

    def has(self, key: str) -> bool:
        """Whether the field is there and not null."""
        return self._doc.get(key) is not None

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise FieldError(self._name(key), f"expected a non-empty string, got {_kind_of(value)}")
        return value

    def identifier(self, key: str) -> str:
        """A job or migration id (:data:`ID_PATTERN`)."""
        value = self.text(key)
        if not ID_PATTERN.fullmatch(value):
            raise FieldError(
                self._name(key),
                "expected 1 to 128 of A-Z a-z 0-9 _ . : - not starting with '.', "
                f"got {_echo(value)}",
            )
        return value

    def reject_unknown(self, known: Iterable[str]) -> None:
        """Raise FieldError naming the first key of the object that is not in ``known``."""
        allowed = frozenset(known)
        for key in self._doc:
            if key not in allowed:
                expected = ", ".join(sorted(allowed))
                raise FieldError(
                    self._name(key[:_ECHO_MAX_CHARS]), f"unknown field; expected only {expected}"
                )

    def http_url(self, key: str) -> str:
        """An absolute http or https URL, as given."""
        text = self.text(key)
        try:
            url = URL(text)
        except ValueError as exc:
            raise FieldError(self._name(key), f"not a URL: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise FieldError(self._name(key), "expected an absolute http or https URL")
        return text

    def optional_text(self, key: str) -> str | None:
        value = self._doc.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise FieldError(self._name(key), f"expected a string or null, got {_kind_of(value)}")
        return value

    def integer(self, key: str, *, minimum: int | None = None) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(self._name(key), f"expected an integer, got {_kind_of(value)}")
        if minimum is not None and value < minimum:
            raise FieldError(self._name(key), f"must be >= {minimum}, got {value}")
        return value

    def optional_integer(self, key: str) -> int | None:
        value = self._doc.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(self._name(key), f"expected an integer or null, got {_kind_of(value)}")
        return value

    def number(
        self,
        key: str,
        *,
        minimum: float | None = None,
        positive: bool = False,
        maximum: float | None = None,
    ) -> float:
        return _number(
            self._get(key), self._name(key), minimum=minimum, positive=positive, maximum=maximum
        )

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise FieldError(self._name(key), f"expected true or false, got {_kind_of(value)}")
        return value

    def timestamp(self, key: str) -> datetime:
        text = self.text(key)
        try:
            value = datetime.fromisoformat(text)
        except ValueError as exc:
            raise FieldError(self._name(key), f"not an ISO 8601 timestamp: {text!r}") from exc
        if value.tzinfo is None:
            raise FieldError(self._name(key), f"timestamp without a time zone: {text!r}")
        return value.astimezone(UTC)

    def choice(self, key: str, choices: tuple[_Choice, ...]) -> _Choice:
        value = self.text(key)
        if value not in choices:
            raise FieldError(
                self._name(key), f"expected one of {', '.join(choices)}, got {value!r}"
            )
        return value

    def obj(self, key: str) -> Fields:
        return Fields(self._get(key), self._name(key))

    def optional_obj(self, key: str) -> Fields | None:
        value = self._doc.get(key)
        return None if value is None else Fields(value, self._name(key))

    def items(self, key: str) -> list[tuple[str, Any]]:
        """The items of a list, each with its name for errors (``key[i]``), unchecked."""
        value = self._get(key)
        if not isinstance(value, list):
            raise FieldError(self._name(key), f"expected a list, got {_kind_of(value)}")
        return [(f"{self._name(key)}[{i}]", item) for i, item in enumerate(value)]

    def text_list(self, key: str) -> tuple[str, ...]:
        """A list of strings (empty ones included)."""
        return tuple(_text_item(item, name) for name, item in self.items(key))

    def float_list(self, key: str) -> tuple[float, ...]:
        return tuple(_number(item, name) for name, item in self.items(key))

    def obj_list(self, key: str) -> list[Fields]:
        return [Fields(item, name) for name, item in self.items(key)]


def _text_item(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {_kind_of(value)}")
    return value


def _echo(value: str) -> str:
    """A value quoted for an error message, cut short so an answer never echoes a huge input."""
    if len(value) <= _ECHO_MAX_CHARS:
        return repr(value)
    return f"{value[:_ECHO_MAX_CHARS]!r}... ({len(value)} characters)"


def _number(
    value: object,
    name: str,
    *,
    minimum: float | None = None,
    positive: bool = False,
    maximum: float | None = None,
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(name, f"expected a number, got {_kind_of(value)}")
    try:
        number = float(value)
    except OverflowError as exc:
        raise FieldError(name, "expected a finite number, got an integer too large") from exc
    if not math.isfinite(number):
        raise FieldError(name, f"expected a finite number, got {number}")
    if positive and number <= 0:
        raise FieldError(name, f"must be > 0, got {number}")
    if minimum is not None and number < minimum:
        raise FieldError(name, f"must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise FieldError(name, f"must be <= {maximum:g}, got {number:g}")
    return number

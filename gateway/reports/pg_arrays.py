"""PostgreSQL's binary ``float8[]`` read at once into a tuple of floats, through psycopg.

:func:`gateway.reports.fetch.site_period_columns` uses it on PostgreSQL only, and imports it
there: a report on SQLite starts without loading the PostgreSQL driver.
"""

from __future__ import annotations

import struct
from typing import Any

import psycopg
from psycopg.adapt import Loader
from psycopg.pq import Format

_HEADER_BYTES = 20
"""Dimensions, NULL flag, element type, then the one dimension's length and lower bound."""
_ELEMENT = "4xd"
"""One element of PostgreSQL's binary array format: its length (8, skipped), then the value."""
_ELEMENT_BYTES = struct.calcsize(">" + _ELEMENT)


class Float8ArrayLoader(Loader):
    """PostgreSQL's binary ``float8[]`` (one dimension, no NULLs) as a tuple of floats."""

    format = Format.BINARY

    def load(self, data: Any) -> tuple[float, ...]:
        raw = bytes(data)
        dimensions = int.from_bytes(raw[0:4], "big")
        if dimensions == 0:
            return ()
        if dimensions != 1 or int.from_bytes(raw[4:8], "big") != 0:
            raise ValueError("expected a one-dimensional float8[] without NULLs")
        count = int.from_bytes(raw[12:16], "big")
        if len(raw) != _HEADER_BYTES + count * _ELEMENT_BYTES:
            raise ValueError("expected a float8[] of 8-byte elements")
        values: tuple[float, ...] = struct.unpack_from(">" + _ELEMENT * count, raw, _HEADER_BYTES)
        return values


FLOAT8_ARRAY_OID = psycopg.postgres.types["float8"].array_oid


def fetch_binary(driver: object, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` from the psycopg connection ``driver`` in binary, each
    ``float8[]`` as a tuple of floats; no prepared server-side plan (a report, not a hot
    statement)."""
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection for PostgreSQL, got {type(driver)}")
    with driver.cursor(binary=True) as cursor:
        cursor.adapters.register_loader(FLOAT8_ARRAY_OID, Float8ArrayLoader)
        cursor.execute(sql.encode(), prepare=False)
        return list(cursor.fetchall())

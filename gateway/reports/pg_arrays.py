"""PostgreSQL's binary ``float8[]`` read straight into numpy, through psycopg.

:func:`gateway.reports.fetch.site_period_columns` uses it on PostgreSQL only, and imports it
there: a report on SQLite starts without loading the PostgreSQL driver.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from psycopg.adapt import Loader
from psycopg.pq import Format

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

_FLOAT8_ELEMENT = np.dtype([("length", ">i4"), ("value", ">f8")])
"""One element of PostgreSQL's binary array format: its length (8), then the value."""


class Float8ArrayLoader(Loader):
    """PostgreSQL's binary ``float8[]`` (one dimension, no NULLs) as a numpy array."""

    format = Format.BINARY

    def load(self, data: Any) -> FloatArray:
        raw = bytes(data)
        dimensions = int.from_bytes(raw[0:4], "big")
        if dimensions == 0:
            return np.empty(0, dtype=np.float64)
        if dimensions != 1 or int.from_bytes(raw[4:8], "big") != 0:
            raise ValueError("expected a one-dimensional float8[] without NULLs")
        count = int.from_bytes(raw[12:16], "big")
        elements = np.frombuffer(raw, dtype=_FLOAT8_ELEMENT, offset=20, count=count)
        return elements["value"].astype(np.float64)


FLOAT8_ARRAY_OID = psycopg.postgres.types["float8"].array_oid


def fetch_binary(driver: object, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` from the psycopg connection ``driver`` in binary, each
    ``float8[]`` as a numpy array; no prepared server-side plan (a report, not a hot
    statement)."""
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection for PostgreSQL, got {type(driver)}")
    with driver.cursor(binary=True) as cursor:
        cursor.adapters.register_loader(FLOAT8_ARRAY_OID, Float8ArrayLoader)
        cursor.execute(sql.encode(), prepare=False)
        return list(cursor.fetchall())

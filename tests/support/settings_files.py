"""Settings written as TOML files, as ``dr-gateway run --config`` and ``dr-gateway site-agent
--config`` read them.

A test builds its settings as a dictionary (``tests.support.daemon.gateway_settings``, or a
site agent's in ``simulators.loopback_agents.agent_data``) and :func:`write_toml` writes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALARS = (bool, int, float, str)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, _SCALARS):
        return json.dumps(value)
    if isinstance(value, list | tuple) and all(isinstance(v, _SCALARS) for v in value):
        return json.dumps(list(value))
    raise TypeError(f"no TOML value for {value!r}")


def _pairs(table: Mapping[str, Any]) -> list[str]:
    return [f"{_key(key)} = {_value(value)}" for key, value in table.items()]


def _is_entries(value: Any) -> bool:
    """A list of mappings: ``[[name]]`` entries (an empty list is written as none)."""
    return isinstance(value, list) and all(isinstance(entry, Mapping) for entry in value)


def toml_text(settings: Mapping[str, Any]) -> str:
    """``settings`` as TOML: the top level's values first, then each mapping as a ``[table]``,
    then each list of mappings as ``[[table]]`` entries. A value is a string, a number, a
    boolean, a datetime (an offset datetime, UTC written as ``Z``), a path or a list of
    strings, numbers and booleans."""
    tables = {k: v for k, v in settings.items() if isinstance(v, Mapping)}
    entries = {k: v for k, v in settings.items() if _is_entries(v)}
    lines = _pairs({k: v for k, v in settings.items() if k not in tables and k not in entries})
    for name, table in tables.items():
        lines += ["", f"[{_key(name)}]", *_pairs(table)]
    for name, list_of_tables in entries.items():
        for table in list_of_tables:
            lines += ["", f"[[{_key(name)}]]", *_pairs(table)]
    return "\n".join(lines) + "\n"


def write_toml(path: Path, settings: Mapping[str, Any]) -> Path:
    """Write ``settings`` as TOML (:func:`toml_text`) to ``path``; returns ``path``."""
    path.write_text(toml_text(settings))
    return path

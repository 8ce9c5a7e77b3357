"""The reports as tables of plain values: what the command imports, the columns' kinds as
pandas infers them, CSV as the ``csv`` module writes it, the rollups by the models' names."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import models
from gateway.reports.formats import format_csv, format_json
from gateway.reports.frames import to_frame
from gateway.reports.queries import ROLLUP_TABLES, SITES_TABLE
from gateway.reports.table import Column, ReportTable, table_of_rows

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 6, 1, tzinfo=UTC)

HEAVY_MODULES = ("pandas", "numpy", "pyarrow", "sqlalchemy.orm", "models", "cryptography")
"""What a table, CSV or JSON report must not load: they take longer to import than the
report takes to run (and the ORM loads every model)."""

_RUN_AND_LIST_HEAVY = f"""
import sys
from gateway.cli import main
code = main(sys.argv[1:])
print(code, *sorted(name for name in {HEAVY_MODULES!r} if name in sys.modules))
"""


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> Path:
    text = (ROOT / "config" / "example.toml").read_text()
    path = tmp_path / "gateway.toml"
    path.write_text(text.replace('url = "sqlite:///dr-gateway.db"', f'url = "{database_url}"'))
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ("energy", "--by", "site,day", "--format", "csv"),
        ("energy", "--by", "none", "--format", "json"),
        ("energy", "--by", "site,hour", "--since", "2026-06-01", "--until", "2026-06-02"),
        ("migrations", "--format", "csv"),
        ("events", "--by", "interval", "--format", "json"),
    ],
)
def test_a_text_report_loads_neither_pandas_nor_numpy_nor_the_orm(
    config: Path, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    output = tmp_path / "report.out"
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_HEAVY, "report", argv[0], "--config", str(config),
         *argv[1:], "--output", str(output)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"], f"loaded: {done.stdout.split()[1:]}"
    assert output.read_text().strip()


def test_the_bare_report_loads_neither_pandas_nor_the_orm(config: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_HEAVY, "report", "--config", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == ["0"]


def test_the_reports_read_the_rollups_and_sites_by_the_models_names() -> None:
    for granularity, model in (("hour", models.EnergyRollupHour), ("day", models.EnergyRollupDay)):
        defined = model.__table__
        reference = ROLLUP_TABLES[granularity]
        assert reference.name == defined.name
        assert set(reference.c.keys()) <= set(defined.c.keys())
    assert SITES_TABLE.name == models.Site.__table__.name
    assert set(SITES_TABLE.c.keys()) <= set(models.Site.__table__.c.keys())


# --- kinds as pandas infers them, renderings as pandas wrote them ---------------------------

COLUMNS: dict[str, list[Any]] = {
    "integers": [1, -2, 3],
    "integers and unknown": [1, None, 3],
    "large integers": [2**63, 1, 5],
    "reals and unknown": [1.5, None, float("nan")],
    "integers and reals": [1, 2.25, 0],
    "booleans": [True, False, True],
    "booleans and unknown": [True, None, False],
    "booleans and integers": [True, 1, 0],
    "nothing known": [None, None, None],
    "decimals": [Decimal("1.50"), None, Decimal("2")],
    "text": ["a", "b,c", 'say "hi"'],
    "text and unknown": ["a", None, "line\nbreak"],
    "text and integers": ["a", 1, None],
    "aware times": [T0, None, T0 + timedelta(hours=1)],
}


@pytest.mark.parametrize("label", list(COLUMNS))
def test_a_column_takes_the_type_pandas_gives_the_same_rows(label: str) -> None:
    rows = [(value, float(i)) for i, value in enumerate(COLUMNS[label])]
    table = table_of_rows(["value", "index"], rows)
    expected = pd.DataFrame.from_records(rows, columns=["value", "index"])
    assert to_frame(table).dtypes.to_dict() == expected.dtypes.to_dict()
    if label != "aware times":  # the old renderings wrote these as ISO 8601 text
        assert format_csv(table) == expected.to_csv(index=False, lineterminator="\n")


def test_csv_quotes_and_writes_reals_as_the_csv_module_does() -> None:
    texts = ["plain", "", " spaced ", "a,b", 'q"uote', "new\nline", "cr\ronly", "é", "TOTAL"]
    reals = [0.1 + 0.2, -0.0, 1e16, 5e-324, 123456.789, 1.0, 2.5e-5, 7.0, None]
    table = ReportTable((Column("text, name", "text", texts), Column("real", "float", reals)))
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(["text, name", "real"])
    writer.writerows(zip(texts, reals, strict=True))
    assert format_csv(table) == expected.getvalue()


def test_one_column_of_unknowns_is_written_as_the_csv_module_does() -> None:
    table = ReportTable((Column("share", "float", [None, 0.5]),))
    assert format_csv(table) == 'share\n""\n0.5\n'
    assert format_json(table) == '[\n  {"share": null},\n  {"share": 0.5}\n]\n'
    times = ReportTable((Column("start_at", "time", [T0, None]),))
    assert format_csv(times) == 'start_at\n2026-06-01T00:00:00+00:00\n""\n'

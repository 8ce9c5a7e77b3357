"""The command line: db upgrade, db current and report against a real database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.db import make_engine, make_session_factory, unit_of_work
from gateway.fleet import sync_sites
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path: Path, empty_database_url: str) -> Path:
    text = (ROOT / "config" / "example.toml").read_text()
    path = tmp_path / "gateway.toml"
    path.write_text(
        text.replace('url = "sqlite:///dr-gateway.db"', f'url = "{empty_database_url}"')
    )
    return path


def test_upgrade_current_and_report(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "current", "--config", str(config)]) == 0
    assert "current (empty)" in capsys.readouterr().out
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert main(["db", "current", "--config", str(config)]) == 0
    assert "current 0010; head 0010" in capsys.readouterr().out

    settings = load_settings(config)
    engine = make_engine(settings.database.url)
    with unit_of_work(make_session_factory(engine)) as session:
        sync_sites(session, settings.site, datetime.now(UTC))
    engine.dispose()

    assert main(["report", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "site-a" in table and "TOTAL" in table and "renewable used [kWh]" in table
    assert main(["report", "--config", str(config), "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["site_id"] == "site-a" and row["load_kwh"] == 0
    assert main(["report", "--config", str(config), "--site", "nope"]) == 2
    assert "--site nope" in capsys.readouterr().err

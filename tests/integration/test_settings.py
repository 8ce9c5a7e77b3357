"""Configuration: every example validates; bad files exit 2 naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.baselines import BaselineParams
from gateway.cli import main
from gateway.errors import ConfigError
from gateway.settings import load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["example.toml", "demo.toml"])
def test_shipped_configs_validate(name: str) -> None:
    settings = load_settings(ROOT / "config" / name)
    assert settings.site


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = (ROOT / "config" / "example.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


BAD = [
    ("misspelt key", "gpus_total = 16", "gpus_totl = 16", "site[0].gpus_totl", "unknown key"),
    (
        "negative bandwidth",
        "wan_bandwidth_gbps = 10.0",
        "wan_bandwidth_gbps = -1.0",
        "site[0].wan_bandwidth_gbps",
        "greater than 0",
    ),
    ("alpha above 1", "alpha = 0.1", "alpha = 1.5", "feasibility.alpha", "less than or equal"),
    ("unknown vtn", 'vtn = "utility-a"', 'vtn = "utility-b"', "site[0].vtn", "unknown VTN"),
    ("unknown section", "[scheduler]", "[schedular]", "schedular", "unknown key"),
    (
        "short token",
        'controller_token = "replace-with-the-site-token"',
        'controller_token = "x"',
        "site[0].controller_token",
        "at least 8",
    ),
    (
        "unknown baseline",
        'baseline = "like-days"',
        'baseline = "10-in-10"',
        "programme[0].baseline",
        "'like-days', 'meter-before-after' or 'hour-before'",
    ),
    (
        "adjustment cap above 1",
        "adjustment_cap = 0.2",
        "adjustment_cap = 1.5",
        "programme[0].adjustment_cap",
        "less than or equal to 1",
    ),
    (
        "minimum above the like days",
        "min_like_days = 5",
        "min_like_days = 12",
        "programme[0].min_like_days",
        "12 is above like_days = 10",
    ),
    (
        "a parameter the baseline does not use",
        'baseline = "meter-before-after"',
        'baseline = "meter-before-after"\nlike_days = 10',
        "programme[1].like_days",
        'baseline = "meter-before-after" does not use like_days',
    ),
    (
        "an empty meter window",
        "meter_window_s = 900.0",
        "meter_window_s = 0.0",
        "programme[0].meter_window_s",
        "greater than 0",
    ),
]


@pytest.mark.parametrize(("label", "old", "new", "key", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_file_and_key(
    tmp_path: Path, label: str, old: str, new: str, key: str, words: str
) -> None:
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: {key}:"), message
    assert words in message


@pytest.mark.parametrize(("old", "new", "key"), [BAD[0][1:4], BAD[1][1:4]])
def test_cli_exits_2_with_one_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, key: str
) -> None:
    path = _variant(tmp_path, old, new)
    assert main(["db", "upgrade", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(path) in err and key in err


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[database\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)


def test_programme_baselines_default_to_like_days_and_without_programmes_one_for_any() -> None:
    settings = load_settings(ROOT / "config" / "example.toml")
    [fleet_dr, other] = settings.baseline_programmes()
    assert fleet_dr == ("http://utility-a.example/programmes/fleet-dr", BaselineParams())
    assert other == ("*", BaselineParams(method="meter-before-after", meter_window_s=900.0))
    bare = parse_settings({"programme": [{"market_context": "urn:x"}]}, "test")
    assert bare.baseline_programmes() == (("urn:x", BaselineParams()),)
    assert parse_settings({}, "test").baseline_programmes() == (("*", BaselineParams()),)

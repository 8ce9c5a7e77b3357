"""Configuration: every example validates; bad files exit 2 naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import ConfigError
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


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

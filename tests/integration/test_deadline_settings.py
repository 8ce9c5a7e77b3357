"""Bad step-limit settings (``[feasibility] timeout_margin``, ``timeout_floor_s``,
``[site_controller]``) in a configuration file: refused, naming the file and the key. The
limits themselves are in ``tests/unit/test_deadlines.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]

BAD_SETTINGS = [
    ("margin below 1", "timeout_margin = 3.0", "timeout_margin = 0.5",
     "feasibility.timeout_margin", "greater than or equal to 1"),
    ("negative floor", "timeout_floor_s = 60.0", "timeout_floor_s = -5.0",
     "feasibility.timeout_floor_s", "greater than or equal to 0"),
    ("no attempt", "retry_attempts = 3", "retry_attempts = 0",
     "site_controller.retry_attempts", "greater than or equal to 1"),
    ("longest wait below the first", "retry_max_s = 2.0", "retry_max_s = 0.1",
     "site_controller.retry_max_s", "below retry_initial_s"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "old", "new", "key", "words"), BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS]
)
def test_bad_timeout_settings_name_file_and_key(
    tmp_path: Path, label: str, old: str, new: str, key: str, words: str
) -> None:
    text = (ROOT / "config" / "example.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: {key}:"), message
    assert words in message, message

"""The daemon's process-wide tuning (gateway.process)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway import process

_PROBE = "from gateway.process import limit_malloc_arenas; print(limit_malloc_arenas())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_arena_limit_is_applied_unless_the_operator_set_one() -> None:
    # A process of its own each: the limit stays with the process that sets it.
    env = {"PATH": "/usr/bin:/bin"}
    applied = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert applied.stdout.strip() == "True"
    own = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**env, "MALLOC_ARENA_MAX": "4"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert own.stdout.strip() == "False"


def test_no_limit_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process.sys, "platform", "darwin")
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert process.limit_malloc_arenas() is False

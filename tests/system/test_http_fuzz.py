"""A seeded, bounded schemathesis run against each of the three HTTP servers on loopback
(``simulators/http_fuzz.py``): no 5xx, no answer the OpenAPI document does not allow, no traceback
in the server's log. ``benchmarks/fuzz_http.py`` runs the same at 2,000 requests and more."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from simulators.http_fuzz import (
    LogWatch,
    ServerThread,
    Starter,
    fuzz,
    start_agent,
    start_simulator,
    start_web,
)

REQUESTS_WANTED = 100
"""Per server: at least one full round (every operation in both modes), every credential."""
EXAMPLES_PER_ROUND = 3
SEED = 20261207


def _starter(server: str, tmp_path: Path) -> Starter:
    if server == "simulator":
        return start_simulator()
    if server == "agent":
        return start_agent(tmp_path / "agent")
    return start_web(tmp_path / "web.db")


@pytest.mark.integration
@pytest.mark.parametrize("server", ["simulator", "agent", "web"])
def test_rule_fuzzed_requests_get_documented_answers_and_no_5xx(
    server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    watch = LogWatch()
    with watch.installed(), ServerThread(_starter(server, tmp_path)) as running:
        result = fuzz(
            server,
            running.url,
            requests_wanted=REQUESTS_WANTED,
            seed=SEED,
            examples_per_round=EXAMPLES_PER_ROUND,
            log_watch=watch,
        )
    assert result.requests >= REQUESTS_WANTED
    assert (result.server_errors, result.violations, result.tracebacks) == (0, 0, 0), (
        result.problems
    )
    # The run reached the handlers with the right token and was refused without it, and the
    # negative cases were refused as bad requests, not let through.
    assert any(200 <= status < 300 for status in result.statuses), result.statuses
    assert result.statuses[401] > 0
    assert any(status in (400, 404) for status in result.statuses), result.statuses

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.accounting import PowerSample, ledger_entry

T0 = datetime(2026, 6, 21, 12, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)

CASES = [
    # label, load kW (start, end), renewable kW (start, end), used, grid, curtailed [kWh]
    ("all renewable", (4, 4), (10, 10), 4.0, 0.0, 6.0),
    ("all grid at night", (4, 4), (0, 0), 0.0, 4.0, 0.0),
    ("sun sets within the hour", (4, 4), (8, 0), 2.0, 2.0, 2.0),
]


@pytest.mark.parametrize(
    ("label", "load", "ren", "used", "grid", "curtailed"), CASES, ids=[c[0] for c in CASES]
)
def test_ledger_entry(label, load, ren, used, grid, curtailed) -> None:  # type: ignore[no-untyped-def]
    entry = ledger_entry(
        "s", PowerSample(T0, load[0], ren[0]), PowerSample(T1, load[1], ren[1]), 0.5
    )
    assert entry.renewable_used_kwh == pytest.approx(used)
    assert entry.grid_kwh == pytest.approx(grid)
    assert entry.curtailed_kwh == pytest.approx(curtailed)
    assert entry.renewable_used_kwh + entry.grid_kwh == pytest.approx(entry.load_kwh)
    assert entry.renewable_used_kwh + entry.curtailed_kwh == pytest.approx(entry.renewable_kwh)
    assert entry.migration_kwh == 0.5


def test_ledger_rejects_bad_samples() -> None:
    with pytest.raises(ValueError, match="out of order"):
        ledger_entry("s", PowerSample(T1, 1, 1), PowerSample(T0, 1, 1))
    with pytest.raises(ValueError, match="negative"):
        ledger_entry("s", PowerSample(T0, -1, 1), PowerSample(T1, 1, 1))

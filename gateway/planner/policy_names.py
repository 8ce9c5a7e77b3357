"""The planner's policies by name, as the command line offers them.

The policies themselves (``policies.py``) are numpy code; the parser imports only their
names from here, so that a command that plans nothing starts without numpy.
``tests/test_evaluate_cli.py`` checks that the names are those of ``POLICIES``.
"""

from __future__ import annotations

POLICY_NAMES: tuple[str, ...] = ("static", "energy-greedy", "feasibility-aware", "forecast-global")
"""Every policy's name, in the order of ``gateway.planner.policies.POLICIES``."""

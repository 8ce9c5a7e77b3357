"""The site agent's refusals: each becomes a JSON error answer ``{"error", "detail"}``.

The agent raises the shared :class:`~gateway.sites.serving.RequestError` (also the simulator's),
which the servers' error middleware answers; ``bad_request`` is the agent's own 400.
"""

from __future__ import annotations

from gateway.sites.serving import RequestError as AgentRequestError
from gateway.sites.serving import conflict, not_found

__all__ = ["AgentRequestError", "bad_request", "conflict", "not_found", "unavailable"]


def bad_request(detail: str) -> AgentRequestError:
    return AgentRequestError(400, "bad_request", detail)


def unavailable(detail: str) -> AgentRequestError:
    """A 503: what the agent needs (its workload manager) does not answer now; try again."""
    return AgentRequestError(503, "unavailable", detail)

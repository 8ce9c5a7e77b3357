"""The site agent's refusals: each becomes a JSON error answer ``{"error", "detail"}``."""

from __future__ import annotations


class AgentRequestError(Exception):
    """A request the agent refuses, with its HTTP status and error code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def bad_request(detail: str) -> AgentRequestError:
    return AgentRequestError(400, "bad_request", detail)


def not_found(detail: str) -> AgentRequestError:
    return AgentRequestError(404, "not_found", detail)


def conflict(detail: str) -> AgentRequestError:
    return AgentRequestError(409, "conflict", detail)

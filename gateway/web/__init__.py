"""The gateway's web face: a dashboard, a JSON API, ``/healthz`` and ``/metrics``, served by
the daemon behind a bearer token (``docs/web.md``)."""

from gateway.web.app import WebServer, make_app
from gateway.web.context import DaemonState, VtnState

__all__ = ["DaemonState", "VtnState", "WebServer", "make_app"]

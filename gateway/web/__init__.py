"""The gateway's web face: a dashboard, a JSON API, ``/healthz`` and ``/metrics``, served by
the daemon behind a bearer token (``docs/web.md``). The server is :mod:`gateway.web.app`, the
state it shows :mod:`gateway.web.context`."""

"""openleadr's ``OpenADRServer`` as the test VTNs run it, on loopback, plain or with mutual TLS.

:class:`LoopbackServer` is the one set-up that :mod:`simulators.vtn` and
:mod:`simulators.scripted_vtn` share (``docs/openadr-notes.md``):

- it serves on 127.0.0.1 with an OS-assigned port, or a given one (:attr:`LoopbackServer.url`
  after :meth:`LoopbackServer.start`); ``server.run()`` is not used because it binds a fixed
  port, an aiohttp runner serves the app instead;
- with ``tls`` (:class:`simulators.vtn_tls.VtnTls`) it serves HTTPS that requires a client
  certificate from the CA, signs its messages and checks each VEN's connection and signature
  with the ``ven_lookup`` given. openleadr keeps its signer and ``ven_lookup`` on the
  ``VTNService`` class, shared by every server in the process; each server's own service
  instances get both here instead, so plain and TLS VTNs can live side by side. A VTN missing
  any of its TLS files would silently serve plain HTTP (pitfall 11): that is an error here;
- :func:`on_each_event_response` shows a VTN every eventResponse of every ``oadrCreatedEvent``
  (openleadr's own handlers get only the opt).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from aiohttp import web
from openleadr import OpenADRServer

from gateway.errors import GatewayError
from simulators.vtn_tls import VenLookup, VtnTls, https_options, message_signer


class LoopbackServer:
    """One openleadr ``OpenADRServer`` on 127.0.0.1.

    vtn_id: sent in every message
    poll_interval_s: the poll interval the VTN asks VENs for [wall s], whole seconds >= 1
    tls: serve HTTPS with client certificates and signed messages; None for plain HTTP
    ven_lookup: openleadr's ``ven_lookup`` (who a VEN is and the fingerprint it must
        present), used with ``tls``
    name: what errors call this VTN ("the simulated VTN")
    """

    def __init__(
        self,
        vtn_id: str,
        poll_interval_s: float,
        *,
        tls: VtnTls | None = None,
        ven_lookup: VenLookup | None = None,
        name: str = "the VTN",
    ) -> None:
        self.name = name
        with warnings.catch_warnings():
            # openleadr keys its aiohttp app with a plain string
            warnings.simplefilter("ignore", web.NotAppKeyWarning)
            self.server: Any = OpenADRServer(
                vtn_id=vtn_id,
                http_host="127.0.0.1",
                http_port=0,
                requested_poll_freq=timedelta(seconds=poll_interval_s),
                **https_options(tls),
            )
        if tls is not None and self.server.ssl_context is None:
            raise GatewayError("openleadr built no TLS context: the VTN would serve plain HTTP")
        signer = message_signer(tls)
        for service in self.server.services.values():
            service._create_message = signer
            if tls is not None:
                service.ven_lookup = ven_lookup
                service.verify_message_signatures = True
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    def add_handlers(self, handlers: Mapping[str, Callable[..., Any]]) -> None:
        """openleadr's ``add_handler`` for each (name, handler)."""
        for name, handler in handlers.items():
            self.server.add_handler(name, handler)

    @property
    def url(self) -> str:
        """The VTN's endpoint, e.g. ``http://127.0.0.1:PORT/OpenADR2/Simple/2.0b``."""
        if self._url is None:
            raise GatewayError(f"{self.name} is not started; await start() first")
        return self._url

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:``port``; 0 lets the OS assign one. The VTN's endpoint."""
        context = self.server.ssl_context
        runner = web.AppRunner(self.server.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        scheme = "http" if context is None else "https"
        self._url = f"{scheme}://{host}:{port}{self.server.http_path_prefix}"
        return self._url

    async def stop(self) -> None:
        """Stop listening; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._url = None


def on_each_event_response(server: Any, callback: Callable[[str, Mapping[str, Any]], None]) -> None:
    """Call ``callback(ven_id, event_response)`` for every eventResponse of every
    ``oadrCreatedEvent`` an openleadr ``OpenADRServer`` receives, before it handles the
    message (openleadr gives its own handlers only the opt)."""
    service = server.services["event_service"]
    handle = service.handlers["oadrCreatedEvent"]

    async def created_event(payload: dict[str, Any]) -> Any:
        for response in payload.get("event_responses") or ():
            callback(str(payload.get("ven_id")), response)
        return await handle(payload)

    service.handlers["oadrCreatedEvent"] = created_event

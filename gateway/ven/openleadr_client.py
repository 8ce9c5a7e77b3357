"""openleadr's ``OpenADRClient`` as the gateway runs it (``docs/openadr-notes.md``).

:class:`GatewayClient` changes three things in openleadr's client:

- its event handling: every ``oadrDistributeEvent`` (from a poll or from the
  ``oadrRequestEvent`` at start) goes to the gateway's handler
  (:class:`gateway.ven.ei_event.EventExchange`), never to openleadr's ``on_event``;
- its requests: each answer of the VTN is read up to ``max_message_size_bytes`` and screened
  by :mod:`gateway.ven.inbound` before any XML parser sees it, then validated and read
  (:mod:`gateway.ven.parsing`) in the client's own thread, so a poll never queues behind the
  database and planner work of asyncio's default pool; a request without a usable answer
  gives ``(None, {})``, never a bare None;
- its messages: every argument is escaped (:mod:`gateway.ven.wire`).

:func:`running_jobs` finds openleadr's scheduled jobs in flight, so that stopping a client can
wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from openleadr import OpenADRClient
from openleadr import utils as openleadr_utils

from gateway.ven import inbound, parsing, wire

logger = logging.getLogger(__name__)

_SHOWN_BYTES = 200
"""How much of a VTN's failed answer a log line quotes [bytes]."""


class GatewayClient(OpenADRClient):  # type: ignore[misc]
    """openleadr's client with its event handling replaced by the gateway's.

    openleadr's ``_on_event`` keeps events in memory, answers repeats from a dictionary it
    prunes (a cancelled event sent again raises KeyError and opts out of every event in the
    message), always answers 200 (or 452 for a lower-case VTN id) and cannot answer 450. Here
    the whole ``oadrDistributeEvent`` (from a poll or from the ``oadrRequestEvent`` at start)
    goes to ``on_distribution``; openleadr's own ``on_event`` handlers are never called.
    """

    def __init__(
        self,
        on_distribution: Callable[[Any, Mapping[str, Any]], Awaitable[None]],
        edge: inbound.Edge,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._gateway_on_distribution = on_distribution
        self._edge = edge
        # openleadr's own, with the signing material bound, renders what it is given as it is
        self._create_message = wire.escaping(self._create_message)  # type: ignore[has-type]
        """Every message's arguments escaped (:mod:`gateway.ven.wire`): openleadr's templates
        put them in as they are, and the VTN chooses our venID and the ids we echo."""
        self.request_sent_at: float | None = None
        """When the last request to the VTN was sent [event-loop s]."""
        self.xml_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ven-xml")
        """The thread that screens, validates and reads this VTN's answers: a poll never
        queues behind the database and planner work of asyncio's default pool."""

    async def _on_event(self, message: Mapping[str, Any]) -> None:
        await self._gateway_on_distribution(self, message)

    async def _perform_request(self, service: str, message: Any) -> tuple[Any, Any]:
        """Send ``message`` to the VTN's ``service``; the answer's message type and payload,
        or ``(None, {})`` when there is no usable answer (never a bare None).

        Replaces openleadr's: the answer is read up to ``max_message_size_bytes`` and screened
        by :mod:`gateway.ven.inbound` before any XML parser sees it; validation (schema,
        signature) and reading (:mod:`gateway.ven.parsing`) run in the client's own thread
        (``xml_executor``). openleadr's
        hooks run in its order: before_send_xml, after_receive_xml, before_schema_validation,
        before_parse_xml, after_parse_xml.
        """
        await self._ensure_client_session()
        self.request_sent_at = asyncio.get_running_loop().time()
        url = f"{self.vtn_url}/{service}"
        vtn = self._edge.refusals.vtn_id
        try:
            await self._execute_hooks("before_send_xml", openleadr_utils.ensure_str(message))
            async with self.client_session.post(url, data=message) as response:
                content = await inbound.read_body(response, self._edge.max_message_size_bytes)
                status = response.status
        except inbound.TooLargeError as exc:
            await self._edge.refusals.refused(service, exc.refusal)
            return None, {}
        except Exception as exc:  # aiohttp raises what it meets: no usable answer, no traceback
            logger.warning(
                "VTN %s: request to %s failed: %s: %s", vtn, url, type(exc).__name__, exc
            )
            return None, {}
        await self._execute_hooks("after_receive_xml", content.decode("utf-8", "replace"))
        if status != 200:
            logger.warning(
                "VTN %s answered HTTP %d to %s: %s",
                vtn,
                status,
                service,
                content[:_SHOWN_BYTES].decode("utf-8", "replace"),
            )
            return None, {}
        if not await self._edge.screen(service, content, self.xml_executor):
            return None, {}
        return await self._read(service, content)

    async def _read(self, service: str, content: bytes) -> tuple[Any, Any]:
        """Validate and read an answer that passed the edge; ``(None, {})`` when it fails."""
        vtn = self._edge.refusals.vtn_id
        text = content.decode("utf-8", "replace")
        try:
            await self._execute_hooks("before_schema_validation", text)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                self.xml_executor, parsing.validate, content, self.vtn_fingerprint
            )
            await self._execute_hooks("before_parse_xml", text)
            message_type, payload = await loop.run_in_executor(
                self.xml_executor, parsing.parse_message, content
            )
            await self._execute_hooks("after_parse_xml", message_type, payload)
        except Exception as exc:  # lxml, signxml and xmltodict raise what they meet
            logger.warning(
                "VTN %s: the answer to %s failed the schema, the signature or could not be "
                "read: %s: %s",
                vtn,
                service,
                type(exc).__name__,
                str(exc)[:_SHOWN_BYTES],
            )
            return None, {}
        response = payload.get("response") if isinstance(payload, Mapping) else None
        code = response.get("response_code") if isinstance(response, Mapping) else None
        if code is not None and code != 200:
            logger.warning(
                "VTN %s answered %s with code %s: %s",
                vtn,
                service,
                code,
                str(response.get("response_description") if response else "")[:_SHOWN_BYTES],
            )
        return message_type, payload


def running_jobs(client: Any) -> list[asyncio.Future[Any]]:
    """openleadr's scheduled jobs in flight (polls, reports), to await them after shutdown."""
    with contextlib.suppress(Exception):
        executor = client.scheduler._lookup_executor("default")
        return [job for job in executor._pending_futures if not job.done()]
    return []

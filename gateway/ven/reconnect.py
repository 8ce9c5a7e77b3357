"""Keeping one VTN connection alive: outage detection, back-off with jitter, clean rebuilds.

openleadr's client has no reconnect logic (``docs/openadr-notes.md`` pitfall 9): when its VTN goes
away it polls and logs errors for ever (``_perform_request`` answers ``(None, {})``), a
re-registration leaves a second set of report jobs running, and a VTN that no longer knows
the VEN can answer 463 to every poll for ever. This module is the one owner of reconnection
for :class:`gateway.ven.client.VenConnection`:

- :class:`ClientWatch` watches the requests of one openleadr client (it replaces methods on
  the instance, so a subclass of ``OpenADRClient`` is watched the same way): every request
  is bounded by a timeout (a hanging VTN counts as failed); ``outage_after_failures`` polls
  in a row without a usable answer (no connection, timeout, an HTTP error, an answer that is
  not valid or not signed by the VTN) make an *outage*; as many polls in a row answered
  "not registered" (:data:`NOT_REGISTERED_CODES`) make a *lost registration*; a VTN asking
  for re-registration (``oadrRequestReregistration``) makes a *re-registration*. openleadr's
  own re-registration (which duplicates the report jobs) is never run. A registration of the
  VEN's reports (``oadrRegisterReport``) without an ``oadrRegisteredReport`` answer (a timeout,
  a refused answer) is sent again after the next normally answered poll, then after 2, 4, ...
  up to :data:`REPORT_RETRY_MAX_POLLS` polls, until the VTN takes it: openleadr drops the
  failure silently, and the VEN would never report (the VTN asks for reports in that answer).
  The events go on meanwhile; the failure is logged once and the success after it once. A
  registration refused with a "not registered" code is remembered
  (:attr:`ClientWatch.refusal`): the next client asks for a new venID instead (an openleadr
  VTN with mutual TLS that restarted without its registrations refuses the venID it no longer
  knows, then asks the VEN to register again, for ever: the 463 loop);
- :class:`Reconnector`: the loop. After a loss it stops the client completely and builds
  and registers a new one (the venID is kept), waiting a back-off delay
  (:class:`gateway.backoff.Backoff`) before each attempt until one succeeds. A
  re-registration or a lost registration after a healthy spell (a poll answered normally
  since the last rebuild) is rebuilt at once; otherwise, and after every failed attempt, the
  next delay is waited. The delay grows until a poll is answered
  normally again, so a VTN that refuses the VEN over and over is retried ever more slowly,
  never in a tight loop. A :class:`~gateway.errors.ConfigError` ends the loop for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.backoff import Backoff
from gateway.errors import ConfigError, GatewayError

logger = logging.getLogger(__name__)

_CANCEL_WAIT_S = 0.5
"""How long stopping the loop waits for it to end before cancelling it again [wall s]."""
REPORT_RETRY_MAX_POLLS = 64
"""The longest spell, in polls, between two registrations of the VEN's reports that the VTN
did not take."""
NOT_REGISTERED_CODES = frozenset({452, 463})
"""OpenADR response codes meaning "you are not registered here": 463 Not Registered or
Authorized; 452 Invalid ID (answered to a venID the VTN does not know). Only the answer to a
poll (which carries nothing but the venID) or to a registration is read this way."""

LossKind = Literal["outage", "unregistered", "reregistration"]


@dataclass(frozen=True)
class Loss:
    """Why a connection has to be rebuilt."""

    kind: LossKind
    reason: str
    healthy: bool
    """A poll was answered normally between the client's start and the loss."""


@dataclass(frozen=True)
class Refusal:
    """The VTN answered our registration with a "not registered" code."""

    ven_id: str | None
    """The venID we asked to register with; None for a registration as a new VEN."""
    code: int
    description: str


class ClientWatch:
    """Watches one openleadr client and says when its connection is lost.

    client: an ``openleadr.OpenADRClient`` (or subclass), before ``run()``; built inside the
        event loop
    failures_threshold: polls in a row without a usable answer, or answered "not registered",
        that make a loss
    timeout_s: the longest wait for one answer of the VTN [wall s]
    refused_ven_id: a venID the VTN refused to register last time; the client registers as
        a new VEN instead of asking for it again
    name: the VTN, for logs
    """

    def __init__(
        self,
        client: Any,
        failures_threshold: int,
        timeout_s: float,
        refused_ven_id: str | None = None,
        name: str = "",
    ) -> None:
        if failures_threshold < 1 or timeout_s <= 0:
            raise ValueError(
                f"expected failures_threshold >= 1 and timeout_s > 0, got {failures_threshold} "
                f"and {timeout_s}"
            )
        self._client = client
        self._threshold = failures_threshold
        self._timeout_s = timeout_s
        self._failed_polls = 0
        self._unregistered_polls = 0
        self._last_failure = "no usable answer"
        self._healthy = False
        self._registering = False
        self._refused_ven_id = refused_ven_id
        self._name = name
        self._lost: asyncio.Future[Loss] = asyncio.get_running_loop().create_future()
        self.refusal: Refusal | None = None
        """The VTN's last "not registered" answer to a registration; None when there was none."""
        self._reports_registered = False
        self._unregistered_reports: Any = None
        """The reports of a registration the VTN did not take; None when it took them."""
        self._retry_every_polls = 1
        self._polls_until_retry = 0
        self._perform = client._perform_request
        self._poll = client.poll
        self._register = client.create_party_registration
        self._register_reports = client.register_reports
        client._perform_request = self._perform_request
        client.poll = self._poll_once
        client.create_party_registration = self._create_party_registration
        client.register_reports = self._register_reports_once
        client.create_party_reregistration = self._reregistration_requested

    @property
    def healthy(self) -> bool:
        """A poll was answered normally since the client was built."""
        return self._healthy

    @property
    def loss(self) -> Loss | None:
        """The loss, once there is one."""
        return self._lost.result() if self._lost.done() else None

    async def lost(self) -> Loss:
        """Wait until the connection is lost; why."""
        return await asyncio.shield(self._lost)

    # -- the client's methods ------------------------------------------------------------

    async def _perform_request(self, service: str, message: Any) -> Any:
        """openleadr's ``_perform_request``, bounded by the timeout."""
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await self._perform(service, message)
        except TimeoutError:
            self._last_failure = f"no answer within {self._timeout_s:g} s"
            return None, {}
        message_type = _message_type(result)
        if message_type is None and result is not None:
            self._last_failure = "no usable answer (see openleadr's log)"
        elif message_type == "oadrRegisteredReport":
            self._reports_registered = True
        elif self._registering:
            # openleadr's VTN answers a refused registration with an oadrResponse, not an
            # oadrCreatedPartyRegistration: the request tells what the code is about.
            code = _response_code(result)
            if code in NOT_REGISTERED_CODES:
                self.refusal = Refusal(
                    _optional_str(self._client.ven_id), code, _response_description(result)
                )
        return result

    async def _create_party_registration(self, *args: Any, **kwargs: Any) -> Any:
        """openleadr's ``create_party_registration``: as a new VEN if the VTN refused our
        venID last time (openleadr sends ``client.ven_id``, whatever it is passed)."""
        client = self._client
        if self._refused_ven_id is not None and client.ven_id == self._refused_ven_id:
            logger.info(
                "VTN %s: registering as a new VEN; it refused VEN id %s",
                self._name,
                self._refused_ven_id,
            )
            client.ven_id = None
            if "ven_id" in kwargs:
                kwargs["ven_id"] = None
        self._registering = True
        try:
            return await self._register(*args, **kwargs)
        finally:
            self._registering = False

    async def _register_reports_once(self, reports: Any) -> None:
        """openleadr's ``register_reports``; one the VTN does not take is sent again after
        the next polls (see the module notes)."""
        self._reports_registered = False
        await self._register_reports(reports)
        retrying = self._unregistered_reports is not None
        if self._reports_registered:
            if retrying:
                logger.info("VTN %s took the VEN's reports", self._name)
            self._unregistered_reports = None
            self._retry_every_polls = 1
            return
        if retrying:
            self._retry_every_polls = min(2 * self._retry_every_polls, REPORT_RETRY_MAX_POLLS)
        else:
            logger.warning(
                "VTN %s: no oadrRegisteredReport answer to the VEN's oadrRegisterReport (%s); "
                "registering the reports again after the next polls",
                self._name,
                self._last_failure,
            )
        self._unregistered_reports = reports
        self._polls_until_retry = self._retry_every_polls

    async def _retry_reports_if_due(self) -> None:
        """After a normally answered poll: register the reports again when it is time."""
        if self._unregistered_reports is None:
            return
        self._polls_until_retry -= 1
        if self._polls_until_retry <= 0:
            await self._register_reports_once(self._unregistered_reports)

    async def _poll_once(self) -> Any:
        """openleadr's ``poll``: count what the VTN answers."""
        result = await self._poll()
        message_type = _message_type(result)
        code = _response_code(result)
        if result is not None and message_type is None:
            self._failed_polls += 1
            if self._failed_polls >= self._threshold:
                self._declare(
                    "outage", f"{self._failed_polls} polls in a row failed: {self._last_failure}"
                )
            return result
        self._failed_polls = 0
        if code in NOT_REGISTERED_CODES:
            self._unregistered_polls += 1
            if self._unregistered_polls >= self._threshold:
                self._declare(
                    "unregistered",
                    f"{self._unregistered_polls} polls in a row answered {code} "
                    f"({_response_description(result)}): the VTN no longer knows this VEN",
                )
            return result
        self._unregistered_polls = 0
        if message_type != "oadrRequestReregistration":
            self._healthy = True
            await self._retry_reports_if_due()
        return result

    async def _reregistration_requested(self, registration_id: object = None) -> None:
        """Replaces openleadr's ``create_party_reregistration``, which would register again
        inside the running client and leave its report jobs running twice."""
        self._declare("reregistration", "the VTN asked the VEN to register again")

    def _declare(self, kind: LossKind, reason: str) -> None:
        if not self._lost.done():
            self._lost.set_result(Loss(kind=kind, reason=reason, healthy=self._healthy))


class Reconnector:
    """The loop that keeps one connection up (see the module notes).

    name: the connection, for logs
    connect: one attempt to start; raises GatewayError (try again) or ConfigError (give up)
    disconnect: stops the current client completely
    lost: waits until the current client's connection is lost
    went_down: marks the connection unavailable, logging once
    backoff: the delays between attempts
    sleep: waits a number of wall seconds
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], Awaitable[None]],
        disconnect: Callable[[], Awaitable[None]],
        lost: Callable[[], Awaitable[Loss]],
        went_down: Callable[[str], None],
        backoff: Backoff,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._connect = connect
        self._disconnect = disconnect
        self._lost = lost
        self._went_down = went_down
        self.backoff = backoff
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def ensure_running(self, *, connected: bool) -> None:
        """Start the loop unless it runs: ``connected`` says whether a client is up now
        (the loop waits for its loss) or not (the loop starts with a back-off delay)."""
        if not self.running:
            self._stopping = False
            self._task = asyncio.create_task(
                self._run(connected), name=f"reconnect VTN {self.name}"
            )

    async def cancel(self) -> None:
        """Stop the loop; a no-op from inside the loop itself."""
        task, self._task = self._task, None
        if task is None or task is asyncio.current_task():
            self._task = task
            return
        self._stopping = True
        while not task.done():  # again if a library swallowed the cancellation
            task.cancel()
            await asyncio.wait({task}, timeout=_CANCEL_WAIT_S)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "VTN %s: the reconnection loop had failed", self.name, exc_info=task.exception()
            )

    async def _run(self, connected: bool) -> None:
        while not self._stopping:
            try:
                immediately = False
                if connected:
                    immediately = await self._rebuild_after_loss()
                delay_s = 0.0 if immediately else self.backoff.next_delay_s()
                if delay_s > 0:
                    logger.debug("VTN %s: next attempt in %.2f s", self.name, delay_s)
                    await self._sleep(delay_s)
                await self._connect()
            except ConfigError:
                return  # the connection has said why; final
            except GatewayError:
                connected = False
            except Exception:  # task boundary: the loop must outlive any surprise
                logger.exception("VTN %s: reconnecting failed unexpectedly", self.name)
                connected = False
            else:
                connected = True

    async def _rebuild_after_loss(self) -> bool:
        """Wait for the loss of the current client and stop it; whether to connect again
        at once."""
        loss = await self._lost()
        await self._disconnect()
        if loss.healthy:
            self.backoff.reset()
        if loss.kind == "reregistration":
            logger.info("VTN %s: %s; rebuilding its client", self.name, loss.reason)
        else:
            self._went_down(loss.reason)
        return loss.kind != "outage" and loss.healthy


def _message_type(result: object) -> str | None:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str):
        return result[0]
    return None


def _response(result: object) -> Mapping[str, Any]:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping):
        response = result[1].get("response")
        if isinstance(response, Mapping):
            return response
    return {}


def _response_code(result: object) -> int | None:
    code = _response(result).get("response_code")
    try:
        return None if code is None else int(code)
    except (TypeError, ValueError):
        return None


def _response_description(result: object) -> str:
    return str(_response(result).get("response_description") or "no description")


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)

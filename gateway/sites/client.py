"""HTTP client of one site controller (``docs/site-api.md``).

Every answer is parsed into the typed records of :mod:`gateway.sites.records`. Failures become
:class:`SiteControllerError`: unreachable controllers, timeouts, 5xx answers, 408 and 429 are
``transient``; other 4xx answers and malformed documents are not, and carry the controller's
``detail``. With a :class:`RetryPolicy` every call is tried again after a transient failure,
with exponential back-off and jitter, a bounded number of times; every call is safe to
repeat (reads, and mutating calls keyed by their migration id). The bearer token is never
logged nor put into a message. Over ``https://`` each client uses its site's TLS context
(:mod:`gateway.sites.tls`: the CA that verifies the controller, the client certificate of
mutual TLS); a controller whose certificate does not verify is a configuration problem, not
``transient``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from gateway.backoff import Backoff
from gateway.errors import SiteControllerError
from gateway.sites.fields import FieldError, Fields
from gateway.sites.records import (
    RESERVATION_STATES,
    Checkpoint,
    JobSpec,
    Operation,
    OperationKind,
    ReservationState,
    SiteStatus,
    checkpoint_to_wire,
    job_spec_to_wire,
    parse_job_status,
    parse_operation,
    parse_state,
    parse_status,
)

logger = logging.getLogger(__name__)

_TRANSIENT_4XX = frozenset({408, 429})
_DETAIL_MAX_CHARS = 300


def _segment(value: str) -> str:
    return quote(value, safe="")


@dataclass(frozen=True)
class RetryPolicy:
    """How a call that failed transiently is tried again.

    attempts: tries of one call, the first included [-]; initial_s, max_s: the waits between
    tries double from ``initial_s`` up to ``max_s``, each varied by +-50 % and never above
    ``max_s`` [wall s]. A call therefore gives up after at most ``attempts`` times the
    request timeout plus ``(attempts - 1) * max_s``.
    """

    attempts: int = 3
    initial_s: float = 0.25
    max_s: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(
                f"expected 0 < initial_s <= max_s, got initial_s = {self.initial_s}, "
                f"max_s = {self.max_s}"
            )


NO_RETRY = RetryPolicy(attempts=1)


class SiteControllerClient:
    """Talks to the controller of site ``site_id`` at ``base_url``.

    token: the site's bearer token; session: shared aiohttp session (owned by the caller);
    timeout_s: limit on each whole request [s]; retry: how transient failures are retried
    (default: not at all); rng: the source of the back-off's jitter (seed it in tests);
    sleep: waits between tries [wall s] (tests may record them); ssl_context: the TLS context
    of this site's ``https://`` calls (:func:`gateway.sites.tls.client_context`), None for
    aiohttp's default (the system's trust store).
    """

    def __init__(
        self,
        site_id: str,
        base_url: str,
        token: str,
        session: aiohttp.ClientSession,
        timeout_s: float = 10.0,
        *,
        retry: RetryPolicy = NO_RETRY,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.site_id = site_id
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._retry = retry
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._ssl: ssl.SSLContext | bool = True if ssl_context is None else ssl_context

    def __repr__(self) -> str:
        return f"SiteControllerClient(site_id={self.site_id!r}, base_url={self.base_url!r})"

    @property
    def token(self) -> str:
        """The site's bearer token, for handing to the source of a transfer so that it can
        upload to this site (``target_token``); never log it."""
        return self._token

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        missing_ok: bool = False,
    ) -> Any:
        """One call, tried again on transient failures as the retry policy says; the decoded
        JSON answer, or None for a 404 when ``missing_ok``."""
        backoff = Backoff(self._retry.initial_s, self._retry.max_s, self._rng)
        for attempt in range(1, self._retry.attempts + 1):
            try:
                return await self._request(method, path, body, missing_ok=missing_ok)
            except SiteControllerError as exc:
                if not exc.transient:
                    raise
                if attempt == self._retry.attempts:
                    if attempt == 1:
                        raise
                    raise SiteControllerError(
                        f"{exc} (gave up after {attempt} attempts)",
                        status=exc.status,
                        transient=True,
                    ) from exc
                delay_s = backoff.next_delay_s()
                logger.debug(
                    "site %s: attempt %d of %s %s failed, again in %.2f s: %s",
                    self.site_id,
                    attempt,
                    method,
                    path,
                    delay_s,
                    exc,
                )
                await self._sleep(delay_s)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        missing_ok: bool = False,
    ) -> Any:
        """One request; the decoded JSON answer, or None for a 404 when ``missing_ok``."""
        where = f"site {self.site_id}: {method} {path}"
        headers = {"Authorization": f"Bearer {self._token}"}
        logger.debug("%s", where)
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=self._timeout,
                ssl=self._ssl,
            ) as response:
                status = response.status
                text = await response.text()
        except aiohttp.ClientConnectorCertificateError as exc:
            raise SiteControllerError(
                f"{where} failed: the controller's TLS certificate does not verify "
                f"({exc.certificate_error}); check the site's controller_ca_path and that the "
                "certificate names the controller_url's host",
                transient=False,
            ) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or "timed out"
            raise SiteControllerError(
                f"{where} failed: {type(exc).__name__}: {reason}", transient=True
            ) from exc
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            raise _error_from_answer(where, status, text)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise SiteControllerError(
                f"{where}: answer {status} is not JSON", status=status, transient=False
            ) from exc

    def _check_operation(
        self, op: Operation, migration_id: str, kind: OperationKind, job_id: str
    ) -> Operation:
        if (op.migration_id, op.kind, op.job_id) != (migration_id, kind, job_id):
            raise SiteControllerError(
                f"site {self.site_id}: asked for {kind} of job {job_id} in migration "
                f"{migration_id}, got {op.kind} of job {op.job_id} in {op.migration_id}",
                transient=False,
            )
        return op

    async def status(self) -> SiteStatus:
        """The site's status; raises if the controller reports another site id."""
        status = parse_status(await self._call("GET", "/v1/status"))
        if status.site_id != self.site_id:
            raise SiteControllerError(
                f"controller at {self.base_url} reports site {status.site_id!r}, "
                f"expected {self.site_id!r}",
                transient=False,
            )
        return status

    async def _reserve(
        self, migration_id: str, job_id: str, gpus: int, power_kw: float
    ) -> ReservationState:
        answer = await self._call(
            "POST",
            "/v1/reservations",
            {"migration_id": migration_id, "job_id": job_id, "gpus": gpus, "power_kw": power_kw},
        )
        return parse_state(answer, "state", RESERVATION_STATES)

    async def reserve(self, migration_id: str, job_id: str, gpus: int, power_kw: float) -> None:
        """Hold ``gpus`` and ``power_kw`` [kW] for a migration; 409 when they are not free.

        A repeat of an earlier reserve succeeds while the reservation is held or was consumed
        by its restore; once released it is a conflict (a reservation never comes back).
        """
        state = await self._reserve(migration_id, job_id, gpus, power_kw)
        if state == "released":
            raise SiteControllerError(
                f"site {self.site_id}: reservation for migration {migration_id} was already "
                "released",
                status=409,
                transient=False,
            )

    async def reservation(
        self, migration_id: str, job_id: str, gpus: int, power_kw: float
    ) -> ReservationState | None:
        """The state of a migration's reservation here, learnt by repeating its reserve (the
        API has no read of one reservation): ``reserved``, ``consumed`` or ``released``;
        None when none is held and none can be made (409).

        Ask only about a migration whose reserve was announced: the repeat then changes
        nothing, or makes the reservation that the announcement promised.
        """
        try:
            return await self._reserve(migration_id, job_id, gpus, power_kw)
        except SiteControllerError as exc:
            if exc.status == 409:
                return None
            raise

    async def release_reservation(self, migration_id: str) -> None:
        """Release a reservation; also fine when none is held."""
        await self._call("DELETE", f"/v1/reservations/{_segment(migration_id)}")

    async def checkpoint(self, job_id: str, migration_id: str) -> Operation:
        """Stop a running job at this (source) site and write its checkpoint."""
        answer = await self._call(
            "POST", f"/v1/jobs/{_segment(job_id)}/checkpoint", {"migration_id": migration_id}
        )
        return self._check_operation(parse_operation(answer), migration_id, "checkpoint", job_id)

    async def transfer(
        self,
        job_id: str,
        migration_id: str,
        target_site_id: str,
        target_url: str,
        bandwidth_gbps: float,
        target_token: str | None = None,
    ) -> Operation:
        """Send a checkpointed job's checkpoint to the target at ``bandwidth_gbps`` [Gbit/s].

        target_token: the target's bearer token, for a source that uploads the checkpoint to
        the target itself (the site agent); left out when None.
        """
        body: dict[str, Any] = {
            "migration_id": migration_id,
            "target_site_id": target_site_id,
            "target_url": target_url,
            "bandwidth_gbps": bandwidth_gbps,
        }
        if target_token is not None:
            body["target_token"] = target_token
        answer = await self._call("POST", f"/v1/jobs/{_segment(job_id)}/transfer", body)
        return self._check_operation(parse_operation(answer), migration_id, "transfer", job_id)

    async def restore(
        self, job: JobSpec, migration_id: str, source_site_id: str, checkpoint: Checkpoint
    ) -> Operation:
        """Load ``checkpoint`` at this (target) site into the migration's reservation."""
        answer = await self._call(
            "POST",
            f"/v1/jobs/{_segment(job.job_id)}/restore",
            {
                "migration_id": migration_id,
                "source_site_id": source_site_id,
                "checkpoint": checkpoint_to_wire(checkpoint),
                "job": job_spec_to_wire(job),
            },
        )
        return self._check_operation(parse_operation(answer), migration_id, "restore", job.job_id)

    async def operation(self, migration_id: str, kind: OperationKind) -> Operation | None:
        """The operation of that migration and kind, or None if this site never started it."""
        answer = await self._call(
            "GET", f"/v1/operations/{_segment(migration_id)}/{kind}", missing_ok=True
        )
        if answer is None:
            return None
        op = parse_operation(answer)
        if (op.migration_id, op.kind) != (migration_id, kind):
            raise SiteControllerError(
                f"site {self.site_id}: asked for {kind} of {migration_id}, "
                f"got {op.kind} of {op.migration_id}",
                transient=False,
            )
        return op

    async def resume(self, job_id: str, migration_id: str) -> None:
        """Run a checkpointing or checkpointed job again at this (source) site (an abort)."""
        answer = await self._call(
            "POST", f"/v1/jobs/{_segment(job_id)}/resume", {"migration_id": migration_id}
        )
        parse_job_status(answer)

    async def release_job(self, job_id: str, migration_id: str) -> None:
        """Forget a moved job and its checkpoint at this (source) site."""
        await self._call(
            "POST", f"/v1/jobs/{_segment(job_id)}/release", {"migration_id": migration_id}
        )


def _error_from_answer(where: str, status: int, text: str) -> SiteControllerError:
    code, detail = "error", text.strip()[:_DETAIL_MAX_CHARS]
    try:
        fields = Fields(json.loads(text))
        code, detail = fields.text("error"), fields.text("detail")
    except (ValueError, FieldError):
        pass  # not our JSON error shape: keep the raw text as the detail
    transient = status >= 500 or status in _TRANSIENT_4XX
    return SiteControllerError(
        f"{where} -> {status} {code}: {detail}", status=status, transient=transient
    )

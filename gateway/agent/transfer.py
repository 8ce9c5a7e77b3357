"""Checkpoint transfer between two site agents (issue 5, interface 1).

The SOURCE agent streams a checkpoint file to the TARGET agent:

``PUT /v1/checkpoints/{migration_id}``
    Body: the checkpoint's bytes, streamed. Headers: ``Authorization: Bearer <target token>``,
    ``X-Checkpoint-Sha256`` (hex sha256 of the whole file), ``X-Checkpoint-Size`` (bytes of the
    whole file) and, to resume, ``Content-Range: bytes START-END/TOTAL`` with END = TOTAL - 1
    and START equal to the bytes the target already holds (else ``416`` with
    ``X-Received-Bytes``). ``Expect: 100-continue`` is honoured: a request that would be refused
    is refused before its body is sent.
    Answers: ``201 {"migration_id", "size_bytes", "sha256", "state": "complete"}`` once the
    whole file arrived and its size and sha256 match; ``200`` with the same document for a
    repeat after completion with the same sha256 (idempotent, the body is not read);
    ``202 {..., "state": "partial", "received_bytes"}`` when the body ended cleanly before the
    end of the file; ``422 {"error": "checksum_mismatch" | "size_mismatch", ...}`` and the
    partial file discarded; ``409 transfer_in_progress`` while another PUT of the same migration
    id streams; ``409 conflict`` when the migration id already names another checkpoint;
    ``400 bad_request`` naming the header; ``401 unauthorized``. A connection cut keeps every
    byte that arrived. A target that holds every byte unverified (it stopped between the last
    byte and the verification) verifies them on the next PUT from 0 and answers ``200``, or
    discards them and takes the body.

``HEAD /v1/checkpoints/{migration_id}``
    ``200`` with ``X-Received-Bytes``, ``X-Checkpoint-Complete: true|false``,
    ``X-Checkpoint-Size`` and ``X-Checkpoint-Sha256``; ``404`` when nothing was received.

The receiving side is :mod:`gateway.agent.checkpoint_receiver` (its files:
:mod:`gateway.agent.checkpoint_store`, its disk writes: :mod:`gateway.agent.spool`); this
module is the sending side and re-exports what an agent needs of the others. The sender reads
the target's HEAD before each attempt and resumes from there; it sends with ``Expect:
100-continue``; it paces the body with :class:`gateway.agent.throttle.TokenBucket` when given
a rate. Measured figures: ``benchmarks/transfer.py``. TLS is the caller's session's: the site
agent's connector presents its certificate to ``https://`` targets and verifies theirs
(``[tls]`` in ``docs/site-agent.md``).

Errors of the sending side form one family under :class:`CheckpointTransferError`:
:class:`CheckpointUnauthorizedError` (401/403), :class:`CheckpointRejectedError` (422: the
target discarded what it received), :class:`CheckpointConflictError` (409: the migration id
names another checkpoint at the target), :class:`CheckpointRangeError` (416 that re-reading
the target's offset does not fix) and :class:`CheckpointRetriesExhaustedError` (cut streams,
timeouts and 5xx answers beyond the retry limit). Only the last one is ``transient``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import aiohttp

from gateway.agent.checkpoint_receiver import (
    CHECKPOINT_PATH,
    SHA256_HEX,
    bearer_authorizer,
    checkpoint_routes,
)
from gateway.agent.checkpoint_store import (
    CheckpointState,
    check_migration_id,
    checkpoint_state,
    file_sha256,
    verified_checkpoint,
)
from gateway.agent.throttle import TokenBucket
from gateway.errors import GatewayError, InputError

__all__ = [
    "CHECKPOINT_PATH",
    "DEFAULT_CHUNK_BYTES",
    "CheckpointConflictError",
    "CheckpointRangeError",
    "CheckpointRejectedError",
    "CheckpointRetriesExhaustedError",
    "CheckpointState",
    "CheckpointTransferError",
    "CheckpointUnauthorizedError",
    "SendResult",
    "bearer_authorizer",
    "checkpoint_routes",
    "checkpoint_state",
    "file_sha256",
    "send_checkpoint",
    "verified_checkpoint",
]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
"""Bytes read from the checkpoint file per read."""
_SLICE_S = 0.02
"""A throttled stream is sent in slices of about this many seconds of its rate [s]."""
_MIN_SLICE_BYTES = 16 * 1024
_MAX_RANGE_REFUSALS = 3
_DETAIL_MAX_CHARS = 300


class CheckpointTransferError(GatewayError):
    """A checkpoint could not be sent to the target agent.

    status: the target's HTTP status when it answered; code: its JSON ``error`` code;
    transient: whether trying the whole transfer again later may succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.transient = transient


class CheckpointUnauthorizedError(CheckpointTransferError):
    """The target refused the bearer token (401 or 403)."""


class CheckpointRejectedError(CheckpointTransferError):
    """The target received the whole file but its size or sha256 did not match (422).

    The target discarded its partial copy.
    """


class CheckpointConflictError(CheckpointTransferError):
    """The migration id already names another checkpoint at the target (409 ``conflict``)."""


class CheckpointRangeError(CheckpointTransferError):
    """The target kept refusing the resume offset (416) after it was read again."""


class CheckpointRetriesExhaustedError(CheckpointTransferError):
    """Cut streams, timeouts or 5xx answers repeated beyond the retry limit."""


class _TransientFailure(Exception):
    """One attempt failed in a way that a later attempt may not (internal)."""


@dataclass(frozen=True)
class SendResult:
    """Outcome of :func:`send_checkpoint`.

    sent_bytes: body bytes handed to the connection over all attempts [bytes];
    resumed_from_bytes: offset the successful attempt started at [bytes]; attempts: PUTs
    made; duration_s: wall time of the whole call, hashing included [s]; already_complete:
    the target held the verified checkpoint before this call sent anything.
    """

    migration_id: str
    size_bytes: int
    sha256: str
    sent_bytes: int
    resumed_from_bytes: int
    attempts: int
    duration_s: float
    already_complete: bool

    @property
    def rate_bytes_per_s(self) -> float:
        """Size of the checkpoint over the call's duration [bytes/s]."""
        return self.size_bytes / self.duration_s if self.duration_s > 0 else float("inf")


@dataclass(frozen=True)
class _Held:
    received_bytes: int
    complete: bool
    sha256: str | None


@dataclass
class _Progress:
    sent_bytes: int
    last_progress_s: float
    body_done: bool = False


class _FileBody:
    """The rest of a file from ``start_bytes``, read ahead in a thread, paced by a bucket."""

    def __init__(
        self,
        path: Path,
        start_bytes: int,
        size_bytes: int,
        read_bytes: int,
        bucket: TokenBucket | None,
    ) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._offset = start_bytes
        self._size_bytes = size_bytes
        self._read_bytes = read_bytes
        self._bucket = bucket
        self._slice_bytes = read_bytes
        if bucket is not None:
            paced = int(bucket.rate_bytes_per_s * _SLICE_S)
            self._slice_bytes = max(_MIN_SLICE_BYTES, min(read_bytes, paced))
        self._reading: asyncio.Future[bytes] | None = None
        self.progress = _Progress(0, time.monotonic())

    def _read_ahead(self) -> None:
        self._reading = None
        if self._offset < self._size_bytes:
            n = min(self._read_bytes, self._size_bytes - self._offset)
            loop = asyncio.get_running_loop()
            self._reading = loop.run_in_executor(None, os.pread, self._fd, n, self._offset)

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        self._read_ahead()
        while self._reading is not None:
            data = await self._reading
            if not data:
                raise CheckpointTransferError(f"checkpoint file shrank below {self._offset} bytes")
            self._offset += len(data)
            self._read_ahead()
            view = memoryview(data)
            for begin in range(0, len(view), self._slice_bytes):
                piece = view[begin : begin + self._slice_bytes]
                if self._bucket is not None:
                    await self._bucket.take(len(piece))
                yield piece
                self.progress.sent_bytes += len(piece)
                self.progress.last_progress_s = time.monotonic()
        self.progress.body_done = True

    async def close(self) -> None:
        if self._reading is not None:
            await asyncio.wait([self._reading])
            if not self._reading.cancelled():
                self._reading.exception()
        os.close(self._fd)


def _checkpoint_url(target_url: str, migration_id: str) -> str:
    return target_url.rstrip("/") + CHECKPOINT_PATH.format(
        migration_id=quote(migration_id, safe="")
    )


async def _detail(response: aiohttp.ClientResponse) -> tuple[str | None, str]:
    try:
        document = json.loads(await response.text())
    except (ValueError, UnicodeDecodeError, aiohttp.ClientError):
        return None, f"HTTP {response.status}"
    if not isinstance(document, dict):
        return None, f"HTTP {response.status}"
    code = document.get("error")
    detail = str(document.get("detail", ""))[:_DETAIL_MAX_CHARS]
    return (str(code) if code is not None else None), detail


class _Sender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        path: Path,
        url: str,
        token: str,
        migration_id: str,
        size_bytes: int,
        sha256: str,
        read_bytes: int,
        bucket: TokenBucket | None,
        stall_timeout_s: float,
    ) -> None:
        self._session = session
        self._path = path
        self._url = url
        self._token = token
        self.migration_id = migration_id
        self.size_bytes = size_bytes
        self._sha256 = sha256
        self._read_bytes = read_bytes
        self._bucket = bucket
        self._stall_timeout_s = stall_timeout_s
        self.sent_bytes = 0

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def held(self) -> _Held:
        """What the target holds, from its HEAD."""
        timeout = aiohttp.ClientTimeout(total=self._stall_timeout_s)
        async with self._session.head(self._url, headers=self._auth(), timeout=timeout) as resp:
            if resp.status == 404:
                return _Held(0, False, None)
            if resp.status != 200:
                self._refused(resp.status, None, f"HEAD answered HTTP {resp.status}")
            try:
                received_bytes = int(resp.headers["X-Received-Bytes"])
            except (KeyError, ValueError) as exc:
                raise CheckpointTransferError(
                    f"target's HEAD lacks a valid X-Received-Bytes header: {exc}",
                    status=resp.status,
                ) from exc
            complete = resp.headers.get("X-Checkpoint-Complete", "").lower() == "true"
            return _Held(received_bytes, complete, resp.headers.get("X-Checkpoint-Sha256"))

    async def put(self, start_bytes: int) -> tuple[int, dict[str, Any]]:
        """One PUT from ``start_bytes``; returns (status, document) of a 200/201/202."""
        try:
            body = _FileBody(
                self._path, start_bytes, self.size_bytes, self._read_bytes, self._bucket
            )
        except OSError as exc:
            raise InputError(f"checkpoint file {self._path}: {exc}") from exc
        headers = self._auth() | {
            "X-Checkpoint-Sha256": self._sha256,
            "X-Checkpoint-Size": str(self.size_bytes),
            "Content-Length": str(self.size_bytes - start_bytes),
            "Content-Type": "application/octet-stream",
        }
        if start_bytes > 0:
            headers["Content-Range"] = (
                f"bytes {start_bytes}-{self.size_bytes - 1}/{self.size_bytes}"
            )
        task = asyncio.create_task(self._put(body, headers))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._stall_timeout_s / 4)
                if done:
                    return task.result()
                stalled_s = time.monotonic() - body.progress.last_progress_s
                if not body.progress.body_done and stalled_s > self._stall_timeout_s:
                    raise _TransientFailure(f"no progress for {stalled_s:.1f} s")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            self.sent_bytes += body.progress.sent_bytes
            await body.close()

    async def _put(self, body: _FileBody, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._stall_timeout_s, sock_read=self._stall_timeout_s
        )
        async with self._session.put(
            self._url, data=body.chunks(), headers=headers, expect100=True, timeout=timeout
        ) as resp:
            if resp.status in (200, 201, 202):
                document = await resp.json(content_type=None)
                if not isinstance(document, dict):
                    raise CheckpointTransferError(
                        f"target answered {resp.status} without a JSON object", status=resp.status
                    )
                return resp.status, document
            code, detail = await _detail(resp)
            self._refused(resp.status, code, detail)

    def check_same_checkpoint(self, held: _Held) -> None:
        """A conflict unless the complete checkpoint the target ``held`` is this one."""
        if held.sha256 != self._sha256:
            raise CheckpointConflictError(
                f"target holds another checkpoint under {self.migration_id} (sha256 {held.sha256})",
                status=409,
                code="conflict",
            )

    def check_confirmed(self, status: int, document: dict[str, Any]) -> None:
        """Raise unless a PUT's answer (``status``, ``document``) confirms this checkpoint
        whole: a transient failure for a partial one, an error for another checkpoint."""
        if status == 202:
            raise _TransientFailure(f"target kept {document.get('received_bytes')} bytes")
        if document.get("sha256") != self._sha256 or document.get("size_bytes") != self.size_bytes:
            raise CheckpointTransferError(f"target confirmed another checkpoint: {document}")

    def _refused(self, status: int, code: str | None, detail: str) -> NoReturn:
        """Raise the error that a refusal ``status`` stands for."""
        where = f"target refused checkpoint {self.migration_id}: HTTP {status} {code}: {detail}"
        if status in (401, 403):
            raise CheckpointUnauthorizedError(where, status=status, code=code)
        if status == 422:
            raise CheckpointRejectedError(where, status=status, code=code)
        if status == 416:
            raise _RangeRefused(where)
        if status == 409 and code == "transfer_in_progress":
            raise _TransientFailure(where)
        if status == 409:
            raise CheckpointConflictError(where, status=status, code=code)
        if status >= 500 and status != 507:
            raise _TransientFailure(where)
        raise CheckpointTransferError(where, status=status, code=code)


class _RangeRefused(Exception):
    """The target answered 416 (internal)."""


async def send_checkpoint(
    session: aiohttp.ClientSession,
    path: Path,
    target_url: str,
    target_token: str,
    migration_id: str,
    *,
    rate_bytes_per_s: float | None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    sha256: str | None = None,
    max_attempts: int = 6,
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 15.0,
    stall_timeout_s: float = 120.0,
) -> SendResult:
    """Stream the checkpoint at ``path`` to the target agent at ``target_url``.

    Resumes from what the target holds (its HEAD); a cut stream, a timeout, a 5xx answer or a
    concurrent transfer are retried with exponential back-off, at most ``max_attempts`` times in
    a row without progress. session: owned by the caller; target_token: the target's bearer
    token; rate_bytes_per_s: pace of the body, None for unthrottled [bytes/s]; chunk_bytes:
    bytes per file read [bytes]; sha256: the file's hex sha256 when already known (else it is
    computed first: one more read of the file, hashed at 1.2 to 1.8 GB/s); backoff_initial_s,
    backoff_max_s: first and longest wait between attempts [s]; stall_timeout_s: an attempt
    that makes no progress for this long is abandoned [s].

    Raises the :class:`CheckpointTransferError` family (see the module's docstring) and
    InputError for bad arguments or an unreadable file.
    """
    retry = _Retry(max_attempts, backoff_initial_s, backoff_max_s)
    _check_arguments(migration_id, chunk_bytes, rate_bytes_per_s, sha256, retry, stall_timeout_s)
    started_s = time.monotonic()
    size_bytes, digest = await _size_and_digest(path, sha256)
    sender = _Sender(
        session,
        path,
        _checkpoint_url(target_url, migration_id),
        target_token,
        migration_id,
        size_bytes,
        digest,
        chunk_bytes,
        _pace(rate_bytes_per_s),
        stall_timeout_s,
    )
    resumed_from_bytes, attempts, already_complete = await _send_until_held(
        sender, target_url, retry
    )
    duration_s = time.monotonic() - started_s
    return SendResult(
        migration_id,
        size_bytes,
        digest,
        sender.sent_bytes,
        resumed_from_bytes,
        attempts,
        duration_s,
        already_complete,
    )


@dataclass(frozen=True)
class _Retry:
    """How often and how patiently :func:`send_checkpoint` tries again: ``max_attempts`` in
    a row without progress; waits from ``backoff_initial_s`` doubling up to ``backoff_max_s``
    [s]."""

    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float


def _check_arguments(
    migration_id: str,
    chunk_bytes: int,
    rate_bytes_per_s: float | None,
    sha256: str | None,
    retry: _Retry,
    stall_timeout_s: float,
) -> None:
    """InputError naming the first argument of :func:`send_checkpoint` that is not usable."""
    check_migration_id(migration_id)
    if chunk_bytes <= 0:
        raise InputError(f"chunk_bytes: expected a positive number of bytes, got {chunk_bytes}")
    if retry.max_attempts < 1:
        raise InputError(f"max_attempts: expected at least 1, got {retry.max_attempts}")
    if rate_bytes_per_s is not None and not (0 < rate_bytes_per_s < math.inf):
        raise InputError(
            f"rate_bytes_per_s: expected a positive finite rate, got {rate_bytes_per_s}"
        )
    if sha256 is not None and not SHA256_HEX.fullmatch(sha256.lower()):
        raise InputError("sha256: expected 64 hexadecimal digits")
    if not (0 <= retry.backoff_initial_s <= retry.backoff_max_s) or not stall_timeout_s > 0:
        raise InputError(
            "backoff_initial_s, backoff_max_s, stall_timeout_s: expected "
            "0 <= backoff_initial_s <= backoff_max_s and stall_timeout_s > 0"
        )


async def _size_and_digest(path: Path, sha256: str | None) -> tuple[int, str]:
    """The file's size [bytes] and hex sha256 (``sha256`` when given, else computed);
    InputError when the file cannot be read."""
    try:
        size_bytes = path.stat().st_size
        digest = (
            sha256.lower() if sha256 is not None else await asyncio.to_thread(file_sha256, path)
        )
    except OSError as exc:
        raise InputError(f"checkpoint file {path}: {exc}") from exc
    return size_bytes, digest


def _pace(rate_bytes_per_s: float | None) -> TokenBucket | None:
    """The bucket that paces a body at ``rate_bytes_per_s`` [bytes/s]; None for unthrottled."""
    if rate_bytes_per_s is None:
        return None
    burst_bytes = max(_MIN_SLICE_BYTES, rate_bytes_per_s * _SLICE_S)
    return TokenBucket(rate_bytes_per_s, burst_bytes=burst_bytes)


async def _send_until_held(
    sender: _Sender, target_url: str, retry: _Retry
) -> tuple[int, int, bool]:
    """Attempt after attempt until the target holds the verified checkpoint: (the offset the
    successful attempt started at [bytes], PUTs made, whether the target held it before any)."""
    attempts = failures = range_refusals = 0
    best_held = -1
    while True:
        try:
            held = await sender.held()
            if held.complete:
                sender.check_same_checkpoint(held)
                return sender.size_bytes, attempts, attempts == 0
            if held.received_bytes > best_held:
                best_held, failures = held.received_bytes, 0
            # A target holding every byte unverified (it stopped before verifying them) is
            # asked to verify them by a PUT from 0: it answers 200, or discards them and
            # takes the body, or 409 while it is verifying them already.
            start_bytes = held.received_bytes if held.received_bytes < sender.size_bytes else 0
            attempts += 1
            status, document = await sender.put(start_bytes)
            sender.check_confirmed(status, document)
            return start_bytes, attempts, False
        except _RangeRefused as exc:
            range_refusals += 1
            if range_refusals >= _MAX_RANGE_REFUSALS:
                raise CheckpointRangeError(str(exc), status=416) from exc
            logger.info(
                "checkpoint %s: resume offset refused, reading it again", sender.migration_id
            )
        except (_TransientFailure, aiohttp.ClientError, TimeoutError, OSError) as exc:
            failures += 1
            if failures >= retry.max_attempts:
                raise CheckpointRetriesExhaustedError(
                    f"checkpoint {sender.migration_id} to {target_url}: {failures} attempts "
                    f"failed without progress, last: {exc!r}",
                    transient=True,
                ) from exc
            delay_s = min(retry.backoff_max_s, retry.backoff_initial_s * 2 ** (failures - 1))
            logger.info(
                "checkpoint %s: attempt failed (%r); retrying in %.2f s",
                sender.migration_id,
                exc,
                delay_s,
            )
            await asyncio.sleep(delay_s)

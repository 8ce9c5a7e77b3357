"""The receiving side of a checkpoint transfer: ``PUT`` and ``HEAD /v1/checkpoints/{id}``.

The protocol is described in :mod:`gateway.agent.transfer`; the files in
:mod:`gateway.agent.checkpoint_store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.agent.checkpoint_store import (
    CheckpointState,
    HashProgress,
    StorePaths,
    check_migration_id,
    checkpoint_state,
    complete_part,
    discard,
    hash_prefix,
    store_paths,
    write_meta,
)
from gateway.agent.spool import Spool
from gateway.errors import InputError
from gateway.http_edge import MalformedCredential, bearer_token, challenge, same_token
from gateway.sites.routes import OperationHandlers, route_defs, route_of
from gateway.sites.serving import REALM

logger = logging.getLogger(__name__)

CHECKPOINT_PATH = route_of("putCheckpoint").path
"""``/v1/checkpoints/{migration_id}``, as the site API's route table has it."""
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
"""Bytes gathered per disk write; 16 MiB received 2 GB at 0.90 GB/s where 4 MiB reached 0.65
to 0.77 GB/s (``benchmarks/transfer.py --batch-mib``)."""
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class _RequestError(Exception):
    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


_ERROR_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "not_allowed"}


def _error(exc: _RequestError) -> web.Response:
    return web.json_response(
        {"error": exc.code, "detail": exc.detail}, status=exc.status, headers=exc.headers
    )


def _authorized(authorize: Callable[[web.Request], None], request: web.Request) -> None:
    try:
        authorize(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        code = _ERROR_CODES.get(exc.status, "refused")
        challenge_header = {k: v for k, v in exc.headers.items() if k == "WWW-Authenticate"}
        raise _RequestError(exc.status, code, detail, challenge_header) from exc


def bearer_authorizer(token: str) -> Callable[[web.Request], None]:
    """An ``authorize`` callable accepting ``Authorization: Bearer <token>`` only.

    It raises ``web.HTTPUnauthorized`` otherwise; the checkpoint routes answer that as
    ``401 {"error": "unauthorized", ...}``.
    """
    if not token:
        raise InputError("token: a non-empty bearer token is required")

    def authorize(request: web.Request) -> None:
        try:
            given = bearer_token(request.headers.get("Authorization"))
        except MalformedCredential:
            given = None
        if given is None or not same_token(given, token):
            raise web.HTTPUnauthorized(
                text="missing or wrong bearer token",
                headers={"WWW-Authenticate": challenge(REALM, invalid=given is not None)},
            )

    return authorize


@dataclass(frozen=True)
class _Put:
    migration_id: str
    sha256: str
    size_bytes: int
    start_bytes: int


def _parse_put(request: web.Request) -> _Put:
    migration_id = request.match_info["migration_id"]
    try:
        check_migration_id(migration_id)
    except InputError as exc:
        raise _RequestError(400, "bad_request", str(exc)) from exc
    sha256 = request.headers.get("X-Checkpoint-Sha256", "").strip().lower()
    if not SHA256_HEX.fullmatch(sha256):
        raise _RequestError(
            400, "bad_request", "header X-Checkpoint-Sha256: expected 64 hexadecimal digits"
        )
    size_text = request.headers.get("X-Checkpoint-Size", "").strip()
    if not size_text.isdigit():
        raise _RequestError(
            400, "bad_request", "header X-Checkpoint-Size: expected a non-negative integer"
        )
    size_bytes = int(size_text)
    start_bytes = 0
    content_range = request.headers.get("Content-Range")
    if content_range is not None:
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        if match is None:
            raise _RequestError(
                400, "bad_request", "header Content-Range: expected 'bytes START-END/TOTAL'"
            )
        start_bytes, end_byte, total_bytes = (int(group) for group in match.groups())
        if total_bytes != size_bytes or end_byte != size_bytes - 1 or start_bytes > end_byte:
            raise _RequestError(
                400,
                "bad_request",
                "header Content-Range: expected TOTAL equal to X-Checkpoint-Size, "
                "END equal to TOTAL - 1 and START <= END",
            )
    length = request.content_length
    if length is not None and start_bytes + length != size_bytes:
        raise _RequestError(
            400,
            "bad_request",
            f"header Content-Length: {length} bytes from offset {start_bytes} do not end at "
            f"X-Checkpoint-Size {size_bytes}",
        )
    return _Put(migration_id, sha256, size_bytes, start_bytes)


def _busy(migration_id: str) -> _RequestError:
    return _RequestError(
        409,
        "transfer_in_progress",
        f"another transfer of {migration_id} is streaming or being verified; retry later",
    )


def _state_document(state: CheckpointState) -> dict[str, object]:
    document: dict[str, object] = {
        "migration_id": state.migration_id,
        "size_bytes": state.size_bytes,
        "sha256": state.sha256,
        "state": "complete" if state.complete else "partial",
    }
    if not state.complete:
        document["received_bytes"] = state.received_bytes
    return document


class _CheckpointReceiver:
    def __init__(
        self,
        store_dir: Path,
        authorize: Callable[[web.Request], None],
        batch_bytes: int,
        fsync: bool,
        direct_io: bool,
    ) -> None:
        self._store_dir = store_dir
        self._authorize = authorize
        self._batch_bytes = batch_bytes
        self._fsync = fsync
        self._direct_io = direct_io
        self._active: set[str] = set()
        self._hashes: dict[str, HashProgress] = {}

    async def head(self, request: web.Request) -> web.Response:
        try:
            _authorized(self._authorize, request)
            migration_id = request.match_info["migration_id"]
            try:
                state = checkpoint_state(self._store_dir, migration_id)
            except InputError as exc:
                raise _RequestError(400, "bad_request", str(exc)) from exc
            if state is None or (state.received_bytes == 0 and not state.complete):
                raise _RequestError(404, "not_found", f"nothing received for {migration_id}")
        except Exception as exc:
            return self._failure(request, exc)
        headers = {
            "X-Received-Bytes": str(state.received_bytes),
            "X-Checkpoint-Complete": "true" if state.complete else "false",
            "X-Checkpoint-Size": str(state.size_bytes),
            "X-Checkpoint-Sha256": state.sha256,
        }
        return web.json_response(_state_document(state), headers=headers)

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """Answer ``Expect: 100-continue``: refuse before the body is sent when possible."""
        if request.headers.get("Expect", "").lower() != "100-continue":
            return _error(_RequestError(417, "expectation_failed", "only 100-continue"))
        try:
            _put, early = await self._preflight(request)
        except Exception as exc:
            return self._failure(request, exc)
        if early is not None:
            return early
        if request.version == aiohttp.HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    async def put(self, request: web.Request) -> web.StreamResponse:
        try:
            put, early = await self._preflight(request)
            if early is not None:
                return early
            self._claim(put.migration_id)
            try:
                return await self._receive(request, put)
            finally:
                self._active.discard(put.migration_id)
        except Exception as exc:
            return self._failure(request, exc)

    def _failure(self, request: web.Request, exc: Exception) -> web.Response:
        if isinstance(exc, _RequestError):
            return _error(exc)
        if isinstance(exc, OSError):
            logger.error("checkpoint store %s failed: %s", self._store_dir, exc)
            status = 507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 500
            return _error(_RequestError(status, "storage_error", f"checkpoint store: {exc}"))
        # Request boundary: a bug answers a JSON 500 and keeps the agent serving.
        logger.error("checkpoint %s %s failed", request.method, request.path, exc_info=exc)
        return _error(_RequestError(500, "internal", "the checkpoint receiver failed"))

    def _claim(self, migration_id: str) -> None:
        if migration_id in self._active:
            raise _busy(migration_id)
        self._active.add(migration_id)

    async def _preflight(self, request: web.Request) -> tuple[_Put, web.Response | None]:
        """The request, and the answer that does not need its body (None: the body is wanted)."""
        _authorized(self._authorize, request)
        put = _parse_put(request)
        state = checkpoint_state(self._store_dir, put.migration_id)
        if put.migration_id in self._active:
            raise _busy(put.migration_id)
        if state is not None and (state.sha256, state.size_bytes) != (put.sha256, put.size_bytes):
            raise _RequestError(
                409,
                "conflict",
                f"{put.migration_id} names another checkpoint (sha256 {state.sha256}, "
                f"{state.size_bytes} bytes)",
            )
        if state is not None and not state.complete and state.received_bytes == state.size_bytes:
            state = await self._recover(state)
        if state is not None and state.complete:
            return put, web.json_response(_state_document(state), status=200)
        held_bytes = state.received_bytes if state is not None else 0
        if put.start_bytes != held_bytes:
            raise _RequestError(
                416,
                "range_not_satisfiable",
                f"Content-Range must start at the {held_bytes} bytes held, not {put.start_bytes}",
                {"X-Received-Bytes": str(held_bytes)},
            )
        return put, None

    async def _recover(self, state: CheckpointState) -> CheckpointState | None:
        """Verify a partial file that holds every announced byte (its receiver stopped before
        verifying it): it becomes the checkpoint, or is discarded."""
        migration_id = state.migration_id
        paths = store_paths(self._store_dir, migration_id)
        self._claim(migration_id)
        try:
            hasher = await self._hasher(migration_id, paths.part, state.received_bytes)
            if hasher.hexdigest() != state.sha256:
                discard(paths)
                logger.warning("held checkpoint %s failed verification; discarded", migration_id)
            else:
                fd = os.open(paths.part, os.O_RDONLY)
                try:
                    await asyncio.to_thread(complete_part, fd, paths, fsync=self._fsync)
                finally:
                    os.close(fd)
                logger.info("held checkpoint %s verified", migration_id)
        finally:
            self._active.discard(migration_id)
        return checkpoint_state(self._store_dir, migration_id)

    async def _receive(self, request: web.Request, put: _Put) -> web.Response:
        paths = store_paths(self._store_dir, put.migration_id)
        if put.start_bytes == 0:
            write_meta(paths, put.migration_id, put.sha256, put.size_bytes)
        hasher = await self._hasher(put.migration_id, paths.part, put.start_bytes)
        spool = Spool(
            paths.part,
            held_bytes=put.start_bytes,
            hasher=hasher,
            batch_bytes=self._batch_bytes,
            truncate=put.start_bytes == 0,
            direct_io=self._direct_io,
        )
        try:
            return await self._stream(request, put, paths, spool)
        finally:
            spool.settle()
            progress = spool.hash_progress()
            spool.close()
            if progress is not None and paths.part.exists() and not paths.final.exists():
                self._hashes[put.migration_id] = progress

    async def _hasher(self, migration_id: str, part: Path, held_bytes: int) -> hashlib._Hash:
        progress = self._hashes.pop(migration_id, None)
        if progress is not None and progress.covered_bytes == held_bytes:
            return progress.hasher
        if held_bytes == 0:
            return hashlib.sha256()
        logger.info("hashing the %d bytes held for %s to resume", held_bytes, migration_id)
        return await asyncio.to_thread(hash_prefix, part, held_bytes)

    async def _stream(
        self, request: web.Request, put: _Put, paths: StorePaths, spool: Spool
    ) -> web.Response:
        while True:
            try:
                data = await request.content.readany()
            except Exception as exc:
                # The stream was cut: everything that arrived stays in the partial file.
                logger.info("transfer of %s cut: %s", put.migration_id, exc)
                raise _RequestError(400, "stream_cut", f"the body ended early: {exc}") from exc
            if not data:
                break
            if spool.received_bytes + len(data) > put.size_bytes:
                await self._reject(spool, paths, put.migration_id)
                raise _RequestError(
                    422,
                    "size_mismatch",
                    f"more than the announced {put.size_bytes} bytes arrived; discarded",
                )
            await spool.add(data)
        await spool.finish()
        if spool.written_bytes < put.size_bytes:
            state = CheckpointState(
                put.migration_id,
                paths.part,
                put.size_bytes,
                put.sha256,
                spool.written_bytes,
                False,
            )
            return web.json_response(_state_document(state), status=202)
        digest = spool.hasher.hexdigest()
        if digest != put.sha256:
            await self._reject(spool, paths, put.migration_id)
            raise _RequestError(
                422,
                "checksum_mismatch",
                f"received sha256 {digest}, announced {put.sha256}; discarded",
            )
        await asyncio.to_thread(complete_part, spool.fd, paths, fsync=self._fsync)
        logger.info("checkpoint %s received and verified", put.migration_id)
        state = CheckpointState(
            put.migration_id, paths.final, put.size_bytes, put.sha256, put.size_bytes, True
        )
        return web.json_response(_state_document(state), status=201)

    async def _reject(self, spool: Spool, paths: StorePaths, migration_id: str) -> None:
        with contextlib.suppress(OSError):
            await spool.finish()
        discard(paths)
        self._hashes.pop(migration_id, None)
        logger.warning("checkpoint %s failed verification; partial file discarded", migration_id)


def checkpoint_handlers(
    store_dir: Path,
    authorize: Callable[[web.Request], None],
    *,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    fsync: bool = True,
    direct_io: bool = True,
) -> OperationHandlers:
    """The target side: the handlers of ``putCheckpoint`` and ``headCheckpoint`` (``PUT`` and
    ``HEAD /v1/checkpoints/{migration_id}``), for the site API's route table.

    store_dir: directory of received checkpoints (created if missing); authorize: called with
    each request, raises an ``aiohttp.web.HTTPException`` (e.g. ``HTTPUnauthorized``) to refuse
    it, answered as JSON; batch_bytes: bytes gathered per disk write, two such buffers per
    transfer in progress [bytes]; fsync: flush a verified checkpoint to disk before renaming it
    into place; direct_io: write with ``O_DIRECT`` where the file system allows it (see
    :mod:`gateway.agent.spool`). Every error is a JSON document ``{"error", "detail"}``.
    Concurrent PUTs of one migration id: the first streams, the others get
    ``409 transfer_in_progress`` (per set of handlers: one agent process per store_dir).
    """
    if batch_bytes <= 0:
        raise InputError(f"batch_bytes: expected a positive number of bytes, got {batch_bytes}")
    store_dir.mkdir(parents=True, exist_ok=True)
    receiver = _CheckpointReceiver(store_dir, authorize, batch_bytes, fsync, direct_io)
    return OperationHandlers(
        {"putCheckpoint": receiver.put, "headCheckpoint": receiver.head},
        {"putCheckpoint": receiver.expect},
    )


def checkpoint_routes(
    store_dir: Path,
    authorize: Callable[[web.Request], None],
    *,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    fsync: bool = True,
    direct_io: bool = True,
) -> list[web.RouteDef]:
    """The routes of :func:`checkpoint_handlers` (same arguments), for an application that
    receives checkpoints and serves nothing else."""
    return route_defs(
        checkpoint_handlers(
            store_dir, authorize, batch_bytes=batch_bytes, fsync=fsync, direct_io=direct_io
        )
    )

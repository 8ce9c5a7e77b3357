"""Checkpoint transfer between agents (``gateway.agent.transfer``), over real HTTP on loopback.

The receiving routes run in a minimal aiohttp application on an OS-assigned port; a TCP proxy
in front of it cuts or corrupts a stream mid-way, like a failing WAN link.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.agent.checkpoint_store import store_paths, write_meta
from gateway.agent.spool import ALIGN_BYTES, Spool
from gateway.agent.throttle import TokenBucket
from gateway.agent.transfer import (
    CheckpointConflictError,
    CheckpointRangeError,
    CheckpointRejectedError,
    CheckpointRetriesExhaustedError,
    CheckpointUnauthorizedError,
    SendResult,
    bearer_authorizer,
    checkpoint_routes,
    checkpoint_state,
    send_checkpoint,
    verified_checkpoint,
)
from simulators.hang_guard import HANG_GUARD_S

pytestmark = pytest.mark.integration

TOKEN = "target-agent-token"
MIB = 1024 * 1024
BATCH_BYTES = 256 * 1024
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _write_checkpoint(path: Path, size_bytes: int, seed: int = 5) -> str:
    data = random.Random(seed).randbytes(size_bytes)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


async def _send(
    session: aiohttp.ClientSession, source: Path, url: str, migration_id: str, **options: Any
) -> SendResult:
    """send_checkpoint with the target's token, unthrottled, short back-off waits."""
    arguments: dict[str, Any] = {
        "rate_bytes_per_s": None,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    return await send_checkpoint(session, source, url, TOKEN, migration_id, **(arguments | options))


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _put_headers(sha256: str, size_bytes: int, token: str = TOKEN) -> dict[str, str]:
    return _auth(token) | {"X-Checkpoint-Sha256": sha256, "X-Checkpoint-Size": str(size_bytes)}


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def _app(
    store_dir: Path, middlewares: list[Middleware] | None = None, *, direct_io: bool = True
) -> web.Application:
    app = web.Application(middlewares=middlewares or [])
    app.add_routes(
        checkpoint_routes(
            store_dir, bearer_authorizer(TOKEN), batch_bytes=BATCH_BYTES, direct_io=direct_io
        )
    )
    return app


@dataclass
class Target:
    url: str
    store_dir: Path
    session: aiohttp.ClientSession

    def checkpoint_url(self, migration_id: str) -> str:
        return f"{self.url}/v1/checkpoints/{migration_id}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(params=[True, False], ids=["direct-io", "page-cache"])
def direct_io(request: pytest.FixtureRequest) -> bool:
    """Both ways the receiver writes: O_DIRECT where allowed, and ordinary writes."""
    return bool(request.param)


@pytest.fixture
async def target(
    tmp_path: Path, session: aiohttp.ClientSession, direct_io: bool
) -> AsyncIterator[Target]:
    store_dir = tmp_path / "received"
    runner, url = await _serve(_app(store_dir, direct_io=direct_io))
    try:
        yield Target(url, store_dir, session)
    finally:
        await runner.cleanup()


@dataclass
class Proxy:
    """A TCP proxy on loopback in front of ``upstream_port``.

    ``cut_at_bytes``: the first connection whose client-to-server stream passes this many bytes
    is aborted there (both sides), once. ``corrupt_at_bytes``: the byte at this offset of the
    first connection that reaches it is flipped, once. ``upstream_bytes`` counts, per
    connection in order, the bytes forwarded to the server.
    """

    upstream_port: int
    cut_at_bytes: int | None = None
    corrupt_at_bytes: int | None = None
    upstream_bytes: list[int] = field(default_factory=list)
    cut_connection: int | None = None
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]
        index = len(self.upstream_bytes)
        self.upstream_bytes.append(0)

        def abort() -> None:
            writer.transport.abort()
            up_writer.transport.abort()

        async def upstream() -> None:
            while data := await reader.read(64 * 1024):
                sent = self.upstream_bytes[index]
                if self.cut_at_bytes is not None and sent + len(data) > self.cut_at_bytes:
                    up_writer.write(data[: self.cut_at_bytes - sent])
                    await up_writer.drain()
                    self.upstream_bytes[index] = self.cut_at_bytes
                    self.cut_at_bytes, self.cut_connection = None, index
                    abort()
                    return
                at = self.corrupt_at_bytes
                if at is not None and sent <= at < sent + len(data):
                    flipped = bytearray(data)
                    flipped[at - sent] ^= 0xFF
                    data, self.corrupt_at_bytes = bytes(flipped), None
                up_writer.write(data)
                await up_writer.drain()
                self.upstream_bytes[index] = sent + len(data)
            up_writer.write_eof()

        async def downstream() -> None:
            while data := await up_reader.read(64 * 1024):
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        abort()


@pytest.fixture
async def proxy(target: Target) -> AsyncIterator[Proxy]:
    port = int(target.url.rsplit(":", 1)[1])
    front = Proxy(port)
    await front.start()
    try:
        yield front
    finally:
        await front.close()


async def _head(target: Target, migration_id: str) -> tuple[int, dict[str, str]]:
    async with target.session.head(target.checkpoint_url(migration_id), headers=_auth()) as resp:
        return resp.status, dict(resp.headers)


def _store_files(store_dir: Path) -> list[str]:
    return sorted(entry.name for entry in store_dir.iterdir())


async def test_rule_round_trip_delivers_the_file_verified(tmp_path: Path, target: Target) -> None:
    source = tmp_path / "job.ckpt"
    sha256 = _write_checkpoint(source, 5 * MIB + 123)

    result = await _send(target.session, source, target.url, "mig-1")

    assert (result.attempts, result.sent_bytes, result.resumed_from_bytes) == (1, 5 * MIB + 123, 0)
    assert result.sha256 == sha256 and not result.already_complete
    received = verified_checkpoint(target.store_dir, "mig-1")
    assert received is not None and received.read_bytes() == source.read_bytes()
    assert _store_files(target.store_dir) == ["mig-1.ckpt", "mig-1.meta.json"]
    status, headers = await _head(target, "mig-1")
    assert status == 200
    assert headers["X-Received-Bytes"] == str(5 * MIB + 123)
    assert headers["X-Checkpoint-Complete"] == "true"
    assert headers["X-Checkpoint-Sha256"] == sha256


async def test_rule_an_empty_checkpoint_round_trips(tmp_path: Path, target: Target) -> None:
    source = tmp_path / "empty.ckpt"
    sha256 = _write_checkpoint(source, 0)

    result = await send_checkpoint(
        target.session, source, target.url, TOKEN, "_mig:empty.0", rate_bytes_per_s=None
    )

    assert result.sha256 == sha256 and result.size_bytes == 0
    received = verified_checkpoint(target.store_dir, "_mig:empty.0")
    assert received is not None and received.read_bytes() == b""


async def test_rule_a_cut_stream_resumes_where_it_stopped(
    tmp_path: Path, target: Target, proxy: Proxy
) -> None:
    source = tmp_path / "job.ckpt"
    size_bytes = 6 * MIB
    _write_checkpoint(source, size_bytes)
    proxy.cut_at_bytes = 2 * MIB

    result = await _send(target.session, source, proxy.url, "mig-cut", chunk_bytes=256 * 1024)

    assert proxy.cut_connection is not None
    assert result.attempts >= 2
    assert 0 < result.resumed_from_bytes < size_bytes
    after_cut = sum(proxy.upstream_bytes[proxy.cut_connection + 1 :])
    assert after_cut < size_bytes  # only the rest went over the wire again
    assert after_cut >= size_bytes - result.resumed_from_bytes
    received = verified_checkpoint(target.store_dir, "mig-cut")
    assert received is not None and received.read_bytes() == source.read_bytes()


async def test_rule_a_restarted_receiver_rehashes_what_it_holds_and_resumes(
    tmp_path: Path, session: aiohttp.ClientSession, direct_io: bool
) -> None:
    source = tmp_path / "job.ckpt"
    size_bytes = 4 * MIB
    sha256 = _write_checkpoint(source, size_bytes)
    store_dir = tmp_path / "received"
    runner, url = await _serve(_app(store_dir, direct_io=direct_io))
    proxy = Proxy(int(url.rsplit(":", 1)[1]), cut_at_bytes=3 * MIB)
    await proxy.start()
    try:
        with pytest.raises(CheckpointRetriesExhaustedError) as raised:
            await send_checkpoint(
                session,
                source,
                proxy.url,
                TOKEN,
                "mig-restart",
                rate_bytes_per_s=None,
                max_attempts=1,
            )
    finally:
        await proxy.close()
        await runner.cleanup()  # waits for the receiver to settle the cut stream
    assert raised.value.transient
    state = checkpoint_state(store_dir, "mig-restart")
    assert state is not None and 0 < state.received_bytes < size_bytes and not state.complete

    # A new set of routes over the same directory has no hash state in memory.
    runner, url = await _serve(_app(store_dir, direct_io=direct_io))
    try:
        result = await send_checkpoint(
            session, source, url, TOKEN, "mig-restart", rate_bytes_per_s=None, sha256=sha256
        )
    finally:
        await runner.cleanup()

    assert (result.resumed_from_bytes, result.sent_bytes) == (
        state.received_bytes,
        size_bytes - state.received_bytes,
    )
    received = verified_checkpoint(store_dir, "mig-restart")
    assert received is not None and received.read_bytes() == source.read_bytes()


@pytest.mark.parametrize(("label", "held_intact"), [("intact", True), ("damaged", False)])
async def test_rule_every_byte_held_unverified_is_verified_by_the_next_put(
    tmp_path: Path, target: Target, label: str, held_intact: bool
) -> None:
    """A receiver stopped after the last byte and before verifying: the files it left."""
    source = tmp_path / "job.ckpt"
    sha256 = _write_checkpoint(source, MIB)
    paths = store_paths(target.store_dir, "mig-held")
    write_meta(paths, "mig-held", sha256, MIB)
    held = bytearray(source.read_bytes())
    if not held_intact:
        held[1000] ^= 0xFF
    paths.part.write_bytes(held)

    result = await _send(target.session, source, target.url, "mig-held")

    assert result.sent_bytes == (0 if held_intact else MIB), label
    received = verified_checkpoint(target.store_dir, "mig-held")
    assert received is not None and received.read_bytes() == source.read_bytes()


async def test_rule_data_corrupted_in_transit_is_422_and_nothing_is_kept(
    tmp_path: Path, target: Target, proxy: Proxy
) -> None:
    source = tmp_path / "job.ckpt"
    _write_checkpoint(source, 3 * MIB)
    proxy.corrupt_at_bytes = 2 * MIB

    with pytest.raises(CheckpointRejectedError) as raised:
        await _send(target.session, source, proxy.url, "mig-bad")

    assert raised.value.status == 422 and raised.value.code == "checksum_mismatch"
    assert proxy.corrupt_at_bytes is None  # the flip happened
    assert verified_checkpoint(target.store_dir, "mig-bad") is None
    assert checkpoint_state(target.store_dir, "mig-bad") is None
    assert _store_files(target.store_dir) == []
    assert (await _head(target, "mig-bad"))[0] == 404


async def test_rule_a_wrong_announced_sha256_is_422_checksum_mismatch(target: Target) -> None:
    body = b"checkpoint bytes"
    wrong = hashlib.sha256(b"something else").hexdigest()

    async with target.session.put(
        target.checkpoint_url("mig-wrong"), data=body, headers=_put_headers(wrong, len(body))
    ) as resp:
        assert resp.status == 422
        document = await resp.json()

    assert document["error"] == "checksum_mismatch"
    assert _store_files(target.store_dir) == []


async def test_rule_a_body_longer_than_announced_is_422_size_mismatch(target: Target) -> None:
    body = b"x" * 1000
    sha256 = hashlib.sha256(body[:900]).hexdigest()

    async def chunked() -> AsyncIterator[bytes]:
        yield body  # no Content-Length: the receiver finds out while reading

    async with target.session.put(
        target.checkpoint_url("mig-long"), data=chunked(), headers=_put_headers(sha256, 900)
    ) as resp:
        assert resp.status == 422
        assert (await resp.json())["error"] == "size_mismatch"

    assert _store_files(target.store_dir) == []


async def test_rule_a_clean_short_body_keeps_the_partial_file(
    tmp_path: Path, target: Target
) -> None:
    source = tmp_path / "job.ckpt"
    sha256 = _write_checkpoint(source, 2 * MIB)
    data = source.read_bytes()

    async def first_half() -> AsyncIterator[bytes]:
        yield data[:MIB]

    async with target.session.put(
        target.checkpoint_url("mig-half"), data=first_half(), headers=_put_headers(sha256, 2 * MIB)
    ) as resp:
        assert resp.status == 202
        document = await resp.json()
    assert (document["state"], document["received_bytes"]) == ("partial", MIB)
    status, headers = await _head(target, "mig-half")
    assert (status, headers["X-Received-Bytes"], headers["X-Checkpoint-Complete"]) == (
        200,
        str(MIB),
        "false",
    )

    result = await send_checkpoint(
        target.session, source, target.url, TOKEN, "mig-half", rate_bytes_per_s=None
    )

    assert (result.resumed_from_bytes, result.sent_bytes, result.attempts) == (MIB, MIB, 1)
    received = verified_checkpoint(target.store_dir, "mig-half")
    assert received is not None and received.read_bytes() == data


async def test_rule_a_start_other_than_the_bytes_held_is_416(
    tmp_path: Path, target: Target
) -> None:
    data = random.Random(1).randbytes(3000)
    sha256 = hashlib.sha256(data).hexdigest()

    async def first_part() -> AsyncIterator[bytes]:
        yield data[:1000]

    async with target.session.put(
        target.checkpoint_url("mig-range"), data=first_part(), headers=_put_headers(sha256, 3000)
    ) as resp:
        assert resp.status == 202

    for content_range in ("bytes 500-2999/3000", "bytes 1500-2999/3000", None):
        headers = _put_headers(sha256, 3000)
        start = 0
        if content_range is not None:
            headers["Content-Range"] = content_range
            start = int(content_range.split()[1].split("-")[0])
        async with target.session.put(
            target.checkpoint_url("mig-range"), data=data[start:], headers=headers
        ) as resp:
            assert resp.status == 416, content_range
            assert resp.headers["X-Received-Bytes"] == "1000"
            assert (await resp.json())["error"] == "range_not_satisfiable"

    headers = _put_headers(sha256, 3000) | {"Content-Range": "bytes 1000-2999/3000"}
    async with target.session.put(
        target.checkpoint_url("mig-range"), data=data[1000:], headers=headers
    ) as resp:
        assert resp.status == 201
    received = verified_checkpoint(target.store_dir, "mig-range")
    assert received is not None and received.read_bytes() == data


def _lying_head(lies: list[int]) -> Middleware:
    """Answers HEAD with 404 (nothing held) while ``lies[0]`` > 0, counting down."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if request.method == "HEAD" and lies[0] > 0:
            lies[0] -= 1
            return web.Response(status=404)
        return await handler(request)

    return middleware


async def _partial(target_url: str, session: aiohttp.ClientSession, data: bytes, held: int) -> None:
    sha256 = hashlib.sha256(data).hexdigest()

    async def head_part() -> AsyncIterator[bytes]:
        yield data[:held]

    async with session.put(
        f"{target_url}/v1/checkpoints/mig-lie",
        data=head_part(),
        headers=_put_headers(sha256, len(data)),
    ) as resp:
        assert resp.status == 202


async def test_rule_the_sender_reads_head_again_after_416(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    source = tmp_path / "job.ckpt"
    _write_checkpoint(source, 2 * MIB)
    lies = [0]
    store_dir = tmp_path / "received"
    runner, url = await _serve(_app(store_dir, [_lying_head(lies)]))
    try:
        await _partial(url, session, source.read_bytes(), MIB)
        lies[0] = 1

        result = await _send(session, source, url, "mig-lie")
    finally:
        await runner.cleanup()

    # First PUT from 0 refused before its body went out (100-continue), second from 1 MiB.
    assert (result.attempts, result.resumed_from_bytes, result.sent_bytes) == (2, MIB, MIB)
    received = verified_checkpoint(store_dir, "mig-lie")
    assert received is not None and received.read_bytes() == source.read_bytes()


async def test_rule_a_416_that_persists_raises_a_range_error(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    source = tmp_path / "job.ckpt"
    _write_checkpoint(source, MIB)
    lies = [0]
    store_dir = tmp_path / "received"
    runner, url = await _serve(_app(store_dir, [_lying_head(lies)]))
    try:
        await _partial(url, session, source.read_bytes(), MIB // 2)
        lies[0] = 1000
        with pytest.raises(CheckpointRangeError) as raised:
            await _send(session, source, url, "mig-lie")
    finally:
        await runner.cleanup()

    assert raised.value.status == 416
    state = checkpoint_state(store_dir, "mig-lie")
    assert state is not None and state.received_bytes == MIB // 2


async def test_rule_unauthorised_requests_are_401_json_and_the_sender_raises(
    tmp_path: Path, target: Target
) -> None:
    source = tmp_path / "job.ckpt"
    sha256 = _write_checkpoint(source, 1000)

    for headers in (_put_headers(sha256, 1000, "wrong"), _put_headers(sha256, 1000, "")):
        async with target.session.put(
            target.checkpoint_url("mig-auth"), data=source.read_bytes(), headers=headers
        ) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "unauthorized"
    async with target.session.head(
        target.checkpoint_url("mig-auth"), headers=_auth("wrong")
    ) as resp:
        assert resp.status == 401
    with pytest.raises(CheckpointUnauthorizedError) as raised:
        await send_checkpoint(
            target.session, source, target.url, "wrong", "mig-auth", rate_bytes_per_s=None
        )

    assert raised.value.status == 401 and not raised.value.transient
    assert _store_files(target.store_dir) == []


GOOD_SHA = "ab" * 32


@pytest.mark.parametrize(
    ("label", "headers", "migration_id", "named"),
    [
        ("sha256 missing", {"X-Checkpoint-Size": "3"}, "m", "X-Checkpoint-Sha256"),
        (
            "sha256 not hex",
            {"X-Checkpoint-Sha256": "zz" * 32, "X-Checkpoint-Size": "3"},
            "m",
            "X-Checkpoint-Sha256",
        ),
        ("size missing", {"X-Checkpoint-Sha256": GOOD_SHA}, "m", "X-Checkpoint-Size"),
        (
            "size negative",
            {"X-Checkpoint-Sha256": GOOD_SHA, "X-Checkpoint-Size": "-3"},
            "m",
            "X-Checkpoint-Size",
        ),
        (
            "range malformed",
            {"X-Checkpoint-Sha256": GOOD_SHA, "X-Checkpoint-Size": "3", "Content-Range": "0-2"},
            "m",
            "Content-Range",
        ),
        (
            "range total differs from size",
            {
                "X-Checkpoint-Sha256": GOOD_SHA,
                "X-Checkpoint-Size": "3",
                "Content-Range": "bytes 0-2/4",
            },
            "m",
            "Content-Range",
        ),
        (
            "length does not reach the end",
            {"X-Checkpoint-Sha256": GOOD_SHA, "X-Checkpoint-Size": "9"},
            "m",
            "Content-Length",
        ),
        (
            "migration id unsafe",
            {"X-Checkpoint-Sha256": GOOD_SHA, "X-Checkpoint-Size": "3"},
            ".hidden",
            "migration_id",
        ),
    ],
)
async def test_rule_malformed_requests_are_400_naming_the_field(
    target: Target, label: str, headers: dict[str, str], migration_id: str, named: str
) -> None:
    async with target.session.put(
        target.checkpoint_url(migration_id), data=b"abc", headers=_auth() | headers
    ) as resp:
        assert resp.status == 400, label
        document = await resp.json()

    assert document["error"] == "bad_request"
    assert named in document["detail"], label
    assert _store_files(target.store_dir) == []


async def test_rule_concurrent_puts_of_one_migration_id_one_wins_the_other_is_409(
    tmp_path: Path, target: Target
) -> None:
    data = random.Random(2).randbytes(2 * MIB)
    sha256 = hashlib.sha256(data).hexdigest()
    release = asyncio.Event()

    async def gated() -> AsyncIterator[bytes]:
        yield data[:MIB]
        await release.wait()
        yield data[MIB:]

    async def first() -> int:
        async with target.session.put(
            target.checkpoint_url("mig-twice"),
            data=gated(),
            headers=_put_headers(sha256, len(data)),
        ) as resp:
            return resp.status

    first_put = asyncio.create_task(first())
    for _ in range(500):
        state = checkpoint_state(target.store_dir, "mig-twice")
        if state is not None and state.received_bytes > 0:
            break
        await asyncio.sleep(0.01)
    for start in (0, MIB):  # a fresh start and a "resume" are both refused while it streams
        headers = _put_headers(sha256, len(data))
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        async with target.session.put(
            target.checkpoint_url("mig-twice"), data=data[start:], headers=headers
        ) as resp:
            assert resp.status == 409
            assert (await resp.json())["error"] == "transfer_in_progress"
    release.set()

    assert await first_put == 201
    received = verified_checkpoint(target.store_dir, "mig-twice")
    assert received is not None and received.read_bytes() == data


async def test_rule_two_senders_of_one_checkpoint_both_succeed_and_the_file_is_whole(
    tmp_path: Path, target: Target
) -> None:
    source = tmp_path / "job.ckpt"
    _write_checkpoint(source, 8 * MIB)

    results = await asyncio.gather(
        *(
            _send(target.session, source, target.url, "mig-race", chunk_bytes=256 * 1024)
            for _ in range(2)
        )
    )

    assert all(result.sha256 == results[0].sha256 for result in results)
    received = verified_checkpoint(target.store_dir, "mig-race")
    assert received is not None and received.read_bytes() == source.read_bytes()


async def test_rule_a_repeat_after_completion_is_idempotent(tmp_path: Path, target: Target) -> None:
    source = tmp_path / "job.ckpt"
    sha256 = _write_checkpoint(source, MIB)
    await send_checkpoint(
        target.session, source, target.url, TOKEN, "mig-again", rate_bytes_per_s=None
    )

    again = await send_checkpoint(
        target.session, source, target.url, TOKEN, "mig-again", rate_bytes_per_s=None
    )
    async with target.session.put(
        target.checkpoint_url("mig-again"),
        data=source.read_bytes(),
        headers=_put_headers(sha256, MIB),
    ) as resp:
        assert resp.status == 200
        document = await resp.json()

    assert (again.already_complete, again.sent_bytes, again.attempts) == (True, 0, 0)
    assert document == {
        "migration_id": "mig-again",
        "size_bytes": MIB,
        "sha256": sha256,
        "state": "complete",
    }
    other = tmp_path / "other.ckpt"
    other_sha256 = _write_checkpoint(other, MIB, seed=9)
    async with target.session.put(
        target.checkpoint_url("mig-again"),
        data=other.read_bytes(),
        headers=_put_headers(other_sha256, MIB),
    ) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"] == "conflict"
    with pytest.raises(CheckpointConflictError):
        await send_checkpoint(
            target.session, other, target.url, TOKEN, "mig-again", rate_bytes_per_s=None
        )
    received = verified_checkpoint(target.store_dir, "mig-again")
    assert received is not None and received.read_bytes() == source.read_bytes()


async def test_rule_a_throttled_transfer_keeps_the_configured_rate(
    tmp_path: Path, target: Target
) -> None:
    source = tmp_path / "job.ckpt"
    size_bytes = 2_000_000
    sha256 = _write_checkpoint(source, size_bytes)
    rate_bytes_per_s = 4_000_000.0

    started = time.monotonic()
    result = await send_checkpoint(
        target.session,
        source,
        target.url,
        TOKEN,
        "mig-slow",
        rate_bytes_per_s=rate_bytes_per_s,
        sha256=sha256,
    )
    elapsed_s = time.monotonic() - started

    # Never faster than the rate: the bucket starts empty, so the body takes at least
    # size / rate. How close it comes to the rate depends on the machine's load; the bucket's
    # pacing itself is checked on an injected clock below.
    achieved = size_bytes / elapsed_s
    assert achieved <= 1.10 * rate_bytes_per_s, achieved
    assert result.rate_bytes_per_s <= 1.10 * rate_bytes_per_s
    assert verified_checkpoint(target.store_dir, "mig-slow") is not None
    assert result.duration_s <= elapsed_s


async def test_rule_a_target_that_stops_answering_is_given_up_after_the_limit(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    source = tmp_path / "job.ckpt"
    _write_checkpoint(source, MIB)
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # then neither reads nor answers
        await asyncio.Event().wait()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        # The server never answers: only the stall limit ends the call (the hang guard turns
        # a missing limit into a failure instead of a hang).
        with pytest.raises(CheckpointRetriesExhaustedError):
            async with asyncio.timeout(HANG_GUARD_S):
                await send_checkpoint(
                    session,
                    source,
                    url,
                    TOKEN,
                    "mig-silent",
                    rate_bytes_per_s=None,
                    max_attempts=1,
                    stall_timeout_s=0.5,
                )
    finally:
        server.close()
        for writer in connections:
            writer.transport.abort()
        await server.wait_closed()


async def test_rule_an_unreachable_target_is_retried_with_back_off_then_given_up(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    source = tmp_path / "job.ckpt"
    _write_checkpoint(source, 1000)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens on this OS-assigned port any more

    started = time.monotonic()
    with pytest.raises(CheckpointRetriesExhaustedError) as raised:
        await send_checkpoint(
            session,
            source,
            f"http://127.0.0.1:{port}",
            TOKEN,
            "mig-gone",
            rate_bytes_per_s=None,
            max_attempts=3,
            backoff_initial_s=0.05,
            backoff_max_s=1.0,
        )

    assert raised.value.transient
    assert time.monotonic() - started >= 0.05 + 0.1  # two waits: 0.05 s, then 0.1 s


@dataclass
class _ManualMonotonic:
    now_s: float = 0.0

    def __call__(self) -> float:
        return self.now_s

    async def sleep(self, duration_s: float) -> None:
        self.now_s += duration_s


@pytest.mark.parametrize(
    ("label", "rate_bytes_per_s", "burst_bytes", "steps", "expected_end_s"),
    [
        ("n bytes take n / rate from the first call", 1000.0, 100.0, [(0.0, 500)], 0.5),
        ("a steady stream runs at the rate", 1000.0, 100.0, [(0.0, 100)] * 10, 1.0),
        ("idle time banks at most the burst", 1000.0, 100.0, [(10.0, 300)], 10.2),
        ("time spent elsewhere counts", 1000.0, 100.0, [(0.0, 100), (0.05, 100)], 0.2),
        ("a burst within credit does not wait", 1000.0, 500.0, [(1.0, 400)], 1.0),
    ],
)
async def test_rule_token_bucket_paces_to_the_rate(
    label: str,
    rate_bytes_per_s: float,
    burst_bytes: float,
    steps: list[tuple[float, int]],
    expected_end_s: float,
) -> None:
    clock = _ManualMonotonic()
    bucket = TokenBucket(
        rate_bytes_per_s, burst_bytes=burst_bytes, monotonic=clock, sleep=clock.sleep
    )

    for idle_s, n_bytes in steps:
        clock.now_s += idle_s
        await bucket.take(n_bytes)

    assert clock.now_s == pytest.approx(expected_end_s), label


@pytest.mark.parametrize("direct_io", [True, False], ids=["direct-io", "page-cache"])
@pytest.mark.parametrize(
    ("label", "held_bytes", "pieces", "interrupted"),
    [
        ("from empty, exact batches", 0, [8192, 8192], False),
        ("from empty, odd pieces", 0, [1, 4095, 4097, 10_000, 3], False),
        ("resume at an unaligned offset", ALIGN_BYTES + 904, [7000, 9000], False),
        ("resume at an aligned offset", 2 * ALIGN_BYTES, [100], False),
        ("nothing added", 5000, [], False),
        ("interrupted mid-batch", 5000, [3000, 20_000, 17], True),
    ],
)
def test_rule_spool_appends_and_hashes_every_byte_in_order(
    tmp_path: Path,
    direct_io: bool,
    label: str,
    held_bytes: int,
    pieces: list[int],
    interrupted: bool,
) -> None:
    generator = random.Random(len(label))
    held = generator.randbytes(held_bytes)
    added = [generator.randbytes(n) for n in pieces]
    path = tmp_path / "part"
    path.write_bytes(held)
    hasher = hashlib.sha256(held)

    async def run() -> Spool:
        spool = Spool(
            path,
            held_bytes=held_bytes,
            hasher=hasher,
            batch_bytes=8192,
            truncate=False,
            direct_io=direct_io,
        )
        for piece in added:
            await spool.add(piece)
        if not interrupted:
            await spool.finish()
        return spool

    spool = asyncio.run(run())
    if interrupted:
        spool.settle()
    progress = spool.hash_progress()
    spool.close()

    expected = held + b"".join(added)
    assert path.read_bytes() == expected, label
    assert spool.received_bytes == spool.written_bytes == len(expected)
    assert progress is not None and progress.covered_bytes == len(expected)
    assert progress.hasher.hexdigest() == hashlib.sha256(expected).hexdigest()

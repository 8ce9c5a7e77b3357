"""A TCP proxy on loopback that counts, cuts and holds the streams it carries (fault tests).

Put in front of a site agent, it lets a test strike a fault at a byte the test names rather
than at a moment it hopes for: :class:`CuttingProxy` closes the first connection that has sent
``cut_after_bytes`` upstream (a transfer cut mid-stream), and a :class:`StreamHold` stops the
upstream bytes of the connections that carry a request (say ``PUT /v1/checkpoints/``) at a
given offset until the test releases them: meanwhile the caller waits for its answer, the
test kills a process or changes a site, then lets the bytes go on or cuts the connections
there. Test tooling only: nothing in ``gateway`` uses it.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass, field

_CHUNK_BYTES = 16 * 1024
_TAIL_BYTES = 256
"""Bytes of the previous chunk searched with the next, for a marker split across the two."""
ANSWER_WAIT_S = 30.0
"""How long a held connection, let go on and then ended by its caller, waits for upstream to
answer before the proxy closes it [s]."""


@dataclass
class StreamHold:
    """Holds the connections whose upstream bytes contain ``marker`` once ``after_bytes`` more
    bytes (counted from the marker's first byte) have passed, until :meth:`release`.

    A released hold is spent: a later connection with the marker (a retry after the fault)
    passes. Each held connection is held once.
    """

    marker: bytes
    after_bytes: int = 0
    waiting: int = 0
    """Connections held now."""
    struck: int = 0
    """Connections held in all."""
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _cut: bool = False

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self, *, cut: bool = False) -> None:
        """Let the held connections go on (``cut``: close them where they are held)."""
        self._cut = cut
        self._released.set()

    async def wait(self) -> bool:
        """Hold one connection until released; True when it may go on."""
        self.waiting += 1
        self.struck += 1
        try:
            await self._released.wait()
        finally:
            self.waiting -= 1
        return not self._cut


@dataclass
class _Link:
    """One connection through the proxy."""

    index: int
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever bytes come back from upstream (cleared when a hold lets it go on)."""


@dataclass
class CuttingProxy:
    """A TCP proxy on loopback in front of ``upstream_port``. It counts the bytes sent
    upstream, closes the first connection that has sent ``cut_after_bytes`` upstream, and holds
    the connections :attr:`hold` names."""

    upstream_port: int
    cut_after_bytes: int | None = None
    hold: StreamHold | None = None
    sent_bytes: int = 0
    connection_bytes: list[int] = field(default_factory=list)
    """Bytes sent upstream on each connection, in the order they were opened."""
    cuts: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.hold is not None:
            self.hold.release(cut=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:
            writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        link = _Link(len(self.connection_bytes))
        self.connection_bytes.append(0)
        down = asyncio.create_task(self._pump_down(up_reader, writer, link))
        if await self._pump_up(reader, up_writer, link):
            # Held and let go on after its caller had gone: a request that arrives late,
            # whose answer nobody reads. Close only once upstream has answered it.
            answered = asyncio.create_task(link.answered.wait())
            await asyncio.wait(
                {answered, down}, timeout=ANSWER_WAIT_S, return_when="FIRST_COMPLETED"
            )
            answered.cancel()
        for w in (writer, up_writer):
            w.transport.abort()
            self._writers.discard(w)
        await down

    async def _pump_down(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        with suppress(ConnectionError, OSError):
            while data := await reader.read(_CHUNK_BYTES):
                link.answered.set()
                writer.write(data)
                await writer.drain()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes, link: _Link) -> None:
        if data:
            writer.write(data)
            self.sent_bytes += len(data)
            self.connection_bytes[link.index] += len(data)
            await writer.drain()

    def _hold_offset(self, seen: bytes, seen_from: int) -> int | None:
        """The offset in the connection to hold at, if ``seen`` (its bytes from offset
        ``seen_from``) shows the marker of an unreleased hold."""
        hold = self.hold
        if hold is None or hold.released:
            return None
        found = seen.find(hold.marker)
        return None if found < 0 else seen_from + found + hold.after_bytes

    async def _pump_up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> bool:
        """Client to upstream, cut or held where told. True when the connection was held, let
        go on, and ended by its caller: its answer is still to come."""
        carried = 0
        tail = b""
        hold_at: int | None = None
        held = False
        try:
            while data := await reader.read(_CHUNK_BYTES):
                if hold_at is None:
                    hold_at = self._hold_offset(tail + data, carried - len(tail))
                    tail = (tail + data)[-_TAIL_BYTES:]
                while data:
                    piece = data
                    holding = not held and hold_at is not None and hold_at < carried + len(data)
                    if holding:
                        assert hold_at is not None
                        piece = data[: max(hold_at - carried, 0)]
                    cut_at = self.cut_after_bytes if self.cuts == 0 else None
                    cutting = cut_at is not None and cut_at <= carried + len(piece)
                    if cut_at is not None and cutting:
                        piece = piece[: max(cut_at - carried, 0)]
                    await self._send(writer, piece, link)
                    carried += len(piece)
                    data = data[len(piece) :]
                    if cutting:
                        self.cuts += 1
                        return False
                    if holding:
                        assert self.hold is not None
                        held = True
                        if not await self.hold.wait():
                            return False
                        link.answered.clear()
        except (ConnectionError, OSError):
            return False
        return held

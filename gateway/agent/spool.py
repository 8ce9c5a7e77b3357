"""Writing a received byte stream to the end of a file while hashing it.

The receiving agent spends most of its CPU time here: a checkpoint of many GB is written once
and hashed once, while the event loop receives the next bytes. Received pieces are copied
into one of two page-aligned staging buffers; when one is full, a writer thread writes it to
the file with ``O_DIRECT`` and a hasher thread feeds it to sha256, both while the loop fills
the other buffer (hashlib and the system calls release the GIL). ``O_DIRECT`` lets the disk
read the buffer itself: copying every byte into the page cache costs more CPU time than
receiving and hashing it (markedly so on a virtual machine, where fresh page-cache pages are
slow to touch). File systems without ``O_DIRECT`` (tmpfs) get ordinary writes.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from gateway.agent.checkpoint_store import HashProgress

ALIGN_BYTES = 4096
"""Alignment of ``O_DIRECT`` offsets, lengths and buffers (a multiple of common block sizes)."""


def _open_direct(path: Path) -> int | None:
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # the file system does not support it
            return None
        raise


def _pwrite_all(fd: int, data: memoryview, offset_bytes: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset_bytes)
        data, offset_bytes = data[written:], offset_bytes + written


class Spool:
    """Appends to ``path``, which holds ``held_bytes`` already fed to ``hasher``.

    batch_bytes: staging buffer size, rounded up to :data:`ALIGN_BYTES` [bytes]; truncate:
    start from an empty file; direct_io: write with ``O_DIRECT`` where the file system allows
    it. ``received_bytes`` counts the bytes held plus every byte added;
    ``written_bytes`` those written and hashed. After the last :meth:`add`, call
    :meth:`finish` (or :meth:`settle` after an interruption), then :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        *,
        held_bytes: int,
        hasher: hashlib._Hash,
        batch_bytes: int,
        truncate: bool,
        direct_io: bool = True,
    ) -> None:
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        self.fd = os.open(path, flags, 0o644)
        self._direct_fd = _open_direct(path) if direct_io else None
        self.hasher = hasher
        self.received_bytes = held_bytes
        self.written_bytes = held_bytes
        self._hashed_bytes = held_bytes
        capacity_bytes = -(-max(batch_bytes, 1) // ALIGN_BYTES) * ALIGN_BYTES
        self._buffers = [mmap.mmap(-1, capacity_bytes) for _ in range(2)]
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-write")
        self._hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-hash")
        self._pending: tuple[Future[int], Future[int]] | None = None
        self._failed = False
        self._current = 0
        # The current buffer holds the file's bytes from _base_bytes; its first _hashed_fill
        # bytes are on disk and hashed already (re-read so that direct writes stay aligned).
        aligned_held = held_bytes - held_bytes % ALIGN_BYTES
        self._base_bytes = aligned_held if self._direct_fd is not None else held_bytes
        self._fill = held_bytes - self._base_bytes
        self._hashed_fill = self._fill
        if self._fill:
            head = os.pread(self.fd, self._fill, self._base_bytes)
            if len(head) != self._fill:
                self.close()
                raise OSError(f"{path} is shorter than the {held_bytes} bytes it should hold")
            self._buffers[0][: self._fill] = head

    async def add(self, data: bytes) -> None:
        """Take ``data`` (copied); waits while both buffers are busy."""
        view = memoryview(data)
        while view:
            buffer = self._buffers[self._current]
            n = min(len(view), len(buffer) - self._fill)
            buffer[self._fill : self._fill + n] = view[:n]
            self._fill += n
            self.received_bytes += n
            view = view[n:]
            if self._fill == len(buffer):
                await self._wait()
                self._submit()

    async def finish(self) -> None:
        """Write and hash everything added; raises OSError when the disk refused."""
        await self._wait()
        if self._fill > self._hashed_fill:
            self._submit()
            await self._wait()

    def settle(self) -> None:
        """After an interruption: write and hash every byte added, blocking.

        After a failed write nothing more is written, so that the file keeps no gap.
        """
        pending, self._pending = self._pending, None
        try:
            if pending is not None:
                self._account(pending[0].result(), pending[1].result())
            if not self._failed and self._fill > self._hashed_fill:
                written = self._write(self._current, self._base_bytes, self._fill)
                hashed = self._hash(self._current, self._base_bytes, self._hashed_fill, self._fill)
                self._account(written, hashed)
                self._fill = self._hashed_fill = 0
        except OSError:
            self._failed = True

    def hash_progress(self) -> HashProgress | None:
        """The hash of the bytes on disk, or None when a failure left them apart."""
        if self._failed or self._pending is not None or self._hashed_bytes != self.written_bytes:
            return None
        return HashProgress(self.hasher, self.written_bytes)

    def close(self) -> None:
        """Wait for the threads, close the files, free the buffers."""
        self._writer.shutdown(wait=True)
        self._hashing.shutdown(wait=True)
        if self._direct_fd is not None:
            os.close(self._direct_fd)
        os.close(self.fd)
        for buffer in self._buffers:
            buffer.close()

    def _submit(self) -> None:
        index, base, fill, hashed_fill = (
            self._current,
            self._base_bytes,
            self._fill,
            self._hashed_fill,
        )
        self._pending = (
            self._writer.submit(self._write, index, base, fill),
            self._hashing.submit(self._hash, index, base, hashed_fill, fill),
        )
        self._base_bytes += fill
        self._fill = self._hashed_fill = 0
        self._current = 1 - index

    async def _wait(self) -> None:
        """Wait for the batch in flight; it stays pending (for :meth:`settle`) if this fails
        or is cancelled, and the threads are never cancelled half-way."""
        if self._pending is None:
            return
        both = asyncio.gather(*map(asyncio.wrap_future, self._pending))
        try:
            written, hashed = await asyncio.shield(both)
        except OSError:
            self._failed = True
            raise
        self._pending = None
        self._account(written, hashed)

    def _account(self, written_end: int, hashed_end: int) -> None:
        self.written_bytes = max(self.written_bytes, written_end)
        self._hashed_bytes = max(self._hashed_bytes, hashed_end)

    def _write(self, index: int, base_bytes: int, fill: int) -> int:
        """Write buffer ``index`` (``fill`` bytes) at ``base_bytes``; returns the end offset."""
        with memoryview(self._buffers[index]) as whole:
            data = whole[:fill]
            aligned = fill - fill % ALIGN_BYTES if self._direct_fd is not None else 0
            if aligned and self._direct_fd is not None:
                try:
                    _pwrite_all(self._direct_fd, data[:aligned], base_bytes)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # A block size above ALIGN_BYTES: ordinary writes from now on.
                    os.close(self._direct_fd)
                    self._direct_fd, aligned = None, 0
            _pwrite_all(self.fd, data[aligned:], base_bytes + aligned)
            data.release()
        return base_bytes + fill

    def _hash(self, index: int, base_bytes: int, start: int, fill: int) -> int:
        """Hash bytes ``start:fill`` of buffer ``index``; returns the end offset hashed."""
        with memoryview(self._buffers[index]) as whole:
            self.hasher.update(whole[start:fill])
        return base_bytes + fill

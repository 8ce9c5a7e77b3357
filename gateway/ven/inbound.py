"""The VEN's edge: what a VTN's answer must be before any XML parser sees it.

openleadr validates every message it receives with lxml and the 2.0b schema attached to the
parser, and lxml 6.2 with libxml2 2.14 crash the whole process (SIGSEGV) on an entity
declared in a DTD, ``<!DOCTYPE r [<!ENTITY a "x">]><r>&a;</r>`` alone. OpenADR 2.0b
messages never need a DTD: the schema (``oadr_20b.xsd``) defines them completely, and XML
Schema validation ignores a DTD. So the edge refuses, by a scan of the bytes:

- a body longer than ``max_message_size_bytes`` (read no further than that);
- an empty body (openleadr returns a bare ``None`` for it, which its callers unpack: a
  ``TypeError``); nothing was received;
- an encoding other than UTF-8, US-ASCII or ISO-8859-1 (a byte-order mark of UTF-16 or
  UTF-32, a NUL byte, an ``encoding`` declaration naming another, bytes that are not UTF-8
  where UTF-8 applies);
- every ``<!`` that does not open a comment (``<!--``) or a CDATA section (``<![CDATA[``):
  that is every DOCTYPE and every ENTITY, ELEMENT, ATTLIST or NOTATION declaration;
- every ``&`` that does not start one of the five predefined entity references (``&lt;``,
  ``&gt;``, ``&amp;``, ``&quot;``, ``&apos;``) or a character reference (``&#10;``,
  ``&#xA;``).

The reason counted is ``entity`` when the message declares or references an entity, ``dtd``
for any other declaration (a DOCTYPE alone).

Why the scan is conservative: in the encodings it lets through, every character below 0x80
is its own single byte and no byte of a multi-byte UTF-8 sequence is below 0x80, so the
markup characters ``<``, ``!`` and ``&`` of the document are exactly the bytes 0x3C, 0x21
and 0x26. A DTD can only begin with the bytes ``<!DOCTYPE``, and a general entity reference
only with ``&``; a document without a DTD declares no entity (parameter entities ``%p;``
exist only inside a DTD). What passes therefore holds no DTD and no reference other than the
predefined ones and character references, which libxml2 resolves without an entity table.
The scan can refuse a harmless message (``<!DOCTYPE`` inside a comment); it cannot let a DTD
or an entity through. ``tests/system/test_ven_inbound.py`` runs each form through the edge and then
openleadr's parser in a subprocess, so a gap would show as a crash there, not in the suite.

A refusal is logged at WARNING the first time a VTN gets one and at DEBUG after that, and is
counted by VTN and reason (``inbound_refusals``, served by ``/metrics`` as
``dr_gateway_inbound_refusals_total``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

Reason = Literal["oversize", "empty", "encoding", "dtd", "entity"]
REASONS: tuple[Reason, ...] = ("oversize", "empty", "encoding", "dtd", "entity")

READ_CHUNK_BYTES = 65_536
"""How much of a body is read at a time [bytes]."""

SCANNABLE_ENCODINGS = frozenset({"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin1"})
"""Encodings an XML declaration may name: each keeps every character below 0x80 a byte of
its own (UTF-8 is the default and what 2.0b messages use)."""
_SINGLE_BYTE = frozenset({"iso-8859-1", "latin1"})

_DECLARATION = re.compile(rb"<!(?!--|\[CDATA\[)")
_ENTITY_DECLARATION = b"<!ENTITY"
_ENTITY_REFERENCE = re.compile(rb"&(?!(?:lt|gt|amp|quot|apos|#[0-9]+|#x[0-9A-Fa-f]+);)")
_UTF8_BOM = b"\xef\xbb\xbf"
_DECLARATION_MAX_BYTES = 1024
"""An XML declaration (``<?xml ... ?>``) longer than this is refused [bytes]."""
_ENCODING = re.compile(rb"""encoding\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_FOREIGN_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_SHOWN_CHARS = 40
"""How much of an offending construct a log line quotes [characters]."""


@dataclass(frozen=True)
class Refusal:
    """Why a message was refused at the edge."""

    reason: Reason
    detail: str


class TooLargeError(Exception):
    """A body longer than the cap; nothing of it is kept."""

    def __init__(self, max_size_bytes: int, seen_bytes: int) -> None:
        super().__init__(f"more than {max_size_bytes} bytes (read {seen_bytes})")
        self.refusal = Refusal(
            "oversize", f"the body is longer than max_message_size_bytes = {max_size_bytes}"
        )


async def read_body(response: Any, max_size_bytes: int) -> bytes:
    """The body of an aiohttp ``ClientResponse``, read in chunks; raises
    :class:`TooLargeError` as soon as it (or its Content-Length) exceeds ``max_size_bytes``."""
    declared = response.content_length
    if declared is not None and declared > max_size_bytes:
        raise TooLargeError(max_size_bytes, 0)
    chunks: list[bytes] = []
    size_bytes = 0
    async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
        size_bytes += len(chunk)
        if size_bytes > max_size_bytes:
            raise TooLargeError(max_size_bytes, size_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def scan(content: bytes) -> Refusal | None:
    """Why ``content`` must not reach an XML parser; None when it may (see the module notes)."""
    if not content:
        return Refusal("empty", "the body is empty")
    if problem := _encoding_problem(content):
        return Refusal("encoding", problem)
    declaration = _DECLARATION.search(content)
    reference = _ENTITY_REFERENCE.search(content)
    entity = reference is not None or _ENTITY_DECLARATION in content
    found = declaration or reference
    if found is None:
        return None
    what = "a declaration" if found is declaration else "an entity reference"
    return Refusal(
        "entity" if entity else "dtd",
        f"{what} at byte {found.start()}: {_shown(content, found.start())}",
    )


def _encoding_problem(content: bytes) -> str | None:
    if content.startswith(_FOREIGN_BOMS):
        return "a UTF-16 or UTF-32 byte-order mark"
    if b"\x00" in content:
        return "a NUL byte (UTF-16 or UTF-32 text?)"
    declared = "utf-8"
    head = content.removeprefix(_UTF8_BOM)
    if head.startswith(b"<?xml"):
        end = head.find(b"?>", 0, _DECLARATION_MAX_BYTES)
        if end < 0:
            return f"an XML declaration not closed within {_DECLARATION_MAX_BYTES} bytes"
        if (named := _ENCODING.search(head, 0, end)) is not None:
            declared = (named.group(1) or named.group(2) or b"").decode("ascii", "replace")
            declared = declared.lower()
            if declared not in SCANNABLE_ENCODINGS:
                return f"the XML declaration names the encoding {declared[:_SHOWN_CHARS]!r}"
    if declared not in _SINGLE_BYTE:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"not UTF-8 at byte {exc.start}"
    return None


def _shown(content: bytes, start: int) -> str:
    return content[start : start + _SHOWN_CHARS].decode("utf-8", "replace")


Record = Callable[[str, Reason, int], Awaitable[None]]
"""Counts refusals of a VTN's messages for a reason (in the database): VTN, reason, how many."""


class RefusalLog:
    """The refusals of one VTN: logged once at WARNING, then at DEBUG; each one counted.

    vtn_id: our id of the VTN
    record: counts refusals; a failure to count is logged and does not stop the VEN

    The count is written by a task of its own, never by the poll that met the refusal: a
    refusing poll does not wait for the database (whose writers may be busy with a flood of
    distributions), and refusals met meanwhile go in one write per reason. A crash loses at
    most the refusals not written yet; :meth:`settled` waits until they are.
    """

    def __init__(self, vtn_id: str, record: Record | None = None) -> None:
        self.vtn_id = vtn_id
        self._record = record
        self.counts: dict[Reason, int] = dict.fromkeys(REASONS, 0)
        """Refusals seen by this process, by reason."""
        self._unrecorded: Counter[Reason] = Counter()
        self._recording: asyncio.Task[None] | None = None

    async def refused(self, service: str, refusal: Refusal) -> None:
        first = not any(self.counts.values())
        self.counts[refusal.reason] += 1
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "VTN %s: refused its answer to %s (%s): %s%s",
            self.vtn_id,
            service,
            refusal.reason,
            refusal.detail,
            "; later refusals from this VTN are logged at debug and counted in "
            "dr_gateway_inbound_refusals_total"
            if first
            else "",
        )
        if self._record is None:
            return
        self._unrecorded[refusal.reason] += 1
        if self._recording is None or self._recording.done():
            self._recording = asyncio.create_task(self._record_all())

    async def settled(self) -> None:
        """Wait until every refusal seen so far is counted (or failed to be)."""
        while self._recording is not None and not self._recording.done():
            await asyncio.shield(self._recording)

    async def _record_all(self) -> None:
        assert self._record is not None
        while self._unrecorded:
            batch, self._unrecorded = self._unrecorded, Counter()
            for reason, refused in batch.items():
                try:
                    await self._record(self.vtn_id, reason, refused)
                except Exception as exc:  # counting must not stop the VEN
                    logger.warning(
                        "VTN %s: could not count %d refusal(s) (%s): %s",
                        self.vtn_id,
                        refused,
                        reason,
                        exc,
                    )


@dataclass(frozen=True)
class Edge:
    """The edge of one VTN's connection: the size cap and where refusals go."""

    max_message_size_bytes: int
    refusals: RefusalLog

    async def screen(self, service: str, content: bytes, executor: Executor | None = None) -> bool:
        """True when ``content`` may be parsed; a refusal is logged and counted. The scan of
        a large body runs in a worker thread (of ``executor``; asyncio's default when None)."""
        if len(content) > READ_CHUNK_BYTES:
            refusal = await asyncio.get_running_loop().run_in_executor(executor, scan, content)
        else:
            refusal = scan(content)
        if refusal is None:
            return True
        await self.refusals.refused(service, refusal)
        return False

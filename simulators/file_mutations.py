"""Seeded mutations of input files: what an operator's typo, a bad copy or a hostile file
does to a configuration (TOML) or a data file (CSV).

Each mutation starts from a valid file and changes one thing: a value's type, a number out
of range (NaN, infinity, negative, huge), a removed, renamed or repeated key or table, a
repeated row, deep nesting, a cell of a CSV file, or the bytes themselves (flips, truncation,
non-UTF-8, NUL, a byte-order mark, binary noise). Some replace the file by nothing (missing)
or by a directory. The fuzz test and ``benchmarks/fuzz_files.py`` feed the mutants to the
readers and to ``dr-gateway``; the same seed gives the same mutants.
"""

from __future__ import annotations

import gzip
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Form = Literal["file", "missing", "directory"]
Syntax = Literal["toml", "csv"]


@dataclass(frozen=True)
class Mutant:
    """One mutated input: ``data`` written as the file, or the file ``missing``, or a
    ``directory`` in its place; ``what`` says what was changed."""

    what: str
    data: bytes = b""
    form: Form = "file"

    def write(self, path: Path) -> Path:
        """Put the mutant at ``path`` (which must not exist yet); returns ``path``."""
        if self.form == "directory":
            path.mkdir()
        elif self.form == "file":
            path.write_bytes(self.data)
        return path


TOML_VALUES = (
    '"text"',
    '""',
    "0",
    "-1",
    "-0.0",
    "1e308",
    "-1e308",
    "99999999999999999999999999999",
    "-9223372036854775809",
    "inf",
    "-inf",
    "nan",
    "true",
    "[]",
    "[1, 2]",
    "{}",
    "{ a = 1 }",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "2026-06-21T00:00:00",
    "12:00:00",
    '"sqlite://"',
    '"sqlite:///no-such-dir/x.db"',
    '"http://user:secret-password@127.0.0.1:1/"',
    '"\\u0000"',
    '"\\u001b[31m"',
    '"no-such-host.invalid"',
    '"/"',
)
"""Values a TOML key may be given instead of its own."""

CSV_CELLS = (
    "",
    "x",
    "nan",
    "inf",
    "-inf",
    "-1",
    "0",
    "1e400",
    "99999999999999999999999",
    "2001-06-21T12:00:00",
    "2001-13-45T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "true",
    '"',
    "a,b",
    "\x00",
    "\u202e",
)
"""Cells a CSV field may be given instead of its own."""

_TOML_ASSIGNMENT = re.compile(r"^(\s*)([A-Za-z0-9_.-]+)(\s*=\s*)(.*)$")


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def mutate_toml(text: str, rng: random.Random) -> Mutant:
    """One structural change of a TOML document."""
    lines = text.splitlines()
    assignments = [i for i, line in enumerate(lines) if _TOML_ASSIGNMENT.match(line)]
    tables = [i for i, line in enumerate(lines) if line.startswith("[")]
    choice = rng.randrange(8)
    if choice <= 2 and assignments:
        i = rng.choice(assignments)
        match = _TOML_ASSIGNMENT.match(lines[i])
        assert match is not None
        value = rng.choice(TOML_VALUES)
        lines[i] = match.group(1) + match.group(2) + match.group(3) + value
        return Mutant(f"toml: line {i + 1}: {match.group(2)} = {value}", _lines(lines))
    if choice == 3 and assignments:
        i = rng.choice(assignments)
        del lines[i]
        return Mutant(f"toml: line {i + 1} removed", _lines(lines))
    if choice == 4 and assignments:
        i = rng.choice(assignments)
        lines[i] = re.sub(r"^(\s*)([A-Za-z0-9_-]+)", r"\1\2_typo", lines[i], count=1)
        return Mutant(f"toml: line {i + 1}: key renamed", _lines(lines))
    if choice == 5 and tables:
        start = rng.choice(tables)
        end = next((j for j in tables if j > start), len(lines))
        block = lines[start:end]
        return Mutant(f"toml: table at line {start + 1} repeated", _lines([*lines, "", *block]))
    if choice == 6 and assignments:
        i = rng.choice(assignments)
        match = _TOML_ASSIGNMENT.match(lines[i])
        assert match is not None
        depth = rng.choice((10, 300, 2000))
        lines[i] = match.group(1) + match.group(2) + match.group(3) + _nested(depth)
        return Mutant(f"toml: line {i + 1}: nested {depth} deep", _lines(lines))
    if assignments:
        i = rng.choice(assignments)
        lines.insert(i + 1, lines[i])
        return Mutant(f"toml: line {i + 1} repeated", _lines(lines))
    return mutate_bytes(text.encode(), rng)


def mutate_csv(text: str, rng: random.Random) -> Mutant:
    """One structural change of a CSV file with a header line (no quoted commas)."""
    lines = text.splitlines()
    if len(lines) < 2:
        return mutate_bytes(text.encode(), rng)
    header = lines[0].split(",")
    choice = rng.randrange(7)
    if choice <= 2:
        row = rng.randrange(1, len(lines))
        cells = lines[row].split(",")
        column = rng.randrange(len(cells))
        cell = rng.choice(CSV_CELLS)
        cells[column] = cell
        lines[row] = ",".join(cells)
        return Mutant(f"csv: line {row + 1}, field {column + 1} = {cell!r}", _lines(lines))
    if choice == 3:
        column = rng.randrange(len(header))
        new = [",".join(c for j, c in enumerate(line.split(",")) if j != column) for line in lines]
        return Mutant(f"csv: column {header[column]!r} removed", _lines(new))
    if choice == 4:
        column = rng.randrange(len(header))
        replacement = rng.choice(("", header[(column + 1) % len(header)], "unknown", " x "))
        header[column] = replacement
        lines[0] = ",".join(header)
        return Mutant(f"csv: header field {column + 1} = {replacement!r}", _lines(lines))
    if choice == 5:
        row = rng.randrange(1, len(lines))
        lines.insert(row + 1, lines[row])
        return Mutant(f"csv: line {row + 1} repeated", _lines(lines))
    row = rng.randrange(1, len(lines))
    lines[row] = lines[row] + ",extra"
    return Mutant(f"csv: line {row + 1}: an extra field", _lines(lines))


def mutate_bytes(data: bytes, rng: random.Random) -> Mutant:
    """One change of the bytes: flips, truncation, non-UTF-8, NUL, BOM, noise, empty."""
    choice = rng.randrange(8)
    if choice == 0 and data:
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return Mutant("bytes: flipped", bytes(out))
    if choice == 1 and data:
        cut = rng.randrange(len(data))
        return Mutant(f"bytes: truncated at {cut}", data[:cut])
    if choice == 2:
        at = rng.randrange(len(data) + 1)
        bad = rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe9"))
        return Mutant(f"bytes: non-UTF-8 at {at}", data[:at] + bad + data[at:])
    if choice == 3:
        at = rng.randrange(len(data) + 1)
        return Mutant(f"bytes: NUL at {at}", data[:at] + b"\x00" + data[at:])
    if choice == 4:
        return Mutant("bytes: byte-order mark", b"\xef\xbb\xbf" + data)
    if choice == 5:
        noise = rng.randbytes(rng.choice((16, 1024, 65536)))
        return Mutant(f"bytes: {len(noise)} random bytes", noise)
    if choice == 6:
        return Mutant("bytes: empty", b"")
    return Mutant("bytes: CRLF line ends", data.replace(b"\n", b"\r\n"))


def compressed(mutant: Mutant, rng: random.Random) -> Mutant:
    """``mutant`` gzipped (a file's name then ends in ``.gz``); one in four also has its
    compressed bytes flipped or truncated."""
    if mutant.form != "file":
        return mutant
    data = gzip.compress(mutant.data, mtime=0)
    if rng.random() < 0.125:
        out = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return Mutant(f"{mutant.what}; gzip, then flipped", bytes(out))
    if rng.random() < 1 / 7:
        cut = rng.randrange(len(data))
        return Mutant(f"{mutant.what}; gzip, truncated at {cut}", data[:cut])
    return Mutant(f"{mutant.what}; gzip", data)


def mutants(
    syntax: Syntax, original: bytes, seed: int, count: int, *, gz: bool = False
) -> Iterator[Mutant]:
    """``count`` mutants of ``original`` (valid UTF-8 text), seeded: about half structural
    (:func:`mutate_toml` or :func:`mutate_csv`), two fifths of the bytes, the rest the file
    missing or a directory. With ``gz`` every file is gzipped (:func:`compressed`)."""
    rng = random.Random(f"{syntax}:{seed}:{gz}")
    text = original.decode("utf-8")
    for _ in range(count):
        roll = rng.random()
        if roll < 0.5:
            mutant = mutate_toml(text, rng) if syntax == "toml" else mutate_csv(text, rng)
        elif roll < 0.92:
            mutant = mutate_bytes(original, rng)
        elif roll < 0.96:
            mutant = Mutant("form: missing", form="missing")
        else:
            mutant = Mutant("form: a directory", form="directory")
        yield compressed(mutant, rng) if gz else mutant


def _lines(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8", errors="surrogatepass")

"""The receiving agent's store of checkpoints, one set of files per migration id.

In ``store_dir``: ``<id>.meta.json`` (the sha256 and size the sender announced, written before
any byte), ``<id>.part`` (the bytes received so far, appended in order) and ``<id>.ckpt`` (the
checkpoint once received whole and verified: ``.part`` fsynced and renamed atomically). A
``.ckpt`` file therefore always holds exactly the announced bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import InputError
from gateway.sites.fields import ID_PATTERN

_HASH_READ_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class CheckpointState:
    """What the target holds for one migration id.

    path: the verified file when ``complete``, else the partial file; size_bytes and sha256:
    as announced by the sender [bytes]; received_bytes: bytes held [bytes].
    """

    migration_id: str
    path: Path
    size_bytes: int
    sha256: str
    received_bytes: int
    complete: bool


@dataclass(frozen=True)
class StorePaths:
    """The three files of one migration id."""

    meta: Path
    part: Path
    final: Path


def check_migration_id(migration_id: str) -> str:
    """``migration_id`` if it is an id of the site API (:data:`ID_PATTERN`, safe as a file
    name), else InputError naming the rule."""
    if not ID_PATTERN.fullmatch(migration_id):
        raise InputError(
            f"migration_id {migration_id[:60]!r}: expected 1 to 128 characters of A-Z a-z 0-9 "
            "'_' '.' ':' '-', not starting with '.', ':' or '-'"
        )
    return migration_id


def store_paths(store_dir: Path, migration_id: str) -> StorePaths:
    """The files of ``migration_id`` in ``store_dir``; raises InputError for a bad id."""
    check_migration_id(migration_id)
    return StorePaths(
        meta=store_dir / f"{migration_id}.meta.json",
        part=store_dir / f"{migration_id}.part",
        final=store_dir / f"{migration_id}.ckpt",
    )


def checkpoint_state(store_dir: Path, migration_id: str) -> CheckpointState | None:
    """What ``store_dir`` holds for ``migration_id``; None when no transfer of it started.

    Raises InputError when ``migration_id`` is not a valid migration id.
    """
    paths = store_paths(store_dir, migration_id)
    try:
        meta = json.loads(paths.meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    size_bytes, sha256 = int(meta["size_bytes"]), str(meta["sha256"])
    if paths.final.exists():
        return CheckpointState(migration_id, paths.final, size_bytes, sha256, size_bytes, True)
    try:
        received_bytes = paths.part.stat().st_size
    except FileNotFoundError:
        received_bytes = 0
    return CheckpointState(migration_id, paths.part, size_bytes, sha256, received_bytes, False)


def verified_checkpoint(store_dir: Path, migration_id: str) -> Path | None:
    """The checkpoint of ``migration_id`` once received whole and verified, else None."""
    state = checkpoint_state(store_dir, migration_id)
    return state.path if state is not None and state.complete else None


def write_meta(paths: StorePaths, migration_id: str, sha256: str, size_bytes: int) -> None:
    """Record (atomically) which checkpoint ``migration_id`` names."""
    tmp = paths.meta.with_suffix(".tmp")
    document = {"migration_id": migration_id, "sha256": sha256, "size_bytes": size_bytes}
    tmp.write_text(json.dumps(document), encoding="utf-8")
    os.replace(tmp, paths.meta)


def discard(paths: StorePaths) -> None:
    """Forget a partial checkpoint: its bytes, then what it was announced as."""
    paths.part.unlink(missing_ok=True)
    paths.meta.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def complete_part(fd: int, paths: StorePaths, *, fsync: bool) -> None:
    """Make the verified partial file (open as ``fd``) the checkpoint: fsync, rename, fsync
    the directory (without fsync: the rename only)."""
    if fsync:
        os.fsync(fd)
    os.replace(paths.part, paths.final)
    if fsync:
        _fsync_dir(paths.final.parent)


def hash_prefix(path: Path, length_bytes: int) -> hashlib._Hash:
    """A sha256 object fed with the first ``length_bytes`` of ``path``."""
    hasher = hashlib.sha256()
    buffer = bytearray(_HASH_READ_BYTES)
    view = memoryview(buffer)
    remaining = length_bytes
    with path.open("rb", buffering=0) as stream:
        while remaining > 0:
            n = stream.readinto(view[: min(remaining, len(buffer))])
            if not n:
                raise OSError(f"{path} is shorter than {length_bytes} bytes")
            hasher.update(view[:n])
            remaining -= n
    return hasher


def file_sha256(path: Path) -> str:
    """Hex sha256 of the whole file at ``path``."""
    with path.open("rb", buffering=0) as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


@dataclass
class HashProgress:
    """A sha256 object fed with the first ``covered_bytes`` of a partial file."""

    hasher: hashlib._Hash
    covered_bytes: int

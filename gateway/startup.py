"""Start-up checks of a configuration beyond its keys, before anything serves.

A configuration whose keys are valid may still name a database that cannot be opened, or a
listen address that does not resolve. The commands check these first, so that a bad
setting stops them with one line naming the file and the key (exit 2), not a traceback
from deep inside the start (``docs/configuration.md``).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from gateway.errors import ConfigError, GatewayError
from gateway.settings import Settings, load_settings


def listen_problem(host: str, port: int, *, bind: bool = False) -> tuple[str, str] | None:
    """(``"host"`` or ``"port"``, why) when ``host:port`` cannot be listened on, or None.

    The host must resolve to an address of this machine; with ``bind`` a socket is bound to
    each of its addresses and closed again (the port is free now; it may be taken before the
    server binds it, and the server then reports that)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        return "host", f"cannot resolve {host!r}: {reason}"
    except OverflowError:
        return "port", f"{port} is not a TCP port"
    if not bind:
        return None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                key = "port" if exc.errno in (errno.EADDRINUSE, errno.EACCES) else "host"
                return key, f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def writable_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a directory this user writes in, or None."""
    if "\x00" in str(path):
        return "a path cannot hold a NUL character"
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable by this user"
        return None
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {path}: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {path}: {ancestor} is not writable by this user"
    return None


def check_database(settings: Settings, source: str | Path, *, connect: bool = True) -> None:
    """ConfigError naming ``source`` and ``database.url`` when the database cannot be used
    as configured (:func:`gateway.db.open_problem`: an in-memory or unopenable SQLite
    database, a refused PostgreSQL login); with ``connect`` a PostgreSQL server that does not
    answer is a GatewayError (exit 1, a failure of the moment) naming them too."""
    from gateway.db import DatabaseUnreachable, open_problem  # here: the agent needs no database

    try:
        problem = open_problem(settings.database.url, connect=connect)
    except DatabaseUnreachable as exc:
        raise GatewayError(f"{source}: database.url: {exc}") from exc
    if problem is not None:
        raise ConfigError(f"{source}: database.url: {problem}")


def check_daemon(settings: Settings, source: str | Path, *, bind: bool = False) -> None:
    """What ``dr-gateway run`` needs beyond valid keys: the database opens and, with the web
    server enabled, ``web.host`` resolves (and with ``bind`` the port is free now).
    ConfigError naming the file and the key."""
    check_database(settings, source)
    web = settings.web
    if web.enabled and (problem := listen_problem(web.host, web.port, bind=bind)) is not None:
        raise ConfigError(f"{source}: web.{problem[0]}: {problem[1]}")


def load_checked_settings(path: str | Path, *, connect: bool = True) -> Settings:
    """The settings in ``path`` (:func:`load_settings`), their database checked
    (:func:`check_database`)."""
    settings = load_settings(path)
    check_database(settings, path, connect=connect)
    return settings

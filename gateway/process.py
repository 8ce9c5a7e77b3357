"""Process-wide tuning of the long-running daemon (``dr-gateway run``).

glibc's malloc gives a thread that meets contention an arena of its own, up to eight per
core, and memory freed in one arena is not reused by the others. The daemon's worker threads
(database, planning, one XML reader per VTN) fragment that many arenas: under a five-minute
hostile stream (``python -m benchmarks.fuzz_ven``) its resident memory grew by about 50 MB
with glibc's default and by about 10 MB with two arenas. :func:`limit_malloc_arenas` sets the
limit the environment variable ``MALLOC_ARENA_MAX`` would; an operator's own
``MALLOC_ARENA_MAX`` wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MALLOC_ARENAS = 2
"""The daemon's malloc arenas (glibc)."""
_M_ARENA_MAX = -8
"""``mallopt`` parameter of glibc's ``<malloc.h>``."""


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Limit glibc's malloc to ``arenas`` arenas for the threads created from now on; True
    when applied, False where it does not apply (``MALLOC_ARENA_MAX`` set, not Linux, a C
    library without ``mallopt``)."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))

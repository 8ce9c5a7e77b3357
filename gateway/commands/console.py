"""What every command shares at the console: one-line error messages and the logging set-up."""

from __future__ import annotations

import logging
import unicodedata


def one_line(message: str) -> str:
    """``message`` as one line of printable text: line breaks become `` / `` and other
    control characters ``\\xNN`` escapes (a hostile file cannot move the terminal)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    joined = " / ".join(lines)
    return "".join(
        f"\\x{ord(c):02x}" if unicodedata.category(c) in ("Cc", "Cf") else c for c in joined
    )


NOISY_LOGGERS = ("openleadr", "apscheduler", "aiohttp.access", "alembic")


def configure_logging(level: str) -> None:
    """Our loggers at ``level``; chatty libraries at WARNING or above.

    openleadr sets its own logger to INFO when its client module is imported, so ``main``
    calls this after it imports the command's module (each imports what its command uses at
    its top).
    """
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threshold = max(logging.WARNING, logging.getLevelNamesMapping()[level])
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(threshold)
    # "skipped: maximum number of running instances reached" is the intended coalescing of a
    # round that outlasts its interval, not a fault.
    logging.getLogger("apscheduler.scheduler").setLevel(max(logging.ERROR, threshold))

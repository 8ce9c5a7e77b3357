"""``dr-gateway run``: the daemon until SIGINT or SIGTERM, or ``--check`` of its configuration.

A bad configuration stops it at once with exit code 2 and one line naming the file and the
key (:func:`gateway.startup.check_daemon`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from gateway.clock import ScaledClock, SystemClock
from gateway.daemon.gateway import Gateway
from gateway.db import make_engine, make_session_factory, upgrade
from gateway.errors import ConfigError
from gateway.process import limit_malloc_arenas
from gateway.settings import Settings
from gateway.startup import check_daemon, load_checked_settings

log = logging.getLogger("gateway")


def run(args: argparse.Namespace) -> int:
    """Run ``dr-gateway run`` as parsed into ``args``; the exit code."""
    settings = load_checked_settings(args.config)
    check_daemon(settings, args.config, bind=not args.check)
    if args.check:
        print(f"{args.config}: the configuration is valid")
        return 0
    limit_malloc_arenas()  # before the worker threads start (gateway.process)
    return asyncio.run(_run_daemon(settings, args.config))


async def _run_daemon(settings: Settings, source: str) -> int:
    if settings.database.auto_upgrade:
        upgrade(settings.database.url)
    clock = (
        SystemClock()
        if settings.clock.speed == 1 and settings.clock.start_at is None
        else ScaledClock(settings.clock.start_at or SystemClock().now(), settings.clock.speed)
    )
    engine = make_engine(settings.database.url)
    gateway = Gateway(settings, clock, make_session_factory(engine))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await gateway.start()
        except ConfigError as exc:
            raise ConfigError(_in_file(source, str(exc))) from exc
        log.info("running with %d sites and %d VTNs", len(settings.site), len(settings.vtn))
        await stop.wait()
        log.info("stopping")
    finally:
        await gateway.stop()
        engine.dispose()
    return 0


def _in_file(source: str, message: str) -> str:
    """``message`` led by the file it is about, unless it names it already."""
    return message if message.startswith(f"{source}:") else f"{source}: {message}"

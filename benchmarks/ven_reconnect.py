"""Benchmark: how soon the VEN polls a VTN again after the VTN comes back from an outage.

Run: .venv/bin/python -m benchmarks.ven_reconnect [--runs N] [--down-s S] [--poll-s S]
     [--initial-s S] [--max-s S] [--failures N] [--timeout-s S]
A simulated VTN (openleadr) on loopback asks for a ``--poll-s`` poll; a VEN connection with
the given reconnection settings registers with it. Each run stops the VTN for ``--down-s``
wall seconds (at least until the VEN noticed) and starts it again on the same port. Prints,
over the runs, how long the VEN took to notice the outage, and the time from the VTN
listening again to the first poll it answers (the VEN's back-off wait still to run, then a
registration and its first poll).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from gateway.clock import ManualClock
from gateway.db import make_engine, make_session_factory, upgrade
from gateway.events import DrEvent, OptDecision
from gateway.settings_sites import SiteSettings
from gateway.settings_vtn import VtnSettings
from gateway.ven.client import VenConnection
from simulators.vtn import SimulatedVtn

VTN_ID = "bench"


def _site() -> SiteSettings:
    return SiteSettings(
        id="site-a",
        gpus_total=8,
        it_power_max_kw=60.0,
        wan_bandwidth_gbps=10.0,
        controller_url="http://127.0.0.1:9/",
        controller_token="token-for-benchmark",
        vtn=VTN_ID,
    )


async def _opt_in(event: DrEvent) -> OptDecision:
    return OptDecision("optIn", "benchmark")


async def _until(condition: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s} s")
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace, database_url: str) -> None:
    polls_at: list[float] = []

    @web.middleware
    async def record_polls(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if request.path.endswith("/OadrPoll"):
            polls_at.append(time.monotonic())
        return response

    clock = ManualClock(datetime.now(UTC))
    vtn = SimulatedVtn(clock, poll_interval_s=args.poll_s)
    vtn.server.app.middlewares.append(record_polls)
    await vtn.start()
    port = int(vtn.url.split(":")[2].split("/")[0])
    upgrade(database_url)
    engine = make_engine(database_url)
    settings = VtnSettings(
        id=VTN_ID,
        url=vtn.url,
        ven_name="dr-gateway-benchmark",
        reconnect_initial_s=args.initial_s,
        reconnect_max_s=args.max_s,
        outage_after_failures=args.failures,
        request_timeout_s=args.timeout_s,
    )
    connection = VenConnection(
        settings,
        [_site()],
        clock,
        make_session_factory(engine),
        _opt_in,
        lambda _site_id: 1.0,
        report_interval_s=1,
        rng=random.Random(args.seed),
    )
    noticed_s: list[float] = []
    back_s: list[float] = []
    limit_s = args.failures * (args.poll_s + args.timeout_s) + args.max_s + args.down_s + 30
    try:
        await connection.start()
        for _ in range(args.runs):
            await vtn.stop()
            down_at = time.monotonic()
            await _until(lambda: not connection.available, limit_s)
            noticed_s.append(time.monotonic() - down_at)
            await asyncio.sleep(max(0.0, args.down_s - (time.monotonic() - down_at)))
            await vtn.start(port)
            listening_at = time.monotonic()
            await _until(
                lambda since=listening_at: (
                    connection.available and polls_at and polls_at[-1] > since
                ),
                limit_s,
            )
            back_s.append(next(t for t in polls_at if t > listening_at) - listening_at)
            await asyncio.sleep(args.poll_s)  # a healthy poll: the back-off starts afresh
    finally:
        await connection.stop()
        await vtn.stop()
        engine.dispose()
    print(
        f"settings: poll {args.poll_s:g} s, outage after {args.failures} failed polls, "
        f"request timeout {args.timeout_s:g} s, back-off {args.initial_s:g} s to "
        f"{args.max_s:g} s (+-50 % jitter), VTN down {args.down_s:g} s, {args.runs} runs"
    )
    for name, values in (("outage noticed after", noticed_s), ("VTN back to polled", back_s)):
        print(
            f"{name:>22}: median {statistics.median(values):.2f} s, "
            f"min {min(values):.2f} s, max {max(values):.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--down-s", type=float, default=5.0)
    parser.add_argument("--poll-s", type=int, default=1)
    parser.add_argument("--initial-s", type=float, default=1.0)
    parser.add_argument("--max-s", type=float, default=10.0)
    parser.add_argument("--failures", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("openleadr").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(args, f"sqlite:///{Path(directory) / 'bench.db'}"))


if __name__ == "__main__":
    main()

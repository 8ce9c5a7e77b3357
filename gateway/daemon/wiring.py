"""What the daemon's start-up builds from its settings.

The worker threads that carry the heavy parts of the rounds (:func:`use_worker_threads`),
one site-controller client per site (:func:`site_clients`), the dispatcher's step limits
(:func:`dispatch_params`) and the scheduler that fires the regular rounds
(:func:`round_scheduler`). Built once by :meth:`gateway.daemon.gateway.Gateway.start`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.clock import Clock
from gateway.migration.deadlines import StepTimeouts
from gateway.migration.dispatch import DispatchParams
from gateway.settings import Settings
from gateway.sites.client import RetryPolicy, SiteControllerClient
from gateway.sites.tls import optional_client_context

WORKER_THREADS_PER_VTN = 2
"""Worker threads per VTN: its distribution being answered, and an opt change or resend."""
WORKER_THREADS_BASE = 8
"""Worker threads for the rounds (poll, plan, offers) and the dashboard."""

Round = Callable[[], Coroutine[None, None, None]]
"""A round as the scheduler runs it (already guarded: it logs its own failure)."""


def use_worker_threads(vtn_count: int) -> None:
    """Give the running loop the worker threads of ``asyncio.to_thread``.

    Each VTN's distributions, the rounds and the dashboard's database checks wait on the
    database in them, and SQLite lets one write at a time: asyncio's default pool (CPU count
    + 4) fills with writers waiting for their turn, and a quick /healthz check or a site poll
    queues behind them."""
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(
            max_workers=WORKER_THREADS_PER_VTN * vtn_count + WORKER_THREADS_BASE,
            thread_name_prefix="gateway-worker",
        )
    )


def site_clients(
    settings: Settings, http: aiohttp.ClientSession
) -> dict[str, SiteControllerClient]:
    """One client per configured site, with ``[site_controller]``'s timeout and retries."""
    calls = settings.site_controller
    retry = RetryPolicy(calls.retry_attempts, calls.retry_initial_s, calls.retry_max_s)
    return {
        s.id: SiteControllerClient(
            s.id,
            str(s.controller_url).rstrip("/"),
            s.controller_token,
            http,
            calls.request_timeout_s,
            retry=retry,
            ssl_context=optional_client_context(
                s.controller_ca_path, s.controller_cert_path, s.controller_key_path
            ),
        )
        for s in settings.site
    }


def dispatch_params(settings: Settings) -> DispatchParams:
    """The dispatcher's step limits from ``[feasibility]``."""
    f = settings.feasibility
    timeouts = StepTimeouts(
        margin=f.timeout_margin,
        floor_s=f.timeout_floor_s,
        efficiency=f.efficiency,
        checkpoint_write_gb_per_s=f.checkpoint_write_gb_per_s,
        restore_gb_per_s=f.restore_gb_per_s,
    )
    return DispatchParams(timeouts=timeouts)


def round_scheduler(
    settings: Settings, clock: Clock, poll: Round, plan: Round, availability: Round
) -> AsyncIOScheduler:
    """The scheduler of the regular rounds, started: ``poll`` every
    ``scheduler.poll_interval_s``, ``plan`` every ``scheduler.plan_interval_s`` and
    ``availability`` (maintenance windows) at once, then with every poll; each round at most
    once at a time, missed runs coalesced."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    poll_s = clock.wall_s(settings.scheduler.poll_interval_s)
    plan_s = clock.wall_s(settings.scheduler.plan_interval_s)
    common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    scheduler.add_job(poll, "interval", seconds=poll_s, **common)
    scheduler.add_job(plan, "interval", seconds=plan_s, **common)
    scheduler.add_job(
        availability,
        "interval",
        seconds=poll_s,
        next_run_time=datetime.now(UTC),
        **common,
    )
    scheduler.start()
    return scheduler

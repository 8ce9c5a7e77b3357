"""``dr-gateway demo --slurm``: the PyTorch job follows the sun between two real Slurm clusters.

Everything is real but the sun and the calendar: two Slurm 22.05 clusters of one node each
(:mod:`simulators.slurm_cluster`, under ``work_dir``), a site agent with ``[slurm]`` in front
of each (:class:`~simulators.solar_agent.SolarAgent`, on OS-assigned loopback ports), the
PyTorch example job (``gateway.training.example_torch``) as a Slurm batch job, and the daemon
(:class:`gateway.daemon.gateway.Gateway`, the agents as its ``[[site]]`` controllers) planning
with its configured policy on what the agents' statuses say. Each agent reports the renewable
power of a column of ``data/traces`` (one place's hourly power of a typical year), so the
daemon sees the sun rise in the east and move west, and moves the job after it.

Time is a :class:`~simulators.campaign_clock.SteppedClock` shared by the daemon and the
agents (:mod:`simulators.demo_slurm_day`): it runs the daemon's poll and plan rounds in order,
at most ``speed`` times faster than the wall, and while a job moves it follows the wall, so a
migration takes in the simulated day the seconds it takes for real. The job holds before its
last steps (``hold_at_step``) until the day is over; then it trains to the end where the sun
left it, and the demo compares its ``model.bin`` with that of an uninterrupted run computed
alongside (:mod:`simulators.demo_slurm_report` gives the verdict).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from gateway.agent.config import AgentSettings, parse_agent_settings
from gateway.daemon.gateway import Gateway
from gateway.db import make_engine, make_session_factory, upgrade, url_problem
from gateway.errors import ConfigError, InputError
from gateway.migration.invariants import HttpProbe
from gateway.settings import Settings, load_settings
from gateway.sites.client import SiteControllerClient
from gateway.startup import check_database
from simulators.campaign_clock import SteppedClock
from simulators.demo_slurm_day import MODEL_FILE, DayStepper, DemoSite
from simulators.demo_slurm_report import Outcome, verdict
from simulators.demo_slurm_scenario import (
    DemoSlurmScenario,
    load_demo_slurm_scenario,
    solar_trace,
)
from simulators.hang_guard import HANG_GUARD_S
from simulators.slurm_cluster import SlurmCluster
from simulators.slurm_needs import slurm_problem
from simulators.slurm_watch import SlurmWatch
from simulators.solar_agent import start_solar_agent
from simulators.traces import RenewableTrace

EXIT_NO_SLURM = 2
JOB_MODULE = "gateway.training.example_torch"
MARKER = ".demo-slurm"
"""The file that marks ``work_dir`` as the demo's, so that the demo empties no other folder."""
GATE = "day-over"
"""The file the job waits for at ``hold_at_step``, created when the simulated day is over."""
QUIET_LOGGERS = ("gateway.agent", "gateway.sites", "gateway.migration.dispatch")
"""Loggers whose INFO lines (every Slurm submission, every call) would drown the demo's."""


def run_slurm_demo(
    config_path: Path,
    scenario_path: Path,
    *,
    hours: float | None = None,
    speed: float | None = None,
    keep_db: bool = False,
) -> int:
    """Run the demo; its exit code (2 without Slurm, 1 when a promise was not kept)."""
    problem = slurm_problem()
    if problem is not None:
        print(f"demo-slurm: {problem}", file=sys.stderr)
        return EXIT_NO_SLURM
    if keep_db:
        raise InputError("--keep-db: not with --slurm, whose clusters and agents start afresh")
    settings = load_settings(config_path)
    scenario = load_demo_slurm_scenario(scenario_path)
    _check_matches(settings, scenario, config_path, scenario_path)
    if (db_problem := url_problem(settings.database.url)) is not None:
        raise ConfigError(f"{config_path}: database.url: {db_problem}")
    try:
        _prepare_database(settings.database.url)
    except OSError as exc:
        raise ConfigError(f"{config_path}: database.url: {exc}") from exc
    check_database(settings, config_path)
    upgrade(settings.database.url)
    start_at = scenario.start_at(datetime.now(UTC))
    traces = {
        site.id: solar_trace(site, i, scenario_path, start_at, scenario.trace_start_at())
        for i, site in enumerate(scenario.site)
    }
    work_dir = _fresh_work_dir(Path(scenario.work_dir), scenario_path)
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    hours, speed = hours or scenario.hours, speed or scenario.speed
    names = ", ".join(f"{s.id} ({s.trace_column}, {s.peak_kw:g} kW peak)" for s in scenario.site)
    print(
        f"demo-slurm: {hours:g} simulated hours from {start_at:%Y-%m-%d %H:%M} UTC at up to "
        f"{speed:g}x; sun of {scenario.day} from data/traces: {names}"
    )
    world = _World(settings, scenario, traces, work_dir)
    clock = SteppedClock(start_at, nominal_speed=speed)
    return asyncio.run(_run(world, clock, start_at + timedelta(hours=hours), speed))


def _check_matches(
    settings: Settings, scenario: DemoSlurmScenario, config_path: Path, scenario_path: Path
) -> None:
    configured = [s.id for s in settings.site]
    for i, site in enumerate(scenario.site):
        if site.id not in configured:
            raise ConfigError(
                f"{scenario_path}: site[{i}].id: {site.id!r} is not a [[site]] of {config_path}"
            )
    for i, site_id in enumerate(configured):
        if site_id not in {s.id for s in scenario.site}:
            raise ConfigError(
                f"{config_path}: site[{i}].id: {site_id!r} has no [[site]] in {scenario_path}"
            )
    job = scenario.job
    if job.gpus > settings.site_by_id(job.site).gpus_total:
        raise ConfigError(f"{scenario_path}: job.gpus: more than site {job.site!r} has")


def _prepare_database(url: str) -> None:
    """A fresh SQLite file (the clusters and agents start afresh, so must the daemon)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return
    path = Path(parsed.database)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _fresh_work_dir(path: Path, scenario_path: Path) -> Path:
    """``path`` made absolute and empty: a previous run's folder (it has :data:`MARKER`) is
    removed; any other folder that is not empty is refused."""
    path = path.absolute()
    if path.exists():
        if (path / MARKER).exists():
            shutil.rmtree(path)
        elif not path.is_dir() or any(path.iterdir()):
            raise ConfigError(
                f"{scenario_path}: work_dir: {path} is not empty and not a previous demo's "
                f"folder (no {MARKER} in it)"
            )
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("dr-gateway demo --slurm: emptied at every start\n")
    return path


def job_command(scenario: DemoSlurmScenario, gate: Path) -> list[str]:
    """The job's ``[[job]]`` command: it confirms its resumes and holds at ``hold_at_step``
    until ``gate`` exists."""
    job = scenario.job
    return [
        "{python}",
        "-m",
        JOB_MODULE,
        "--steps",
        str(job.steps),
        "--out",
        "{output_dir}",
        "--width",
        str(job.width),
        "--step-sleep-s",
        str(job.step_sleep_s),
        "--resumed-file",
        "{resumed_path}",
        "--step-gate",
        str(gate),
        "--hold-at-step",
        str(job.hold_at_step),
    ]


def reference_model(scenario: DemoSlurmScenario, out: Path) -> bytes:
    """The final ``model.bin`` of an uninterrupted run of the job, here, outside Slurm."""
    job = scenario.job
    args = ["--steps", str(job.steps), "--out", str(out), "--width", str(job.width)]
    subprocess.run(
        [sys.executable, "-m", JOB_MODULE, *args],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD_S,
    )
    return (out / MODEL_FILE).read_bytes()


def agent_settings(
    settings: Settings,
    scenario: DemoSlurmScenario,
    site_id: str,
    cluster: SlurmCluster,
    work_dir: Path,
) -> AgentSettings:
    """The agent of ``site_id`` in front of ``cluster``; the job's own site starts the job."""
    site_cfg = settings.site_by_id(site_id)
    job = scenario.job
    jobs: list[dict[str, Any]] = []
    if job.site == site_id:
        command = job_command(scenario, work_dir / GATE)
        jobs.append(
            {
                "id": job.id,
                "gpus": job.gpus,
                "power_kw": job.power_kw,
                "checkpoint_gb": job.checkpoint_gb,
                "work_gpu_h": job.work_gpu_h,
                "command": command,
            }
        )
    data = {
        "site_id": site_id,
        "token": site_cfg.controller_token,
        "it_power_max_kw": site_cfg.it_power_max_kw,
        "wan_bandwidth_gbps": site_cfg.wan_bandwidth_gbps,
        "data_dir": str(work_dir / f"agent-{site_id}"),
        "peer_tokens": {s.id: s.controller_token for s in settings.site if s.id != site_id},
        "checkpoint_timeout_s": HANG_GUARD_S,
        "stop_timeout_s": 10.0,
        "resume_timeout_s": HANG_GUARD_S,
        "renewable": {"forecast_horizon_s": settings.planner.forecast_horizon_s},
        "slurm": {"conf_path": str(cluster.conf_path), "poll_s": scenario.slurm_poll_s},
        "job": jobs,
    }
    return parse_agent_settings(data, f"the demo's agent of {site_id}")


@dataclass(frozen=True)
class _World:
    """What the demo runs: the gateway's settings, the scenario, each site's sun and the
    folder everything lives in."""

    settings: Settings
    scenario: DemoSlurmScenario
    traces: Mapping[str, RenewableTrace]
    work_dir: Path


async def _start_clusters(world: _World, stack: contextlib.ExitStack) -> dict[str, SlurmCluster]:
    """One cluster per site, started side by side; each stopped when ``stack`` closes."""

    def start(index: int) -> SlurmCluster:
        site = world.scenario.site[index]
        cluster = SlurmCluster.start(
            world.work_dir / f"slurm-{site.id}",
            site.id,
            gpus=world.settings.site_by_id(site.id).gpus_total,
            cpus=site.cpus,
            memory_mb=site.memory_mb,
        )
        stack.callback(cluster.stop)
        return cluster

    started = await asyncio.gather(
        *(asyncio.to_thread(start, i) for i in range(len(world.scenario.site))),
        return_exceptions=True,
    )
    clusters: dict[str, SlurmCluster] = {}
    for site, result in zip(world.scenario.site, started, strict=True):
        if isinstance(result, BaseException):
            raise result
        clusters[site.id] = result
    return clusters


@contextlib.asynccontextmanager
async def _agents(
    world: _World, clusters: Mapping[str, SlurmCluster], clock: SteppedClock
) -> AsyncIterator[dict[str, DemoSite]]:
    """A :class:`SolarAgent` in front of each cluster, stopped on the way out."""
    sites: dict[str, DemoSite] = {}
    try:
        for site_id, cluster in clusters.items():
            agent_cfg = agent_settings(
                world.settings, world.scenario, site_id, cluster, world.work_dir
            )
            runner, url, agent = await start_solar_agent(agent_cfg, clock, world.traces[site_id])
            sites[site_id] = DemoSite(site_id, cluster, runner, url, agent)
        yield sites
    finally:
        for demo_site in sites.values():
            await demo_site.runner.cleanup()


async def _run(world: _World, clock: SteppedClock, end_at: datetime, speed: float) -> int:
    """Clusters, agents and the daemon up; the day; the verdict. Everything stops on the way
    out, whatever happens."""
    wall_start = time.monotonic()
    engine = make_engine(world.settings.database.url)
    sessions = make_session_factory(engine)
    reference = asyncio.create_task(
        asyncio.to_thread(reference_model, world.scenario, world.work_dir / "uninterrupted")
    )
    try:
        with contextlib.ExitStack() as clusters_stack:
            clusters = await _start_clusters(world, clusters_stack)
            where = ", ".join(f"{name} ({_shown(c.base_dir)})" for name, c in clusters.items())
            print(f"  Slurm clusters up: {where}")
            async with (
                _agents(world, clusters, clock) as sites,
                aiohttp.ClientSession() as http,
            ):
                outcome = await _day(world, clock, sites, sessions, http, end_at, speed, reference)
    finally:
        engine.dispose()
    return verdict(outcome, time.monotonic() - wall_start)


async def _day(
    world: _World,
    clock: SteppedClock,
    sites: Mapping[str, DemoSite],
    sessions: sessionmaker[Session],
    http: aiohttp.ClientSession,
    end_at: datetime,
    speed: float,
    reference: asyncio.Task[bytes],
) -> Outcome:
    """The daemon in front of the agents: the day, the job's last steps, what was measured."""
    settings = world.settings.model_copy(
        update={
            "site": [
                s.model_copy(update={"controller_url": sites[s.id].url})
                for s in world.settings.site
            ]
        }
    )
    probes = [
        HttpProbe(SiteControllerClient(s.id, sites[s.id].url, s.controller_token, http))
        for s in settings.site
    ]
    gateway = Gateway(settings, clock, sessions)
    stepper = DayStepper(settings, world.scenario, clock, gateway, sites, probes, sessions, speed)
    await stepper.wait_started()
    clusters = {site_id: site.cluster for site_id, site in sites.items()}
    watch = SlurmWatch(clusters, f"dr-{world.scenario.job.id}")
    try:
        await gateway.start(schedule=False, connect_vens=False)
        async with watch:
            await stepper.run(end_at)
            (world.work_dir / GATE).touch()
            await stepper.finish()
            return await stepper.outcome(watch, await reference)
    finally:
        await gateway.stop()


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (as under
    ``var/``), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

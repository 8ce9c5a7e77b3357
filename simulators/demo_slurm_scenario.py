"""The world of ``dr-gateway demo --slurm``: its Slurm clusters, their sun and the PyTorch job.

Same rules as the gateway's settings: unknown keys are rejected and a bad value raises
ConfigError naming the file and the key. ``config/demo-slurm-scenario.toml`` documents every
key; :func:`solar_trace` turns a site's ``trace_file`` column into the renewable power its
agent reports.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.errors import ConfigError
from gateway.evaluation.weather import TRACE_YEAR
from gateway.settings import parse_model, read_toml
from gateway.settings_base import QUANTITY_MAX, KeyProblem
from simulators.scenario import month_day
from simulators.traces import RenewableTrace

PositiveFloat = Annotated[float, Field(gt=0, le=QUANTITY_MAX)]
ClusterName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
"""A site id that is also a Slurm cluster name (lower case, as ``SlurmCluster`` wants)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DemoSlurmSite(_Section):
    """A site: a Slurm cluster of one node, the agent in front of it, and its sun."""

    id: ClusterName
    """A ``[[site]]`` of the gateway's configuration, and the cluster's name."""
    trace_file: str
    """A CSV of hourly renewable power, ``timestamp`` first (``data/traces/*.csv.gz``);
    relative to the working directory."""
    trace_column: str
    """The column of ``trace_file`` this site's sun follows (a place)."""
    peak_kw: PositiveFloat
    """The column is scaled so that its highest value of the year is this [kW]."""
    gpus: Annotated[int, Field(ge=1, le=64)] = 2
    cpus: Annotated[int, Field(ge=1, le=256)] = 4
    memory_mb: Annotated[int, Field(ge=256, le=1 << 20)] = 4096
    it_power_max_kw: PositiveFloat = 4.0
    wan_bandwidth_gbps: PositiveFloat = 10.0


class DemoSlurmJob(_Section):
    """The PyTorch example job (``gateway.training.example_torch``), started at ``site``."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "torch-1"
    site: str
    gpus: Annotated[int, Field(ge=1, le=64)] = 1
    power_kw: PositiveFloat = 1.0
    checkpoint_gb: PositiveFloat = 0.001
    work_gpu_h: PositiveFloat = 48.0
    """What the job declares to the gateway; its real length is ``steps`` [GPU h]."""
    steps: Annotated[int, Field(ge=2, le=10_000_000)]
    width: Annotated[int, Field(ge=1, le=4096)] = 16
    step_sleep_s: Annotated[float, Field(ge=0, le=10)] = 0.0
    """Pause after each step, so that the job trains through the simulated day [wall s]."""
    hold_at_step: Annotated[int, Field(ge=1)]
    """The job waits at this step until the simulated day is over, so that a slow machine
    cannot let it finish before the sun has moved; then it trains to the end."""

    @model_validator(mode="after")
    def _hold_inside(self) -> DemoSlurmJob:
        if not self.hold_at_step < self.steps:
            raise KeyProblem(
                ("hold_at_step",), f"must be below steps ({self.steps}), got {self.hold_at_step}"
            )
        return self


class DemoSlurmScenario(_Section):
    hours: Annotated[float, Field(gt=0, le=168)] = 24.0
    speed: Annotated[float, Field(gt=0, le=1e6)] = 1500.0
    """Simulated seconds per wall second at most, while no job moves."""
    day: str = "06-21"
    """The day of the traces (MM-DD) the demo starts on, in this year's calendar too."""
    start_hour_utc: Annotated[float, Field(ge=0, lt=24)] = 14.0
    work_dir: str = "var/demo-slurm"
    """Where the clusters, the agents' data and the job's gate live; emptied at start."""
    slurm_poll_s: Annotated[float, Field(gt=0, le=10)] = 0.2
    """How often each agent reads its cluster (``[slurm] poll_s``) [wall s]."""
    site: Annotated[list[DemoSlurmSite], Field(min_length=2)]
    job: DemoSlurmJob

    @field_validator("day")
    @classmethod
    def _month_day(cls, value: str) -> str:
        return month_day(value)

    @model_validator(mode="after")
    def _references(self) -> DemoSlurmScenario:
        ids = [s.id for s in self.site]
        for i, site_id in enumerate(ids):
            if ids.index(site_id) != i:
                raise KeyProblem(("site", i, "id"), f"duplicate site id {site_id!r}")
        if self.job.site not in ids:
            raise KeyProblem(
                ("job", "site"), f"unknown site {self.job.site!r}; expected one of {ids}"
            )
        return self

    def start_at(self, now: datetime) -> datetime:
        """The demo's first instant: ``day`` of ``now``'s year at ``start_hour_utc``."""
        month, day = (int(p) for p in self.day.split("-"))
        midnight = datetime(now.year, month, day, tzinfo=UTC)
        return midnight + timedelta(hours=self.start_hour_utc)

    def trace_start_at(self) -> datetime:
        """The instant of the traces that :meth:`start_at` maps to."""
        month, day = (int(p) for p in self.day.split("-"))
        return datetime(TRACE_YEAR, month, day, tzinfo=UTC) + timedelta(hours=self.start_hour_utc)


def load_demo_slurm_scenario(path: Path) -> DemoSlurmScenario:
    return parse_model(DemoSlurmScenario, read_toml(path, "scenario"), str(path))


def solar_trace(
    site: DemoSlurmSite, index: int, source: Path, start_at: datetime, trace_start_at: datetime
) -> RenewableTrace:
    """The renewable power of ``site`` (``site[index]`` of the scenario file ``source``),
    replayed from ``trace_start_at`` at simulated ``start_at``. ConfigError naming the key
    when the file or its column cannot be read."""
    key = f"{source}: site[{index}]"
    try:
        table = pd.read_csv(site.trace_file, index_col=0, parse_dates=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key}.trace_file: {site.trace_file}: {exc}") from exc
    if site.trace_column not in table.columns:
        raise ConfigError(
            f"{key}.trace_column: {site.trace_column!r} is not a column of {site.trace_file}; "
            f"it has {list(table.columns)}"
        )
    series = table[site.trace_column].astype(float)
    if not isinstance(series.index, pd.DatetimeIndex) or series.index.tz is None:
        raise ConfigError(f"{key}.trace_file: {site.trace_file}: timestamps need a zone (Z)")
    peak = float(series.max())
    if not peak > 0:
        raise ConfigError(f"{key}.trace_column: {site.trace_column!r} is never above 0")
    try:
        return RenewableTrace(series * (site.peak_kw / peak), start_at, trace_start_at)
    except ValueError as exc:
        raise ConfigError(f"{key}.trace_file: {site.trace_file}: {exc}") from exc

"""The demo's scenario file: sites' weather, jobs and the utility's events, validated.

Same rules as the gateway's settings: unknown keys are rejected and a bad value raises
ConfigError naming the file and the key.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.evaluation.weather import TRACE_YEAR
from gateway.settings import parse_model, read_toml
from gateway.settings_base import COUNT_MAX, QUANTITY_MAX, KeyProblem

PositiveFloat = Annotated[float, Field(gt=0, le=QUANTITY_MAX)]
NonNegativeFloat = Annotated[float, Field(ge=0, le=QUANTITY_MAX)]
Hours = Annotated[float, Field(ge=0, le=8760)]
"""A time of the demo, within a year of simulated hours [h]."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ScenarioSite(_Section):
    id: str
    weather: str
    """A bundled weather file key or a path to a TMY2/TMY3 file."""
    pv_capacity_kw: PositiveFloat
    idle_kw_per_gpu: NonNegativeFloat = 0.11


class ScenarioJob(_Section):
    id: Annotated[str, Field(min_length=1)]
    site: str
    gpus: Annotated[int, Field(gt=0, le=COUNT_MAX)]
    power_kw: PositiveFloat
    checkpoint_gb: PositiveFloat
    work_gpu_h: PositiveFloat
    migratable: bool = True
    flex_tier: Annotated[int, Field(ge=0, le=COUNT_MAX)] = 1


class ScenarioEvent(_Section):
    kind: Literal["curtailment", "surplus"]
    issue_h: Hours
    start_h: Hours
    duration_h: Annotated[float, Field(gt=0, le=8760)]
    signal_name: str
    signal_type: str
    values: Annotated[list[float], Field(min_length=1)]
    resources: list[str] = []
    """Resource ids (site ids) the event targets; empty for the whole VEN."""

    @model_validator(mode="after")
    def _issued_before_start(self) -> ScenarioEvent:
        if self.issue_h > self.start_h:
            raise ValueError("issue_h must not be after start_h")
        return self


class Scenario(_Section):
    hours: Annotated[float, Field(gt=0, le=8760)] = 24.0
    speed: Annotated[float, Field(gt=0, le=1e6)] = 1200.0
    trace_start: str = "06-21"
    vtn_poll_interval_s: Annotated[int, Field(ge=1, le=3600)] = 1
    site: list[ScenarioSite]
    job: list[ScenarioJob] = []
    event: list[ScenarioEvent] = []

    @field_validator("trace_start")
    @classmethod
    def _month_day(cls, value: str) -> str:
        return month_day(value)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        site_ids = [s.id for s in self.site]
        for i, job in enumerate(self.job):
            if job.site not in site_ids:
                raise KeyProblem(
                    ("job", i, "site"), f"unknown site {job.site!r}; expected one of {site_ids}"
                )
        for i, event in enumerate(self.event):
            for resource in event.resources:
                if resource not in site_ids:
                    raise KeyProblem(
                        ("event", i, "resources"),
                        f"unknown site {resource!r}; expected one of {site_ids}",
                    )
        return self


def load_scenario(path: Path) -> Scenario:
    return parse_model(Scenario, read_toml(path, "scenario"), str(path))


def month_day(value: str) -> str:
    """``value`` when it is a day of the traces' year as ``MM-DD``; ValueError saying what is
    expected otherwise."""
    parts = value.split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError("expected MM-DD, e.g. 06-21")
    try:
        datetime(TRACE_YEAR, int(parts[0]), int(parts[1]))
    except ValueError:
        raise ValueError(f"expected MM-DD of a day of {TRACE_YEAR}, e.g. 06-21") from None
    return value

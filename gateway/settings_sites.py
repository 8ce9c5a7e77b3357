"""The sections about sites: ``[[site]]`` (a micro-datacenter and its controller),
``[site_controller]`` (how the gateway calls the controllers) and ``[[maintenance]]`` (a
window in which a site takes part in no event and takes no job)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, Field, field_validator, model_validator

from gateway.maintenance_window import instant_problem, span_problem
from gateway.settings_base import (
    COUNT_MAX,
    Id,
    KeyProblem,
    PositiveFloat,
    Section,
    instant_range_problem,
    url_credentials_problem,
)
from gateway.sites.tls import TlsFileError, check_tls_files, readable_file_problem


class SiteControllerSettings(Section):
    """How the gateway calls the site controllers (``[site_controller]``)."""

    request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Longest wait for one answer of a site controller [wall s]."""
    retry_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    """Tries of one call that fails transiently (no answer, timeout, 5xx), the first
    included; then the migration waits for the next round or aborts past its limit."""
    retry_initial_s: PositiveFloat = 0.25
    """First wait between tries [wall s]; doubles with each try up to the maximum, each wait
    varied by +-50 % (never above the maximum)."""
    retry_max_s: PositiveFloat = 2.0
    """Longest wait between tries [wall s]; at least ``retry_initial_s``."""

    @model_validator(mode="after")
    def _backoff_order(self) -> SiteControllerSettings:
        if self.retry_max_s < self.retry_initial_s:
            raise KeyProblem(
                ("retry_max_s",),
                f"{self.retry_max_s} is below retry_initial_s = {self.retry_initial_s}; "
                "the longest wait must be at least the first",
            )
        return self


class SiteSettings(Section):
    id: Id
    gpus_total: Annotated[int, Field(gt=0, le=COUNT_MAX)]
    it_power_max_kw: PositiveFloat
    pue: Annotated[float, Field(ge=1, le=3)] = 1.2
    wan_bandwidth_gbps: PositiveFloat
    controller_url: AnyHttpUrl
    controller_token: Annotated[str, Field(min_length=8)]
    vtn: Id | None = None
    """Which [[vtn]] serves this site; empty for a site in no programme."""
    resource_id: Annotated[str, Field(min_length=1)] | None = None
    """The OpenADR resource id the utility uses for this site (default: the site id)."""
    manual_override: bool = False
    """The operator has taken this site out of automatic control: its TELEMETRY_STATUS says
    so (``oadrManualOverride``) and its flexibility offers are zero (``docs/ei-report.md``)."""
    controller_ca_path: Path | None = None
    """PEM CA certificate(s) the controller's HTTPS certificate must chain to; empty: the
    system's trust store. Relative paths are relative to the working directory."""
    controller_cert_path: Path | None = None
    """Our PEM client certificate for the controller's mutual TLS (with controller_key_path)."""
    controller_key_path: Path | None = None
    """The unencrypted PEM private key of ``controller_cert_path``."""

    @field_validator("controller_url")
    @classmethod
    def _no_credentials(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if (problem := url_credentials_problem(url, "controller_token")) is not None:
            raise KeyProblem((), problem)  # a KeyProblem: the message leaves the URL out
        return url

    @field_validator("controller_ca_path", "controller_cert_path", "controller_key_path")
    @classmethod
    def _controller_tls_file(cls, path: Path | None) -> Path | None:
        if path is not None and (problem := readable_file_problem(path)) is not None:
            raise ValueError(problem)
        return path

    @model_validator(mode="after")
    def _controller_tls(self) -> SiteSettings:
        cert, key, ca = self.controller_cert_path, self.controller_key_path, self.controller_ca_path
        if (cert is None) != (key is None):
            missing = "controller_key_path" if key is None else "controller_cert_path"
            raise KeyProblem(
                (missing,),
                "a client certificate needs controller_cert_path and controller_key_path",
            )
        if (cert is not None or ca is not None) and self.controller_url.scheme != "https":
            raise KeyProblem(
                ("controller_url",),
                f"{self.controller_url.scheme}:// carries no TLS; use https:// with "
                "controller_ca_path, controller_cert_path and controller_key_path",
            )
        try:
            check_tls_files(
                None if cert is None else ("controller_cert_path", cert),
                None if key is None else ("controller_key_path", key),
                None if ca is None else ("controller_ca_path", ca),
            )
        except TlsFileError as exc:
            raise KeyProblem((exc.key,), exc.message) from exc
        return self

    @property
    def openadr_resource_id(self) -> str:
        return self.resource_id or self.id


class MaintenanceSettings(Section):
    """A ``[[maintenance]]`` window: the site takes part in no event and takes no job."""

    site: Id
    """The [[site]] id."""
    start_at: datetime
    """Aware ISO 8601 or a TOML offset date-time, whole seconds."""
    end_at: datetime
    reason: Annotated[str, Field(min_length=1, max_length=200)] = "maintenance"

    @field_validator("start_at", "end_at")
    @classmethod
    def _instant(cls, value: datetime) -> datetime:
        problem = instant_problem(value) or instant_range_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _span(self) -> MaintenanceSettings:
        problem = span_problem(self.start_at, self.end_at)
        if problem is not None:
            raise KeyProblem(("end_at",), problem)
        return self

"""The one typed settings object, read from TOML and validated at start.

Unknown keys are rejected; a bad value raises :class:`ConfigError` whose message names the
file, the key and what is expected. ``config/example.toml`` documents every key.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError, GatewayError
from gateway.feasibility import FeasibilityParams

M = TypeVar("M", bound=BaseModel)

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str = "sqlite:///dr-gateway.db"
    """SQLAlchemy URL: ``sqlite:///PATH`` or ``postgresql+psycopg://USER@HOST:PORT/DB``."""
    auto_upgrade: bool = True
    """Upgrade the schema to the newest revision when the daemon starts."""

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not (url.startswith("sqlite") or url.startswith("postgresql")):
            raise ValueError("expected a sqlite:/// or postgresql+psycopg:// URL")
        return url


class ClockSettings(_Section):
    speed: PositiveFloat = 1.0
    """Simulated seconds per wall second; 1 is real time."""
    start_at: datetime | None = None
    """Simulated start (aware ISO 8601); empty means now. Only with speed != 1."""

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expected a timezone-aware timestamp such as 2026-06-21T00:00:00Z")
        return value


class SchedulerSettings(_Section):
    poll_interval_s: PositiveFloat = 60.0
    """How often site controllers are polled, ledger rows written and migrations advanced [s]."""
    plan_interval_s: PositiveFloat = 300.0
    """How often the planner runs [s]."""


class PlannerSettings(_Section):
    policy: Literal["static", "energy-greedy", "feasibility-aware", "forecast-global"] = (
        "forecast-global"
    )
    max_migrations_per_plan: Annotated[int, Field(ge=0)] = 4
    min_residence_s: NonNegativeFloat = 3600.0
    """A job stays at least this long at a site before it moves again (hysteresis) [s]."""
    min_gain_s: NonNegativeFloat = 1800.0
    """A move must add at least this much green running time [s]."""
    forecast_horizon_s: PositiveFloat = 43200.0
    """How far ahead renewable windows are searched [s]."""


class FeasibilitySettings(_Section):
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.1
    efficiency: Annotated[float, Field(gt=0, le=1)] = 0.9
    network_kwh_per_gb: NonNegativeFloat = 0.01
    idle_kw_per_gpu: NonNegativeFloat = 0.11
    checkpoint_write_gb_per_s: PositiveFloat = 0.6
    restore_gb_per_s: PositiveFloat = 1.5

    def params(self, gpus: int = 1) -> FeasibilityParams:
        return FeasibilityParams(
            alpha=self.alpha,
            efficiency=self.efficiency,
            network_kwh_per_gb=self.network_kwh_per_gb,
            idle_kw=self.idle_kw_per_gpu * gpus,
        )


class SignalSettings(_Section):
    simple_shed_fraction: tuple[float, float, float] = (0.25, 0.5, 1.0)
    """Share of flexible load to shed for SIMPLE levels 1, 2 and 3 [-]."""
    surplus_price_threshold: float = 0.0
    """ELECTRICITY_PRICE at or below this is grid surplus [currency/kWh]."""

    @field_validator("simple_shed_fraction")
    @classmethod
    def _fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not 0 <= f <= 1 for f in value):
            raise ValueError("expected three fractions between 0 and 1")
        return value


FINGERPRINT_PATTERN = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){9}$")
"""A certificate fingerprint as ``openleadr.utils.certificate_fingerprint`` computes it: the
last 10 bytes of the SHA-256 of the DER certificate, as upper-case hex pairs joined by colons."""
TLS_KEYS = ("cert_path", "key_path", "ca_path", "vtn_fingerprint")
"""The keys that switch a VTN to mutual TLS with signed messages: all four or none."""


class VtnSettings(_Section):
    id: Id
    """Our name for this utility; sites refer to it."""
    url: AnyHttpUrl
    """The VTN's OpenADR 2.0b endpoint, e.g. http://host:8080/OpenADR2/Simple/2.0b; https://
    exactly when the TLS keys are set."""
    ven_name: Annotated[str, Field(min_length=1)]
    """The name this gateway registers with."""
    ven_id: str | None = None
    """A VEN id the utility assigned out of band; empty lets the VTN assign one."""
    reconnect_initial_s: PositiveFloat = 5.0
    """First wait before trying an unreachable VTN again [wall s]; doubles up to the maximum."""
    reconnect_max_s: PositiveFloat = 300.0
    """Longest wait between attempts [wall s]."""
    cert_path: Path | None = None
    """Our (the VEN's) PEM certificate: the TLS client certificate and the signer of our
    messages. Relative paths are relative to the working directory."""
    key_path: Path | None = None
    """The PEM private key of ``cert_path``."""
    key_passphrase_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    """The name of the environment variable holding the passphrase of ``key_path``, read when
    the connection starts; empty for an unencrypted key. Never the passphrase itself."""
    ca_path: Path | None = None
    """The PEM CA certificate(s) the VTN's HTTPS certificate must chain to."""
    vtn_fingerprint: str | None = None
    """The fingerprint of the certificate the VTN signs its messages with, as openleadr prints
    it: 10 hex pairs such as ``AB:CD:EF:01:23:45:67:89:AB:CD``; messages signed otherwise are
    refused."""
    check_hostname: bool = True
    """Check that the VTN's HTTPS certificate names the host in ``url``."""

    @field_validator("cert_path", "key_path", "ca_path")
    @classmethod
    def _readable_file(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        if not path.is_file():
            raise ValueError("no such file")
        if not os.access(path, os.R_OK):
            raise ValueError("file is not readable by this user")
        return path

    @field_validator("vtn_fingerprint")
    @classmethod
    def _fingerprint_format(cls, fingerprint: str | None) -> str | None:
        if fingerprint is None:
            return None
        normalised = fingerprint.strip().upper()
        if not FINGERPRINT_PATTERN.match(normalised):
            raise ValueError(
                "expected 10 hex pairs joined by colons, as openleadr prints a certificate "
                "fingerprint, e.g. AB:CD:EF:01:23:45:67:89:AB:CD"
            )
        return normalised

    @model_validator(mode="after")
    def _tls_all_or_nothing(self) -> VtnSettings:
        given = [key for key in TLS_KEYS if getattr(self, key) is not None]
        scheme = self.url.scheme
        if not given:
            if self.key_passphrase_env is not None:
                raise KeyProblem(
                    ("key_passphrase_env",),
                    "only meaningful with mutual TLS; set cert_path, key_path, ca_path and "
                    "vtn_fingerprint too, or leave it out",
                )
            if scheme != "http":
                raise KeyProblem(
                    ("url",),
                    f"{scheme}:// needs mutual TLS: set cert_path, key_path, ca_path and "
                    "vtn_fingerprint, or use an http:// URL",
                )
            return self
        missing = [key for key in TLS_KEYS if key not in given]
        if missing:
            raise KeyProblem(
                (missing[0],),
                f"mutual TLS needs all of {', '.join(TLS_KEYS)}; missing: {', '.join(missing)} "
                f"(given: {', '.join(given)})",
            )
        if scheme != "https":
            raise KeyProblem(
                ("url",),
                f"with mutual TLS configured the URL must be https://, not {scheme}://",
            )
        return self

    @property
    def tls(self) -> bool:
        """True when this VTN is reached over mutual TLS with signed messages."""
        return self.cert_path is not None


class SiteSettings(_Section):
    id: Id
    gpus_total: Annotated[int, Field(gt=0)]
    it_power_max_kw: PositiveFloat
    pue: Annotated[float, Field(ge=1, le=3)] = 1.2
    wan_bandwidth_gbps: PositiveFloat
    controller_url: AnyHttpUrl
    controller_token: Annotated[str, Field(min_length=8)]
    vtn: Id | None = None
    """Which [[vtn]] serves this site; empty for a site in no programme."""
    resource_id: Annotated[str, Field(min_length=1)] | None = None
    """The OpenADR resource id the utility uses for this site (default: the site id)."""

    @property
    def openadr_resource_id(self) -> str:
        return self.resource_id or self.id


class Settings(_Section):
    database: DatabaseSettings = DatabaseSettings()
    clock: ClockSettings = ClockSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    planner: PlannerSettings = PlannerSettings()
    feasibility: FeasibilitySettings = FeasibilitySettings()
    signals: SignalSettings = SignalSettings()
    vtn: list[VtnSettings] = []
    site: list[SiteSettings] = []

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        vtn_ids = [v.id for v in self.vtn]
        for i, vid in enumerate(vtn_ids):
            if vtn_ids.index(vid) != i:
                raise KeyProblem(("vtn", i, "id"), f"duplicate VTN id {vid!r}")
        site_ids = [s.id for s in self.site]
        for i, site in enumerate(self.site):
            if site_ids.index(site.id) != i:
                raise KeyProblem(("site", i, "id"), f"duplicate site id {site.id!r}")
            if site.vtn is not None and site.vtn not in vtn_ids:
                raise KeyProblem(
                    ("site", i, "vtn"),
                    f"unknown VTN {site.vtn!r}; expected one of the [[vtn]] ids {vtn_ids}",
                )
        return self

    def site_by_id(self, site_id: str) -> SiteSettings:
        for site in self.site:
            if site.id == site_id:
                return site
        raise KeyError(site_id)


class KeyProblem(ValueError):
    """A cross-field problem that knows which key it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _explain(error: dict[str, Any], keys_doc: str) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown key (check its spelling; {keys_doc} lists every key)"
    if kind == "missing":
        return "required key is missing"
    message = str(error.get("msg", "invalid value"))
    ctx = error.get("ctx") or {}
    if isinstance(ctx.get("error"), KeyProblem):
        return str(ctx["error"].message)
    message = message.removeprefix("Value error, ")
    if "input" in error and kind not in ("missing",):
        return f"{message} (got {error['input']!r})"
    return message


def parse_model(
    model: type[M],
    data: dict[str, Any],
    source: str,
    keys_doc: str = "config/example.toml",
    error: type[GatewayError] = ConfigError,
) -> M:
    """Validate ``data`` as ``model``; ``source`` names where it came from and ``keys_doc``
    where its keys are documented, for messages; bad data raises ``error``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
        first = errors[0]
        ctx = first.get("ctx") or {}
        loc: tuple[str | int, ...] = tuple(first["loc"])
        if isinstance(ctx.get("error"), KeyProblem):
            loc = loc + ctx["error"].loc  # a nested model's problem: its key inside the model
        key = _format_loc(loc) or "(top level)"
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise error(f"{source}: {key}: {_explain(dict(first), keys_doc)}{suffix}") from exc


def parse_settings(data: dict[str, Any], source: str) -> Settings:
    """Validate a settings mapping; ``source`` names where it came from for messages."""
    return parse_model(Settings, data, source)


def read_toml(
    path: str | Path, what: str, error: type[GatewayError] = ConfigError
) -> dict[str, Any]:
    """A TOML file as a mapping; ``error`` naming the file when it cannot be read or parsed."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{file}: cannot read the {what}: {exc.strerror}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{file}: not valid TOML: {exc}") from exc


def load_settings(path: str | Path) -> Settings:
    """Read and validate a TOML settings file."""
    return parse_settings(read_toml(path, "configuration"), str(path))

"""The one typed settings object, read from TOML and validated at start.

Unknown keys are rejected; a bad value raises :class:`ConfigError` whose message names the
file, the key and what is expected (:func:`parse_model`, which the site agent's and the
evaluation's configurations use too). ``config/example.toml`` documents every key.

This module holds the top-level :class:`Settings` and its small sections (database, clock,
scheduler, planner, feasibility); the larger sections have modules of their own:
``gateway.settings_vtn`` (``[[vtn]]``), ``gateway.settings_sites`` (``[[site]]``,
``[site_controller]``, ``[[maintenance]]``), ``gateway.settings_programmes``
(``[[programme]]``, ``[signals]``) and ``gateway.settings_web`` (``[web]``), all built on
``gateway.settings_base``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from gateway.baselines import BaselineParams
from gateway.errors import ConfigError, GatewayError
from gateway.planner.signals import ANY_MARKET_CONTEXT, Programme, SignalPolicy, default_rules
from gateway.settings_base import (
    COUNT_MAX,
    KeyProblem,
    NonNegativeFloat,
    PositiveFloat,
    Section,
    instant_range_problem,
)
from gateway.settings_programmes import DEFAULT_BASELINE, ProgrammeSettings, SignalSettings
from gateway.settings_sites import MaintenanceSettings, SiteControllerSettings, SiteSettings
from gateway.settings_vtn import VtnSettings
from gateway.settings_web import WebSettings

if TYPE_CHECKING:
    from gateway.feasibility import FeasibilityParams

M = TypeVar("M", bound=BaseModel)

MAX_CONFIG_BYTES = 16 * 1024 * 1024
"""A TOML file larger than this is refused before it is parsed (16 MiB)."""


class DatabaseSettings(Section):
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


class ClockSettings(Section):
    speed: PositiveFloat = 1.0
    """Simulated seconds per wall second; 1 is real time."""
    start_at: datetime | None = None
    """Simulated start (aware ISO 8601); empty means now. Only with speed != 1."""

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expected a timezone-aware timestamp such as 2026-06-21T00:00:00Z")
        if value is not None and (problem := instant_range_problem(value)) is not None:
            raise ValueError(problem)
        return value


class SchedulerSettings(Section):
    poll_interval_s: PositiveFloat = 60.0
    """How often site controllers are polled, ledger rows written and migrations advanced [s]."""
    plan_interval_s: PositiveFloat = 300.0
    """How often the planner runs [s]."""


class PlannerSettings(Section):
    policy: Literal["static", "energy-greedy", "feasibility-aware", "forecast-global"] = (
        "forecast-global"
    )
    max_migrations_per_plan: Annotated[int, Field(ge=0, le=COUNT_MAX)] = 4
    min_residence_s: NonNegativeFloat = 3600.0
    """A job stays at least this long at a site before it moves again (hysteresis) [s]."""
    min_gain_s: NonNegativeFloat = 1800.0
    """A move must add at least this much green running time [s]."""
    forecast_horizon_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 43200.0
    """How far ahead renewable windows are searched, at most a week [s]."""
    offer_hours: Annotated[int, Field(ge=0, le=168)] = 12
    """How many coming hours each plan round offers per site (``docs/ei-report.md``) [h]."""
    event_guard_s: NonNegativeFloat = 3600.0
    """A site with an opted-in event in force or starting within this time moves jobs only for
    that event, so that the meter (and the baseline before the event) sees no other change [s]."""
    delivery_margin: Annotated[float, Field(ge=0, le=1)] = 0.25
    """Shed or absorb this share more than asked, and opt in only when that is deliverable [-]."""


class FeasibilitySettings(Section):
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.1
    efficiency: Annotated[float, Field(gt=0, le=1)] = 0.9
    network_kwh_per_gb: NonNegativeFloat = 0.01
    idle_kw_per_gpu: NonNegativeFloat = 0.11
    checkpoint_write_gb_per_s: PositiveFloat = 0.6
    restore_gb_per_s: PositiveFloat = 1.5
    timeout_margin: Annotated[float, Field(ge=1, le=100)] = 3.0
    """A migration step may take this many times what the model expects of it, plus
    ``timeout_floor_s``, before the migration aborts (``gateway/migration/deadlines.py``) [-]."""
    timeout_floor_s: Annotated[float, Field(ge=0, le=86400)] = 60.0
    """Added to every step's limit: round trips, retries, a controller's start-up [s]."""

    def params(self, gpus: int = 1) -> FeasibilityParams:
        from gateway.feasibility import FeasibilityParams  # numpy: not for every command

        return FeasibilityParams(
            alpha=self.alpha,
            efficiency=self.efficiency,
            network_kwh_per_gb=self.network_kwh_per_gb,
            idle_kw=self.idle_kw_per_gpu * gpus,
        )


class Settings(Section):
    database: DatabaseSettings = DatabaseSettings()
    clock: ClockSettings = ClockSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    planner: PlannerSettings = PlannerSettings()
    feasibility: FeasibilitySettings = FeasibilitySettings()
    site_controller: SiteControllerSettings = SiteControllerSettings()
    signals: SignalSettings = SignalSettings()
    programme: list[ProgrammeSettings] = Field(default_factory=list)
    vtn: list[VtnSettings] = Field(default_factory=list)
    site: list[SiteSettings] = Field(default_factory=list)
    maintenance: list[MaintenanceSettings] = Field(default_factory=list)
    web: WebSettings = WebSettings()

    @model_validator(mode="after")
    def _maintenance_sites(self) -> Settings:
        site_ids = [s.id for s in self.site]
        for i, window in enumerate(self.maintenance):
            if window.site not in site_ids:
                raise KeyProblem(
                    ("maintenance", i, "site"),
                    f"unknown site {window.site!r}; expected one of the [[site]] ids {site_ids}",
                )
        return self

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

    @model_validator(mode="after")
    def _distinct_programmes(self) -> Settings:
        contexts = [p.market_context for p in self.programme]
        for i, context in enumerate(contexts):
            if contexts.index(context) != i:
                raise KeyProblem(
                    ("programme", i, "market_context"), f"duplicate market context {context!r}"
                )
        return self

    def signal_policy(self) -> SignalPolicy:
        """The programmes' signal mappings for the planner; without ``[[programme]]`` one
        programme for any market context with the default table and ``[signals]``."""
        if not self.programme:
            return SignalPolicy(
                (
                    Programme(
                        ANY_MARKET_CONTEXT,
                        default_rules(
                            self.signals.simple_shed_fraction,
                            self.signals.surplus_price_threshold,
                        ),
                    ),
                )
            )
        return SignalPolicy(
            tuple(
                Programme(
                    p.market_context,
                    tuple(row.rule(self.signals) for row in p.signal)
                    or default_rules(
                        self.signals.simple_shed_fraction, self.signals.surplus_price_threshold
                    ),
                )
                for p in self.programme
            )
        )

    def baseline_programmes(self) -> tuple[tuple[str, BaselineParams], ...]:
        """(market context, baseline) of every programme, as the ``programmes`` table holds
        them; without ``[[programme]]`` one for any market context with the default."""
        if not self.programme:
            return ((ANY_MARKET_CONTEXT, DEFAULT_BASELINE),)
        return tuple((p.market_context, p.baseline_params()) for p in self.programme)

    def site_by_id(self, site_id: str) -> SiteSettings:
        for site in self.site:
            if site.id == site_id:
                return site
        raise KeyError(site_id)


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_:-]{1,64}$")
SECRET_KEY_WORDS = ("token", "password", "passphrase", "secret")
"""A key whose name holds one of these words has a secret value: messages never show it."""
SHOWN_VALUE_CHARS = 240
"""A bad value is shown in a message up to this many characters of its repr."""
_URL_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]*@")


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # a key that is not plain (control characters, dots, a whole paragraph) is shown
            # quoted and shortened, so that the message stays one readable line
            shown = part if _PLAIN_KEY.match(part) else _shorten(repr(part))
            out += ("." if out else "") + shown
    return out


def _shorten(text: str) -> str:
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def hide_url_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it replaced by ``***@``."""
    return _URL_USERINFO.sub(r"\1***@", text)


def _is_secret(loc: tuple[str | int, ...]) -> bool:
    return any(
        isinstance(part, str) and any(word in part.lower() for word in SECRET_KEY_WORDS)
        for part in loc
    )


def shown_value(value: Any) -> str:
    """A bad value as a message shows it: its repr, URL credentials hidden, shortened."""
    return _shorten(hide_url_credentials(repr(value)))


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
    if "input" in error and kind not in ("missing",) and not _is_secret(tuple(error["loc"])):
        return f"{message} (got {shown_value(error['input'])})"
    return message


def parse_model(
    model: type[M],
    data: dict[str, Any],
    source: str,
    keys_doc: str = "config/example.toml",
    error: type[GatewayError] = ConfigError,
    context: Mapping[str, Any] | None = None,
) -> M:
    """Validate ``data`` as ``model``; ``source`` names where it came from and ``keys_doc``
    where its keys are documented, for messages; bad data raises ``error``. ``context`` is
    handed to the model's validators (pydantic's validation context)."""
    try:
        return model.model_validate(data, context=context)
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
    """A TOML file as a mapping; ``error`` naming the file when it cannot be read or parsed:
    missing, a directory, unreadable, over :data:`MAX_CONFIG_BYTES`, not UTF-8 (a byte-order
    mark is allowed), not TOML, or nested deeper than the parser can follow."""
    file = Path(path)
    try:
        if file.exists() and not file.is_file():
            raise error(f"{file}: cannot read the {what}: not a regular file")
        with file.open("rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise error(f"{file}: cannot read the {what}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise error(f"{file}: the {what} is larger than {MAX_CONFIG_BYTES // 2**20} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw.count(b"\n", 0, offset) + 1
        column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
        raise error(
            f"{file}: line {line}, column {column}: byte 0x{raw[offset]:02x} is not UTF-8 "
            f"text; the {what} must be UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{file}: not valid TOML: {exc}") from exc
    except RecursionError:
        raise error(f"{file}: not valid TOML: arrays or inline tables nested too deeply") from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate a TOML settings file."""
    return parse_settings(read_toml(path, "configuration"), str(path))

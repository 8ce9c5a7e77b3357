"""The one typed settings object, read from TOML and validated at start.

Unknown keys are rejected; a bad value raises :class:`ConfigError` whose message names the
file, the key and what is expected. ``config/example.toml`` documents every key.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.baselines import BaselineMethod, BaselineParams
from gateway.errors import ConfigError, GatewayError
from gateway.feasibility import FeasibilityParams
from gateway.maintenance.window import instant_problem, span_problem
from gateway.planner.signals import (
    ANY_MARKET_CONTEXT,
    Action,
    Programme,
    SignalPolicy,
    SignalRule,
    default_rules,
)
from gateway.sites.tls import TlsFileError, check_tls_files, readable_file_problem

M = TypeVar("M", bound=BaseModel)

QUANTITY_MAX = 1e9
"""The largest number any quantity of a configuration may take, in its unit (s, kW, GB,
Gbit/s, ...): far beyond any real value, and below where time arithmetic overflows."""
COUNT_MAX = 1_000_000
"""The largest count (GPUs, migrations per round) a configuration may give."""
INSTANT_MIN = datetime(2000, 1, 1, tzinfo=UTC)
INSTANT_MAX = datetime(2200, 1, 1, tzinfo=UTC)
"""Instants in a configuration lie in [INSTANT_MIN, INSTANT_MAX): a date far outside cannot
be meant, and near the calendar's ends adding a duration overflows."""
MAX_CONFIG_BYTES = 16 * 1024 * 1024
"""A TOML file larger than this is refused before it is parsed (16 MiB)."""

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
PositiveFloat = Annotated[float, Field(gt=0, le=QUANTITY_MAX)]
NonNegativeFloat = Annotated[float, Field(ge=0, le=QUANTITY_MAX)]


def instant_range_problem(value: datetime) -> str | None:
    """Why an aware ``value`` is outside the instants a configuration may name, or None."""
    if not INSTANT_MIN <= value < INSTANT_MAX:
        return (
            f"{value.isoformat()} is outside {INSTANT_MIN.year} to {INSTANT_MAX.year - 1}; "
            "expected a timestamp such as 2026-06-21T00:00:00Z"
        )
    return None


def url_credentials_problem(url: AnyHttpUrl, token_key: str) -> str | None:
    """Why ``url`` must not be used as it is, when it carries ``user:password@``: the
    message names ``token_key`` and never the password."""
    if url.username is None and url.password is None:
        return None
    return (
        "credentials in the URL (user:password@) are not used and would be sent in the "
        f"clear; remove them and set {token_key} instead"
    )


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
        if value is not None and (problem := instant_range_problem(value)) is not None:
            raise ValueError(problem)
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


class FeasibilitySettings(_Section):
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.1
    efficiency: Annotated[float, Field(gt=0, le=1)] = 0.9
    network_kwh_per_gb: NonNegativeFloat = 0.01
    idle_kw_per_gpu: NonNegativeFloat = 0.11
    checkpoint_write_gb_per_s: PositiveFloat = 0.6
    restore_gb_per_s: PositiveFloat = 1.5
    timeout_margin: Annotated[float, Field(ge=1, le=100)] = 3.0
    """A migration step may take this many times what the model expects of it, plus
    ``timeout_floor_s``, before the migration aborts (``gateway/deadlines.py``) [-]."""
    timeout_floor_s: Annotated[float, Field(ge=0, le=86400)] = 60.0
    """Added to every step's limit: round trips, retries, a controller's start-up [s]."""

    def params(self, gpus: int = 1) -> FeasibilityParams:
        return FeasibilityParams(
            alpha=self.alpha,
            efficiency=self.efficiency,
            network_kwh_per_gb=self.network_kwh_per_gb,
            idle_kw=self.idle_kw_per_gpu * gpus,
        )


class SiteControllerSettings(_Section):
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


class SignalRuleSettings(_Section):
    """One row of a programme's signal mapping (``[[programme.signal]]``)."""

    name: Annotated[str, Field(min_length=1)]
    """The OpenADR signal name: SIMPLE, LOAD_DISPATCH, ELECTRICITY_PRICE, LOAD_CONTROL, x-..."""
    type: Annotated[str, Field(min_length=1)]
    """The signal type: level, delta, setpoint, price, x-loadControlCapacity, ..."""
    action: Action
    level_fractions: tuple[Annotated[float, Field(ge=0, le=1)], ...] | None = None
    """For shed_fraction_by_level: the share of flexible load shed at level 1, 2, ... [-]."""
    price_threshold: float | None = None
    """For absorb_at_or_below_price: the price at or below which the grid has surplus."""

    @model_validator(mode="after")
    def _parameters(self) -> SignalRuleSettings:
        if self.level_fractions is not None and self.action != "shed_fraction_by_level":
            raise KeyProblem(("level_fractions",), "only for action shed_fraction_by_level")
        if self.level_fractions is not None and not self.level_fractions:
            raise KeyProblem(("level_fractions",), "expected at least one fraction")
        if self.price_threshold is not None and self.action != "absorb_at_or_below_price":
            raise KeyProblem(("price_threshold",), "only for action absorb_at_or_below_price")
        return self

    def rule(self, signals: SignalSettings) -> SignalRule:
        """The planner's row; parameters left out come from ``[signals]``."""
        return SignalRule(
            signal_name=self.name,
            signal_type=self.type,
            action=self.action,
            level_fractions=self.level_fractions or signals.simple_shed_fraction,
            price_threshold=(
                signals.surplus_price_threshold
                if self.price_threshold is None
                else self.price_threshold
            ),
        )


DEFAULT_BASELINE = BaselineParams()
"""The baseline of a programme without ``baseline`` keys: ``like-days`` with CAISO's
parameters (``docs/views.md`` says why)."""
BASELINE_KEYS: dict[BaselineMethod, tuple[str, ...]] = {
    "like-days": (
        "like_days",
        "lookback_days",
        "min_like_days",
        "adjustment_window_s",
        "adjustment_gap_s",
        "adjustment_cap",
        "meter_window_s",
    ),
    "meter-before-after": ("meter_window_s",),
    "hour-before": (),
}
"""The parameters each baseline method reads (``like-days`` falls back to
``meter-before-after``, so it reads that one's window too)."""


class ProgrammeSettings(_Section):
    """A utility's programme (``[[programme]]``): its market context, signal mapping and the
    baseline its events are measured against."""

    market_context: Annotated[str, Field(min_length=1, max_length=512)]
    """The market context URI its events carry; ``*`` for any market context not listed."""
    signal: list[SignalRuleSettings] = []
    """The signal mapping; empty takes the default table (``docs/architecture.md``, 'Signal
    mapping')."""
    baseline: BaselineMethod = DEFAULT_BASELINE.method
    """How the utility computes the baseline of its events (``docs/views.md``)."""
    like_days: Annotated[int, Field(ge=1, le=60)] = DEFAULT_BASELINE.like_days
    """like-days: like days averaged at most [count]."""
    lookback_days: Annotated[int, Field(ge=1, le=366)] = DEFAULT_BASELINE.lookback_days
    """like-days: UTC days before the event's day searched for like days [count]."""
    min_like_days: Annotated[int, Field(ge=1, le=60)] = DEFAULT_BASELINE.min_like_days
    """like-days: with fewer like days, fall back to meter-before-after [count]."""
    adjustment_window_s: Annotated[float, Field(ge=0, le=86400)] = (
        DEFAULT_BASELINE.adjustment_window_s
    )
    """like-days: length of the same-day adjustment window; 0 for no adjustment [s]."""
    adjustment_gap_s: Annotated[float, Field(ge=0, le=86400)] = DEFAULT_BASELINE.adjustment_gap_s
    """like-days: the adjustment window ends this long before the event's start [s]."""
    adjustment_cap: Annotated[float, Field(ge=0, le=1)] = DEFAULT_BASELINE.adjustment_cap
    """like-days: the adjustment ratio stays within 1 -/+ this [fraction]."""
    meter_window_s: Annotated[float, Field(gt=0, le=3600)] = DEFAULT_BASELINE.meter_window_s
    """meter-before-after (and like-days' fallback): the window before the start whose mean
    load is the baseline [s]."""

    @model_validator(mode="after")
    def _distinct_signals(self) -> ProgrammeSettings:
        seen: list[tuple[str, str]] = []
        for i, row in enumerate(self.signal):
            if (row.name, row.type) in seen:
                raise KeyProblem(("signal", i), f"signal {row.name}/{row.type} is mapped twice")
            seen.append((row.name, row.type))
        return self

    @model_validator(mode="after")
    def _baseline_parameters(self) -> ProgrammeSettings:
        used = BASELINE_KEYS[self.baseline]
        for key in (k for k in BASELINE_KEYS["like-days"] if k in self.model_fields_set):
            if key not in used:
                users = ", ".join(m for m, keys in BASELINE_KEYS.items() if key in keys)
                raise KeyProblem(
                    (key,),
                    f'baseline = "{self.baseline}" does not use {key}; remove it or choose a '
                    f"baseline that does ({users})",
                )
        if self.min_like_days > self.like_days:
            raise KeyProblem(
                ("min_like_days",),
                f"{self.min_like_days} is above like_days = {self.like_days}; the minimum "
                "cannot exceed the number of like days averaged",
            )
        return self

    def baseline_params(self) -> BaselineParams:
        """The programme's baseline for ``gateway.baselines``."""
        return BaselineParams(
            method=self.baseline,
            like_days=self.like_days,
            lookback_days=self.lookback_days,
            min_like_days=self.min_like_days,
            adjustment_window_s=self.adjustment_window_s,
            adjustment_gap_s=self.adjustment_gap_s,
            adjustment_cap=self.adjustment_cap,
            meter_window_s=self.meter_window_s,
        )


_CRON_UNITS_S = ((60, 1), (3600, 60), (86400, 3600))
"""(below this [s], count in this [s]): the granularities openleadr's cron schedules allow."""
REPORT_INTERVAL_RULE = (
    "whole seconds dividing a minute, whole minutes dividing an hour or whole hours dividing "
    "a day (e.g. 1, 10, 60, 300, 3600)"
)


def is_report_interval(interval_s: float) -> bool:
    """True when openleadr can schedule reports every ``interval_s`` [s] (it uses cron)."""
    for below_s, unit_s in _CRON_UNITS_S:
        if 0 < interval_s < below_s:
            count = interval_s / unit_s
            return count == int(count) and (below_s // unit_s) % int(count) == 0
    return interval_s == _CRON_UNITS_S[-1][0]


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
    report_interval_s: PositiveFloat = 10.0
    """How often the VEN offers to report telemetry, status and offers [s]: whole seconds
    dividing a minute, whole minutes dividing an hour or whole hours dividing a day."""
    reconnect_initial_s: PositiveFloat = 5.0
    """First wait before trying an unreachable or lost VTN again [wall s]; doubles with each
    failed attempt up to the maximum, each wait varied by +-50 % (never above the maximum)."""
    reconnect_max_s: PositiveFloat = 300.0
    """Longest wait between attempts [wall s]; at least ``reconnect_initial_s``."""
    outage_after_failures: Annotated[int, Field(ge=1, le=100)] = 3
    """Polls in a row without a usable answer (no connection, timeout, HTTP error, an answer
    not valid or not signed by the VTN), or answered "not registered" (452, 463), after which
    the VTN counts as lost: its client is stopped and rebuilt with the back-off above."""
    request_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    """Longest wait for one answer of the VTN [wall s]; a request that takes longer failed.
    Keep it below the VTN's poll interval."""
    max_message_size_bytes: Annotated[int, Field(ge=65_536, le=268_435_456)] = 4_194_304
    """Largest answer of the VTN the VEN reads [bytes]; a longer one is refused unread
    (``docs/conformance.md``, "The VEN's edge"). 4 MiB holds hundreds of events."""
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
    opt_market_context: Annotated[str, Field(min_length=1)] | None = None
    """The market context (programme URI) our availability schedules (EiOpt) name; empty
    sends none: the opt then applies to every programme of the VTN."""

    @field_validator("url")
    @classmethod
    def _no_url_credentials(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        # OpenADR 2.0b authenticates a VEN by its TLS client certificate, not by HTTP
        # credentials (OpenADR 2.0b Profile Specification, section 10, Security).
        if (problem := url_credentials_problem(url, "cert_path and key_path")) is not None:
            raise KeyProblem((), problem)
        return url

    @field_validator("report_interval_s")
    @classmethod
    def _cron_interval(cls, interval_s: float) -> float:
        if not is_report_interval(interval_s):
            raise ValueError(f"expected {REPORT_INTERVAL_RULE}")
        return interval_s

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
    def _backoff_order(self) -> VtnSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise KeyProblem(
                ("reconnect_max_s",),
                f"{self.reconnect_max_s} is below reconnect_initial_s = "
                f"{self.reconnect_initial_s}; the longest wait must be at least the first",
            )
        return self

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


class MaintenanceSettings(_Section):
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


WEB_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")
"""A bearer token as RFC 6750 allows it (``b64token``): safe in a header, a cookie and a URL."""
WEB_TOKEN_MIN_LENGTH = 16
WEB_TOKEN_RULE = (
    f"at least {WEB_TOKEN_MIN_LENGTH} characters of A-Z a-z 0-9 . _ ~ + / - (then = only), "
    "e.g. the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
)


def web_token_problem(token: str) -> str | None:
    """Why ``token`` cannot guard the web server, or None when it can."""
    if len(token) < WEB_TOKEN_MIN_LENGTH or not WEB_TOKEN_PATTERN.match(token):
        return f"expected {WEB_TOKEN_RULE}"
    return None


class WebSettings(_Section):
    """The dashboard, JSON API, ``/healthz`` and ``/metrics`` (``[web]``, ``docs/web.md``)."""

    enabled: bool = False
    """Serve them from the daemon."""
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    """The address to listen on; the default answers this machine only."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8787
    """The TCP port; 0 lets the operating system choose one (the daemon logs the URL)."""
    token: SecretStr | None = None
    """The bearer token every request must carry (kept out of reprs and logs). Prefer
    ``token_file``."""
    token_file: Path | None = None
    """A file holding the token (surrounding whitespace ignored), readable by the daemon only."""
    refresh_s: Annotated[float, Field(ge=0.2, le=3600)] = 5.0
    """How often the dashboard page asks for new figures [wall s]."""

    @field_validator("token")
    @classmethod
    def _token_format(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and (problem := web_token_problem(token.get_secret_value())):
            raise KeyProblem((), problem)  # a KeyProblem: the message leaves the secret out
        return token

    @field_validator("token_file")
    @classmethod
    def _token_file_readable(cls, path: Path | None) -> Path | None:
        if path is not None:
            try:
                read_web_token(path)
            except ValueError as exc:
                raise KeyProblem((), f"{path}: {exc}") from exc
        return path

    @model_validator(mode="after")
    def _one_token(self) -> WebSettings:
        if self.token is not None and self.token_file is not None:
            raise KeyProblem(("token_file",), "set token or token_file, not both")
        if self.enabled and self.token is None and self.token_file is None:
            raise KeyProblem(
                ("token",),
                "the web server needs a token: set [web] token or token_file "
                f"({WEB_TOKEN_RULE}), or enabled = false",
            )
        return self

    def bearer_token(self) -> str:
        """The configured token, read from ``token_file`` now if that is where it is.

        Raises ConfigError naming the key when there is none or the file went bad."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_file is None:
            raise ConfigError("web.token: no token configured; set [web] token or token_file")
        try:
            return read_web_token(self.token_file)
        except ValueError as exc:
            raise ConfigError(f"web.token_file: {self.token_file}: {exc}") from exc


def read_web_token(path: Path) -> str:
    """The token in ``path``, stripped; ValueError saying what is wrong with the file."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise ValueError("no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the token: {exc}") from exc
    problem = web_token_problem(token)
    if problem is not None:
        raise ValueError(f"the file's token is not usable: {problem}")
    return token


class Settings(_Section):
    database: DatabaseSettings = DatabaseSettings()
    clock: ClockSettings = ClockSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    planner: PlannerSettings = PlannerSettings()
    feasibility: FeasibilitySettings = FeasibilitySettings()
    site_controller: SiteControllerSettings = SiteControllerSettings()
    signals: SignalSettings = SignalSettings()
    programme: list[ProgrammeSettings] = []
    vtn: list[VtnSettings] = []
    site: list[SiteSettings] = []
    maintenance: list[MaintenanceSettings] = []
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


class KeyProblem(ValueError):
    """A cross-field problem that knows which key it is about."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


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

"""The ``[[vtn]]`` section: a utility's VTN, how the VEN reaches it and how often it reports.

Besides :class:`VtnSettings` it holds the rules the VEN applies again at run time: which
report intervals openleadr can schedule (:func:`is_report_interval`) and the form of a
certificate fingerprint (:data:`FINGERPRINT_PATTERN`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, Field, field_validator, model_validator

from gateway.settings_base import (
    Id,
    KeyProblem,
    PositiveFloat,
    Section,
    url_credentials_problem,
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


class VtnSettings(Section):
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

"""The ``[web]`` section: the dashboard, JSON API, ``/healthz`` and ``/metrics``, and the
bearer token that guards them (``docs/web.md``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.errors import ConfigError
from gateway.settings_base import KeyProblem, Section

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


class WebSettings(Section):
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

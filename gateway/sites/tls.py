"""TLS for the site controller API: certificate files checked at validation, and the
``ssl.SSLContext`` objects built from them (``docs/site-api.md``, Authentication).

A site agent serves HTTPS with its certificate and, for mutual TLS, requires every client to
present a certificate signed by the fleet's CA; it presents the same certificate when it calls
another agent. The gateway's client of a site verifies the controller's certificate and may
present one of its own. TLS 1.2 or newer, host names checked. The bearer token is needed
whatever TLS does. Keys are PEM and unencrypted (readable by the service's user only): no
message ever contains key material.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsFileError(ValueError):
    """A certificate or key file that cannot serve: ``key`` is the configuration key that
    names it, ``message`` says what is wrong (with the file's path)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def readable_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file by this user; None when it can."""
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "file is not readable by this user"
    return None


def check_tls_files(
    cert: tuple[str, Path] | None = None,
    key: tuple[str, Path] | None = None,
    ca: tuple[str, Path] | None = None,
) -> None:
    """Check PEM files, each given as (configuration key, path): ``cert`` holds a certificate
    (its chain may follow), ``key`` the unencrypted private key of that certificate, ``ca``
    one or more CA certificates. Raises :class:`TlsFileError` for the first problem."""
    if cert is not None:
        certificate_der = _public_der(_first_certificate(*cert).public_key())
        if key is not None and _public_der(_private_key(*key).public_key()) != certificate_der:
            raise TlsFileError(
                key[0], f"{key[1]} is not the key of the certificate in {cert[0]} {cert[1]}"
            )
    elif key is not None:
        _private_key(*key)
    if ca is not None:
        _first_certificate(*ca)


def server_context(
    cert_path: Path, key_path: Path, ca_path: Path | None, require_client_cert: bool
) -> ssl.SSLContext:
    """The context an agent serves HTTPS with: its certificate ``cert_path`` and key
    ``key_path``; with ``require_client_cert`` (mutual TLS) every client must present a
    certificate that chains to ``ca_path``, else the handshake fails. Raises ConfigError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load_chain(context, cert_path, key_path)
    if require_client_cert:
        if ca_path is None:
            raise ConfigError("require_client_cert needs ca_path: the CA clients must chain to")
        _load_ca(context, ca_path)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca_path: Path | None = None, cert_path: Path | None = None, key_path: Path | None = None
) -> ssl.SSLContext:
    """The context of calls to a site controller or agent: the server's certificate must
    chain to ``ca_path`` (the system's trust store when None) and name the URL's host;
    ``cert_path`` and ``key_path``, when given, are presented as the client certificate
    (mutual TLS). Raises ConfigError."""
    if ca_path is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks host names
        _load_ca(context, ca_path)
    context.minimum_version = MINIMUM_VERSION
    if (cert_path is None) != (key_path is None):
        raise ConfigError("a client certificate needs both its certificate and its key file")
    if cert_path is not None and key_path is not None:
        _load_chain(context, cert_path, key_path)
    return context


def optional_client_context(
    ca_path: Path | None, cert_path: Path | None, key_path: Path | None
) -> ssl.SSLContext | None:
    """:func:`client_context` when any file is given; None otherwise (aiohttp's default then
    verifies https:// servers against the system's trust store)."""
    if ca_path is None and cert_path is None and key_path is None:
        return None
    return client_context(ca_path, cert_path, key_path)


# ---- helpers ------------------------------------------------------------------------------


def _read(key: str, path: Path) -> bytes:
    problem = readable_file_problem(path)
    if problem is not None:
        raise TlsFileError(key, f"{path}: {problem}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsFileError(key, f"{path}: cannot read: {exc.strerror}") from exc


def _first_certificate(key: str, path: Path) -> x509.Certificate:
    from cryptography import x509  # only where a certificate is read: settings load without it

    pem = _read(key, path)
    try:
        return x509.load_pem_x509_certificates(pem)[0]
    except ValueError as exc:
        raise TlsFileError(key, f"{path} holds no PEM certificate") from exc


def _private_key(key: str, path: Path) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    pem = _read(key, path)
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:  # encrypted
        raise TlsFileError(
            key,
            f"{path} is encrypted; the site API takes an unencrypted PEM key (keep the file "
            "readable by the service's user only)",
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TlsFileError(key, f"{path} is not a PEM private key") from exc


def _public_der(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _no_passphrase() -> NoReturn:
    raise ConfigError("the key is encrypted; the site API takes an unencrypted PEM key")


def _load_chain(context: ssl.SSLContext, cert_path: Path, key_path: Path) -> None:
    try:
        # A passphrase callback that refuses: OpenSSL would otherwise prompt on the terminal.
        context.load_cert_chain(cert_path, key_path, password=_no_passphrase)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"certificate {cert_path} with key {key_path} unusable for TLS: {reason}"
        ) from exc


def _load_ca(context: ssl.SSLContext, ca_path: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca_path)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"CA file {ca_path} unusable for TLS: {reason}") from exc

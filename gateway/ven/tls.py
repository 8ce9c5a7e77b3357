"""Mutual TLS with XML signatures towards one VTN: the material checked before openleadr
sees it, the handshake check at start and the check of the VTN's signing certificate.

openleadr drops a response signed with another certificate than ``vtn_fingerprint`` with a log
line and carries on as if the VTN had not answered; :class:`FingerprintCheck` (a
``before_schema_validation`` hook) compares the fingerprint itself so that the connection can
say so. No message ever contains key material (key text, passphrase).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from openleadr import utils as openleadr_utils

from gateway.errors import ConfigError
from gateway.settings_vtn import FINGERPRINT_PATTERN, VtnSettings

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 5.0
"""How long the TLS check at start waits for the VTN [wall s]; openleadr's own connect timeout."""
_XMLDSIG_CERTIFICATE = ".//{http://www.w3.org/2000/09/xmldsig#}X509Certificate"


@dataclass(frozen=True)
class TlsMaterial:
    """Checked mutual-TLS material for one VTN, as openleadr's client takes it."""

    cert_path: str
    key_path: str
    ca_path: str
    vtn_fingerprint: str
    check_hostname: bool
    passphrase: str | None = field(repr=False)
    """Read from the environment at start; never logged."""
    ssl_context: ssl.SSLContext = field(repr=False)
    """The same TLS client context openleadr builds, for the handshake check."""

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of ``OpenADRClient``."""
        return {
            "cert": self.cert_path,
            "key": self.key_path,
            "passphrase": self.passphrase,
            "ca_file": self.ca_path,
            "vtn_fingerprint": self.vtn_fingerprint,
            "check_hostname": self.check_hostname,
        }


async def check_vtn_certificate(vtn: VtnSettings, tls: TlsMaterial) -> None:
    """One TLS handshake with the VTN: ConfigError when its certificate does not verify.

    openleadr reports that as an unreachable VTN, which would be retried forever. A VTN
    that cannot be reached now is left to openleadr's own attempt to report.
    """
    url = vtn.url
    host = (url.host or "").strip("[]")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, url.port, ssl=tls.ssl_context),
            timeout=HANDSHAKE_TIMEOUT_S,
        )
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(
            f"VTN {vtn.id} at {url}: its HTTPS certificate does not verify against "
            f"ca_path {tls.ca_path}: {exc.verify_message}; check ca_path and, for a "
            "host name mismatch, the url's host or check_hostname"
        ) from exc
    except ssl.SSLError as exc:
        if exc.reason == "WRONG_VERSION_NUMBER":
            raise ConfigError(
                f"VTN {vtn.id} at {url} does not speak TLS (an openleadr VTN missing "
                "any of its http_cert, http_key, http_ca_file serves plain HTTP)"
            ) from exc
        return
    except (OSError, TimeoutError):
        return
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


def load_tls_material(vtn: VtnSettings) -> TlsMaterial | None:
    """Check and gather the mutual-TLS material of ``vtn``; None for plain HTTP.

    The passphrase comes from the environment variable ``key_passphrase_env`` names. Raises
    :class:`ConfigError` naming the VTN and the key; no message contains key material.
    """
    if (
        vtn.cert_path is None
        or vtn.key_path is None
        or vtn.ca_path is None
        or vtn.vtn_fingerprint is None
    ):
        return None
    where = f"VTN {vtn.id}"
    passphrase: str | None = None
    if vtn.key_passphrase_env is not None:
        passphrase = os.environ.get(vtn.key_passphrase_env)
        if not passphrase:
            raise ConfigError(
                f"{where}: key_passphrase_env names the environment variable "
                f"{vtn.key_passphrase_env}, which is not set or empty"
            )
    cert_pem = _read_pem(where, "cert_path", vtn.cert_path)
    key_pem = _read_pem(where, "key_path", vtn.key_path)
    ca_pem = _read_pem(where, "ca_path", vtn.ca_path)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"{where}: cert_path {vtn.cert_path} is not a PEM certificate") from exc
    try:
        key = serialization.load_pem_private_key(
            key_pem, password=passphrase.encode() if passphrase else None
        )
    except TypeError as exc:  # encrypted without a passphrase or the other way round
        raise ConfigError(
            f"{where}: key_path {vtn.key_path}: {exc}; check key_passphrase_env"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"{where}: key_path {vtn.key_path} is not a PEM private key or the passphrase is wrong"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(
            f"{where}: key_path {vtn.key_path} is a {type(key).__name__}; openleadr signs "
            "only with RSA or EC keys"
        )
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ConfigError(
            f"{where}: key_path {vtn.key_path} is not the key of cert_path {vtn.cert_path}"
        )
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError as exc:
        raise ConfigError(f"{where}: ca_path {vtn.ca_path} holds no PEM certificate") from exc
    if not FINGERPRINT_PATTERN.match(vtn.vtn_fingerprint):
        raise ConfigError(
            f"{where}: vtn_fingerprint {vtn.vtn_fingerprint!r} is not 10 hex pairs joined by colons"
        )
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # as openleadr's client builds it
        context.load_verify_locations(cafile=str(vtn.ca_path))
        context.load_cert_chain(str(vtn.cert_path), str(vtn.key_path), passphrase)
        context.check_hostname = vtn.check_hostname
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{where}: cert_path, key_path or ca_path unusable for TLS: {exc.reason}"
        ) from exc
    return TlsMaterial(
        cert_path=str(vtn.cert_path),
        key_path=str(vtn.key_path),
        ca_path=str(vtn.ca_path),
        vtn_fingerprint=vtn.vtn_fingerprint,
        check_hostname=vtn.check_hostname,
        passphrase=passphrase,
        ssl_context=context,
    )


def signature_problem(content: str, expected_fingerprint: str) -> str | None:
    """Why a VTN response fails the fingerprint check openleadr applies; None when it passes
    (or is not XML at all, which openleadr reports itself)."""
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError:
        return None
    node = root.find(_XMLDSIG_CERTIFICATE)
    if node is None or not (node.text or "").strip():
        return "the VTN's response is not signed, though vtn_fingerprint is configured"
    try:
        received = str(
            openleadr_utils.certificate_fingerprint(openleadr_utils.extract_pem_cert(root))
        )
    except ValueError:
        return "the VTN's response carries an unreadable signing certificate"
    if received != expected_fingerprint:
        return (
            f"the VTN signs with a certificate whose fingerprint is {received}, not the "
            f"configured vtn_fingerprint {expected_fingerprint}"
        )
    return None


class FingerprintCheck:
    """Is each response of the VTN signed with the certificate of ``vtn_fingerprint``?

    :meth:`check` is openleadr's ``before_schema_validation`` hook of one client; openleadr
    drops a response signed otherwise, :attr:`problem` says why.

    vtn: the VTN's settings (its id names it in log lines; its ``vtn_fingerprint``, when set,
        is the certificate expected)
    """

    def __init__(self, vtn: VtnSettings) -> None:
        self._vtn_id = vtn.id
        self._expected = vtn.vtn_fingerprint
        self.problem: str | None = None
        """Why the last response of the VTN failed the check; None when it passed."""

    async def check(self, content: str) -> None:
        """openleadr's ``before_schema_validation`` hook: check the response ``content``."""
        if self._expected is None:
            return
        problem = signature_problem(content, self._expected)
        if problem is not None and problem != self.problem:
            logger.warning("VTN %s: %s", self._vtn_id, problem)
        self.problem = problem


def _read_pem(where: str, key: str, path: os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError(f"{where}: {key} {path}: cannot read: {exc.strerror}") from exc


def _public_der(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

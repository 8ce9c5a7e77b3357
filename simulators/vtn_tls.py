"""Mutual TLS of the simulated VTN: its certificate, key, CA and the VENs it knows, the HTTPS
options openleadr's server takes from them and the message signer they make
(:mod:`simulators.vtn_server` serves and signs with them, :mod:`simulators.eiopt` signs its
answers with them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from openleadr import utils
from openleadr.messaging import create_message

from gateway.errors import InputError

VenLookup = Callable[[str | None], Mapping[str, Any] | None]
"""openleadr's ``ven_lookup``: the VEN's registration and certificate fingerprint."""


@dataclass(frozen=True)
class VtnTls:
    """Mutual TLS and message signing for the simulated VTN.

    cert_path, key_path: the VTN's PEM certificate and unencrypted key: the HTTPS server
        certificate and the signer of its messages
    ca_path: the PEM CA that VEN client certificates must chain to
    ven_fingerprints: the certificate fingerprint of each VEN, by VEN name, as the utility
        would receive it out of band; a VEN not in it cannot register
    """

    cert_path: Path
    key_path: Path
    ca_path: Path
    ven_fingerprints: Mapping[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """The fingerprint of ``cert_path`` as openleadr computes it (the VEN's
        ``vtn_fingerprint``)."""
        return str(utils.certificate_fingerprint(self.cert_path.read_bytes()))


def https_options(tls: VtnTls | None) -> dict[str, Any]:
    """openleadr's HTTPS keyword arguments; all three files or it serves plain HTTP."""
    if tls is None:
        return {}
    for name in ("cert_path", "key_path", "ca_path"):
        path: Path = getattr(tls, name)
        if not path.is_file():
            raise InputError(f"VtnTls.{name}: no such file {path}")
    return {
        "http_cert": str(tls.cert_path),
        "http_key": str(tls.key_path),
        "http_ca_file": str(tls.ca_path),
        "show_fingerprint": False,
    }


def message_signer(tls: VtnTls | None) -> Callable[..., str]:
    """openleadr's ``create_message`` with the VTN's certificate and key bound: it signs every
    message with ``tls``, none without."""
    cert = key = None
    if tls is not None:
        cert, key = tls.cert_path.read_bytes(), tls.key_path.read_bytes()
    return partial(create_message, cert=cert, key=key, passphrase=None)

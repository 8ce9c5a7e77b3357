"""A throwaway PKI for tests, built at test time with ``cryptography``.

Keys (EC P-256 or RSA-2048), self-signed CA certificates and the certificates they sign, valid from
five minutes ago for a day, written as PEM files. ``tests/integration/test_ven_tls.py`` builds the
VTN's and the VEN's from these; ``tests/system/test_site_tls.py`` the site agents'.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Issuer = tuple[x509.Certificate, PrivateKey]
"""A CA: its certificate and its key."""


def new_key(key_type: KeyType) -> PrivateKey:
    """A new EC P-256 or RSA-2048 private key."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ca_certificate(subject: str, key: PrivateKey) -> x509.Certificate:
    """A self-signed CA certificate named ``subject`` that may sign leaf certificates only."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        _valid_now(x509.CertificateBuilder(), now)
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
    )
    return builder.sign(key, hashes.SHA256())


def leaf_certificate(
    subject: str,
    key: PrivateKey,
    issuer: Issuer,
    usages: Sequence[x509.ObjectIdentifier] = (),
    *,
    loopback_names: bool = False,
) -> x509.Certificate:
    """A certificate named ``subject`` for ``key``, signed by ``issuer``.

    usages: its extended key usages (``ExtendedKeyUsageOID.SERVER_AUTH``, ``CLIENT_AUTH``);
    none leaves the extension out. loopback_names: it names 127.0.0.1 and localhost as
    subject alternative names, so that a client checking the host name accepts it there.
    """
    ca, ca_key = issuer
    builder = (
        _valid_now(x509.CertificateBuilder(), datetime.now(UTC))
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), False)
    if loopback_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def _valid_now(builder: x509.CertificateBuilder, now: datetime) -> x509.CertificateBuilder:
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )


def write_key(path: Path, key: PrivateKey, passphrase: str | None = None) -> Path:
    """Write ``key`` as PKCS#8 PEM, encrypted with ``passphrase`` when given; ``path``."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase.encode())
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    """Write ``cert`` as PEM; ``path``."""
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path

"""Test certificates made with ``cryptography``: a private CA and server certificates it signs.

Not a test module. ``Authority.create(folder)`` writes ``ca.pem``; ``issue(folder, name, ips)``
writes ``NAME.pem`` and ``NAME.key`` for a server reached at those IP addresses (subject alternative
names), as ``meshnode join --tls-cert --tls-key`` reads them.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Authority", "ServerFiles"]

# Certificates valid from an hour ago (clock skew) for a day: long enough for any test run.
_VALID = datetime.timedelta(days=1)
_SKEW = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class ServerFiles:
    """Where one server certificate and its key were written."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A private certificate authority: its key, its certificate and the PEM file of it."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    pem: Path

    @classmethod
    def create(cls, folder: Path, name: str = "meshnode test CA") -> Authority:
        """A new self-signed CA, written to ``folder/ca.pem``."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        folder.mkdir(parents=True, exist_ok=True)
        pem = folder / "ca.pem"
        pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(key, certificate, pem)

    def issue(self, folder: Path, name: str, ips: Sequence[str]) -> ServerFiles:
        """A server certificate for ``ips``, signed by this CA: ``folder/NAME.pem`` and ``NAME.key``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + _VALID)
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        files = ServerFiles(folder / f"{name}.pem", folder / f"{name}.key")
        files.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        files.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        files.key.chmod(0o600)
        return files

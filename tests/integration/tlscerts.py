"""A throwaway certificate authority for TLS tests (the `cryptography` package, test extra)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Leaf:
    cert_pem: bytes
    key_pem: bytes
    serial: int
    not_after: float  # Unix time, whole seconds

    def write(self, cert: Path, key: Path) -> None:
        """Replace both files the way a rotation does: write aside, then rename over (never half a file)."""
        for path, data in ((key, self.key_pem), (cert, self.cert_pem)):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, name: str = "switchyard test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str = "gateway", hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Leaf:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(serial)
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(self.key, hashes.SHA256()))
        return Leaf(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key), serial,
                    float(int(cert.not_valid_after_utc.timestamp())))

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts only this CA and checks the host name."""
        return ssl.create_default_context(cadata=self.pem.decode())


def serial_of(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number

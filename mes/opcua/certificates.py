"""OPC UA application certificates and the MES's trust list of the tools' server certificates.

``make_certificate`` and ``save`` serve both sides: ``mes opcua make-certificate`` makes the
MES's client certificate with them, and the simulated tools make their server certificates
(``equipment_sims`` imports this module, so it imports nothing else of ``mes``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CERTIFICATE_SUFFIXES = (".der", ".pem")


def make_certificate(
    app_uri: str,
    common_name: str,
    host: str,
    *,
    server: bool,
    organization: str = "fab-mes",
    days: int = 365,
) -> tuple[bytes, bytes]:
    """(PEM private key, DER certificate): a self-signed OPC UA application certificate naming
    ``app_uri`` (peers check it against the application description) and ``host``."""
    key: rsa.RSAPrivateKey = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(app_uri),
        x509.DNSName(socket.gethostname()),
        x509.DNSName("localhost"),
    ]
    try:
        address: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        address = x509.DNSName(host)
    if address not in names:
        names.append(address)
    use = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = cert_gen.generate_self_signed_app_certificate(
        key, common_name, {"organizationName": organization}, names, [use], days=days
    )
    return cert_gen.dump_private_key_as_pem(key), cert.public_bytes(serialization.Encoding.DER)


def save(key: bytes, cert: bytes, key_file: Path, cert_file: Path) -> None:
    """Write a key (owner-only) and its certificate, each atomically, so that concurrent
    writers (several sims starting at once) never leave a half-written file."""
    key_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(key_file, key, private=True)
    _write_atomic(cert_file, cert)


def load(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def application_uri(path: Path) -> str:
    """The application URI a certificate names (its first URI subjectAltName): a client must
    present that same URI, so it is read from the certificate rather than configured twice."""
    cert = load(path)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise ValueError(f"{path}: the certificate names no application URI (subjectAltName)")
    return uris[0]


def describe(cert: x509.Certificate) -> str:
    """'CN=…, SHA-1 …': enough for an operator to find the certificate in a folder."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else "?"
    der = cert.public_bytes(serialization.Encoding.DER)
    return f"CN={cn}, SHA-1 {hashlib.sha1(der, usedforsecurity=False).hexdigest()}"


@dataclass
class Refusal:
    certificate: x509.Certificate
    status: str


class ServerTrustList:
    """Validates a tool's server certificate against the folder of trusted ones (asyncua's
    ``Client.certificate_validator`` hook). The folder is read at every session, so a
    certificate dropped into it counts at the next reconnect; the last refusal is kept so the
    session can say which side refused what."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.refused: Refusal | None = None

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        self.refused = None
        try:
            if not self._has_certificates():  # cryptography refuses an empty store
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
            store = TrustStore([self.folder], [])
            await store.load()
            options = (
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_SERVER
            )
            await CertificateValidator(options, store).validate(cert, app)
        except ServiceError as exc:
            self.refused = Refusal(cert, ua.StatusCode(exc.code).name)
            log.warning("refused server certificate %s (%s)", describe(cert), self.refused.status)
            raise

    def _has_certificates(self) -> bool:
        return self.folder.is_dir() and any(
            p.suffix.lower() in CERTIFICATE_SUFFIXES for p in self.folder.iterdir()
        )


def _write_atomic(path: Path, data: bytes, *, private: bool = False) -> None:
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    # Created owner-only from the start: a key must never be readable, even for a moment.
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(scratch, path)

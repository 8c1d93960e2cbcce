"""Certificates of the simulated tools and the trust list of client certificates they accept.

Layout of a PKI folder (the launcher's ``--pki-dir``)::

    own/<tool-id>.der        the tool's self-signed application certificate (made on first run)
    own/<tool-id>.pem        its private key (PEM, unencrypted)
    trusted/                 client certificates (.der or .pem) that every tool accepts
    rejected/                certificates of clients that were refused (move one into trusted/
                             to accept that client)

The trust list is read again at every session a client opens, so a certificate put into
``trusted/`` counts at once, without restarting the tools.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.security_policies import SecurityPolicyNone
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mes.opcua.certificates import make_certificate, save

log = logging.getLogger(__name__)


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "equipment_sims"


DEFAULT_PKI_DIR = user_cache_dir() / "pki"
RENEW_BEFORE = timedelta(days=7)


class Security(StrEnum):
    """Which endpoints a tool offers."""

    NONE = "none"  # SecurityPolicy None only (no certificates at all)
    OPTIONAL = "optional"  # None, and Basic256Sha256 Sign / SignAndEncrypt
    REQUIRED = "required"  # Basic256Sha256 Sign / SignAndEncrypt only

    def policies(self) -> list[ua.SecurityPolicyType]:
        secure = [
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ua.SecurityPolicyType.Basic256Sha256_Sign,
        ]
        if self is Security.NONE:
            return [ua.SecurityPolicyType.NoSecurity]
        if self is Security.OPTIONAL:
            return [ua.SecurityPolicyType.NoSecurity, *secure]
        return secure


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.own = root / "own"
        self.trusted = root / "trusted"
        self.rejected = root / "rejected"

    def server_files(self, tool_id: str) -> tuple[Path, Path]:
        return self.own / f"{tool_id}.der", self.own / f"{tool_id}.pem"

    def server_certificate(self, tool_id: str, app_uri: str, host: str) -> tuple[Path, Path]:
        """The tool's certificate and key, made (or renewed) when missing, expiring or not
        matching ``app_uri``; written atomically, so concurrent starts agree."""
        for folder in (self.own, self.trusted, self.rejected):
            folder.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = self.server_files(tool_id)
        if _usable(cert_file, key_file, app_uri):
            return cert_file, key_file
        key, cert = make_certificate(
            app_uri, tool_id, host, server=True, organization="fab-mes equipment_sims"
        )
        save(key, cert, key_file, cert_file)
        log.info("%s: new server certificate %s", tool_id, cert_file)
        return cert_file, key_file

    def trust(self, certificate: Path) -> Path:
        """Add a client certificate (.der or .pem) to the trust list."""
        self.trusted.mkdir(parents=True, exist_ok=True)
        suffix = ".pem" if certificate.read_bytes().startswith(b"-----BEGIN") else ".der"
        target = self.trusted / f"{certificate.stem}{suffix}"
        shutil.copyfile(certificate, target)
        return target

    def validator(
        self, channel_policy: Callable[[], str | None] = lambda: None
    ) -> TrustListValidator:
        return TrustListValidator(self, channel_policy)

    def has_trusted(self) -> bool:
        return self.trusted.is_dir() and any(
            p.suffix.lower() in (".der", ".pem") for p in self.trusted.iterdir()
        )


class TrustListValidator:
    """asyncua's certificate-validation hook: full checks plus the trust list, read afresh
    for every session; a refused certificate is kept in ``rejected/``.

    ``channel_policy`` tells the security policy URI of the secure channel the session is
    created on, when known: on a SecurityPolicy None channel the client certificate is ignored
    (OPC UA Part 4, CreateSession), as some clients (node-opcua, UaExpert) always send one.
    """

    def __init__(self, pki: Pki, channel_policy: Callable[[], str | None]) -> None:
        self.pki = pki
        self.channel_policy = channel_policy

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        if self.channel_policy() == SecurityPolicyNone.URI:
            return
        options = (
            CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
        )
        try:
            if not self.pki.has_trusted():  # TrustStore cannot be empty
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
            store = TrustStore([self.pki.trusted], [])
            await store.load()
            await CertificateValidator(options, store).validate(cert, app)
        except ServiceError:
            der = cert.public_bytes(serialization.Encoding.DER)
            name = hashlib.sha1(der, usedforsecurity=False).hexdigest()
            self.pki.rejected.mkdir(parents=True, exist_ok=True)
            (self.pki.rejected / f"{name}.der").write_bytes(der)
            log.warning("refused client certificate %s (%s)", name, app.ApplicationUri)
            raise


def _usable(cert_file: Path, key_file: Path, app_uri: str) -> bool:
    if not (cert_file.is_file() and key_file.is_file()):
        return False
    try:
        cert = x509.load_der_x509_certificate(cert_file.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    fresh = cert.not_valid_after_utc - RENEW_BEFORE > datetime.now(UTC)
    return fresh and app_uri in san.get_values_for_type(x509.UniformResourceIdentifier)

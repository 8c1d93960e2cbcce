"""The security a tool session is set up with (OPC UA policy, certificates, trust), and the
error that says which side refused it. Lives apart from the session (``client``), which
re-exports it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mes.opcua import certificates


@dataclass(frozen=True)
class Security:
    """Client security: policy ``None``, or ``Basic256Sha256`` (``Sign``/``SignAndEncrypt``)
    with the MES's client certificate and key. ``trust_dir``: the tools' server certificates
    the MES trusts (a tool presenting another one is refused); unset, any server certificate
    is accepted (encrypted, but the tool is not authenticated). ``server_certificate`` pins
    one certificate instead (a single-tool setup)."""

    policy: str = "None"
    mode: str = "SignAndEncrypt"
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None
    trust_dir: str | None = None

    @property
    def enabled(self) -> bool:
        return self.policy != "None"

    def check(self) -> None:
        """Refuse at start-up what could only fail at every connect later."""
        if not self.enabled:
            return
        if not (self.certificate and self.private_key):
            raise ValueError(
                f"OPC UA security policy {self.policy} needs the MES client certificate and "
                "private key (MES_OPCUA_CERTIFICATE, MES_OPCUA_PRIVATE_KEY; make them with "
                "`mes opcua make-certificate`)"
            )
        for what, path in (("certificate", self.certificate), ("private key", self.private_key)):
            if not Path(path).is_file():
                raise ValueError(f"OPC UA client {what} {path}: no such file")
        certificates.application_uri(Path(self.certificate))
        if self.trust_dir is not None and not Path(self.trust_dir).is_dir():
            raise ValueError(f"OPC UA trust folder {self.trust_dir}: no such folder")


class SecurityRefused(Exception):
    """The secure session could not be set up: a certificate was refused (by either side) or
    the tool offers no endpoint with the configured security. Retrying alone will not help."""

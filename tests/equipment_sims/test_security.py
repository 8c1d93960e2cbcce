"""Security of a simulated tool: Basic256Sha256 with a trust list of client certificates."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509

from equipment_sims.pki import Pki, Security
from equipment_sims.server import SimServer
from mes.opcua import model as m
from mes.opcua.certificates import make_certificate

from .conftest import LITHO_BODY, TIMEOUT, SimFactory, ToolClient, litho


def client_certificate(folder: Path, name: str) -> tuple[Path, Path, str]:
    """(certificate, key, application URI) of a test client."""
    uri = f"urn:fab-mes:test:{name}"
    key, cert = make_certificate(uri, name, "127.0.0.1", server=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.der").write_bytes(cert)
    (folder / f"{name}.pem").write_bytes(key)
    return folder / f"{name}.der", folder / f"{name}.pem", uri


@pytest.fixture(scope="session")
def clients(tmp_path_factory: pytest.TempPathFactory, pki_dir: Path) -> dict[str, tuple]:
    folder = tmp_path_factory.mktemp("clients")
    trusted = client_certificate(folder, "mes")
    untrusted = client_certificate(folder, "stranger")
    Pki(pki_dir).trust(trusted[0])
    return {"trusted": trusted, "untrusted": untrusted}


async def secure_client(
    sim: SimServer,
    cert: tuple[Path, Path, str],
    mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
) -> Client:
    client = Client(sim.endpoint, timeout=TIMEOUT)
    client.application_uri = cert[2]
    assert sim.certificate is not None
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        certificate=str(cert[0]),
        private_key=str(cert[1]),
        server_certificate=str(sim.certificate),
        mode=mode,
    )
    return client


async def test_trusted_client_signs_and_encrypts_and_calls_methods(
    make_sim: SimFactory, pki_dir: Path, clients: dict[str, tuple]
) -> None:
    sim = await make_sim(litho(), pki_dir=pki_dir)
    assert sim.security is Security.OPTIONAL
    assert sim.certificate == pki_dir / "own" / "LI01.der"
    cert = x509.load_der_x509_certificate(sim.certificate.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sim.app_uri in san.get_values_for_type(x509.UniformResourceIdentifier)

    for mode in (ua.MessageSecurityMode.SignAndEncrypt, ua.MessageSecurityMode.Sign):
        async with await secure_client(sim, clients["trusted"], mode) as client:
            tc = ToolClient(client, "LI01")
            await tc.setup()
            await tc.download(f"R-{mode.name}", LITHO_BODY)
            assert f"R-{mode.name}" in await tc.read(m.RECIPES, m.RECIPE_LIST)

    # None is still offered when security is optional.
    async with Client(sim.endpoint, timeout=TIMEOUT) as plain:
        tc = ToolClient(plain, "LI01")
        await tc.setup()
        assert await tc.read(m.CONTROL, m.CONTROL_STATE) == "OnlineRemote"
        endpoints = await plain.get_endpoints()
    offered = {(e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode.name) for e in endpoints}
    assert offered == {
        ("None", "None_"),
        ("Basic256Sha256", "Sign"),
        ("Basic256Sha256", "SignAndEncrypt"),
    }


async def test_untrusted_client_is_refused_until_trusted(
    make_sim: SimFactory, pki_dir: Path, clients: dict[str, tuple]
) -> None:
    sim = await make_sim(litho("LI02"), pki_dir=pki_dir)
    client = await secure_client(sim, clients["untrusted"])
    with pytest.raises(ua.UaStatusCodeError) as refused:
        await client.connect()
    assert refused.value.code == ua.StatusCodes.BadCertificateUntrusted
    with contextlib.suppress(Exception):
        await client.disconnect()
    assert any((pki_dir / "rejected").iterdir())  # kept for an operator to move into trusted/

    # Trusting it takes effect at the next session, without a restart.
    trusted = Pki(pki_dir).trust(clients["untrusted"][0])
    try:
        async with await secure_client(sim, clients["untrusted"]) as client:
            tc = ToolClient(client, "LI02")
            await tc.setup()
            assert await tc.read(m.CONTROL, m.CONTROL_STATE) == "OnlineRemote"
    finally:
        trusted.unlink()


async def test_security_required_offers_no_none_endpoint(
    make_sim: SimFactory, pki_dir: Path, clients: dict[str, tuple]
) -> None:
    sim = await make_sim(litho("LI03"), pki_dir=pki_dir, security=Security.REQUIRED)
    plain = Client(sim.endpoint, timeout=TIMEOUT)
    endpoints = await plain.connect_and_get_server_endpoints()
    assert {e.SecurityMode for e in endpoints} == {
        ua.MessageSecurityMode.Sign,
        ua.MessageSecurityMode.SignAndEncrypt,
    }
    with pytest.raises((ua.UaError, OSError, TimeoutError)):
        await plain.connect()
    with contextlib.suppress(Exception):
        await plain.disconnect()
    async with await secure_client(sim, clients["trusted"]) as client:
        tc = ToolClient(client, "LI03")
        await tc.setup()
        result = await tc.call(m.CONTROL, m.GO_ONLINE_LOCAL)
        assert result == m.RETURN_OK
        assert await tc.read(m.CONTROL, m.CONTROL_STATE) == "OnlineLocal"


def test_server_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.server_certificate("T1", "urn:fab-mes:sim:T1", "127.0.0.1")
    first = cert.read_bytes()
    assert key.stat().st_mode & 0o077 == 0
    assert pki.server_certificate("T1", "urn:fab-mes:sim:T1", "127.0.0.1") == (cert, key)
    assert cert.read_bytes() == first
    # Another application URI (a renamed tool) gets a new certificate.
    pki.server_certificate("T1", "urn:fab-mes:sim:T1-renamed", "127.0.0.1")
    assert cert.read_bytes() != first


def test_security_needs_a_pki_folder() -> None:
    from equipment_sims.clock import SimClock

    with pytest.raises(ValueError, match="PKI"):
        SimServer(litho(), clock=SimClock(1.0), security=Security.REQUIRED)

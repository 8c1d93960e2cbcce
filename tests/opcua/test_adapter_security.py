"""The adapter over Basic256Sha256 SignAndEncrypt: trust lists on both sides, and clear errors
in the connection state when either side refuses (real sims over loopback, real certificates).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from equipment_sims.pki import Pki
from equipment_sims.pki import Security as SimSecurity
from mes.cli import app as cli
from mes.opcua.client import Security

from .conftest import Fab, wait_for

WET = "T1-WET01"
SIM_APP_URI = f"urn:fab-mes:sim:{WET}"


@dataclass(frozen=True)
class Certificates:
    mes_certificate: Path
    mes_key: Path
    sim_own: Path  # a PKI ``own/`` folder holding the sim's server certificate and key


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Made once per run (RSA key generation is slow-ish); the MES's with the CLI command."""
    out = tmp_path_factory.mktemp("mes-cert")
    result = CliRunner().invoke(
        cli, ["opcua", "make-certificate", "--out", str(out), "--host", "127.0.0.1"]
    )
    assert result.exit_code == 0, result.output
    assert f"MES_OPCUA_CERTIFICATE={out / 'mes.der'}" in result.output
    sim_pki = Pki(tmp_path_factory.mktemp("sim-pki"))
    sim_pki.server_certificate(WET, SIM_APP_URI, "127.0.0.1")
    return Certificates(out / "mes.der", out / "mes.pem", sim_pki.own)


@dataclass(frozen=True)
class World:
    sim_pki: Pki
    mes_trust: Path
    sim_certificate: Path


@pytest.fixture
def world(certs: Certificates, tmp_path: Path) -> World:
    """A fresh sim PKI (its certificate copied, nothing trusted) and an empty MES trust folder."""
    sim_pki = Pki(tmp_path / "sim-pki")
    shutil.copytree(certs.sim_own, sim_pki.own)
    mes_trust = tmp_path / "mes-trust"
    mes_trust.mkdir()
    return World(sim_pki, mes_trust, sim_pki.own / f"{WET}.der")


def secure(certs: Certificates, trust_dir: Path) -> Security:
    return Security(
        policy="Basic256Sha256",
        mode="SignAndEncrypt",
        certificate=str(certs.mes_certificate),
        private_key=str(certs.mes_key),
        trust_dir=str(trust_dir),
    )


async def _connection_is(fab: Fab, state: str, *error_parts: str) -> bool:
    c = await fab.connection(WET)
    error = c["last_error"] or ""
    return bool(c["state"] == state and all(part in error for part in error_parts))


async def _refused(fab: Fab, *error_parts: str) -> dict[str, Any]:
    await wait_for(
        lambda: _connection_is(fab, "disconnected", *error_parts),
        f"{WET} refused with {error_parts}",
        within=15,
    )
    return await fab.connection(WET)


async def test_a_job_runs_over_an_encrypted_session(
    fab: Fab, certs: Certificates, world: World
) -> None:
    world.sim_pki.trust(certs.mes_certificate)
    shutil.copyfile(world.sim_certificate, world.mes_trust / "wet01.der")
    await fab.start_sim(WET, pki_dir=world.sim_pki.root, security=SimSecurity.REQUIRED)
    registry = fab.start_adapter(security=secure(certs, world.mes_trust))
    await wait_for(lambda: _connection_is(fab, "connected"), f"{WET} connected", within=15)
    adapter = next(a for a in registry.adapters.values() if a.tool.code == WET)
    assert adapter._session is not None
    policy = adapter._session.client.security_policy
    assert policy.URI.endswith("#Basic256Sha256")
    assert policy.Mode.name == "SignAndEncrypt"

    lot = await fab.start_lot(wafers=3)
    job = await fab.request_job(lot, WET)
    assert job["status"] == "requested"
    done = await fab.wait_job(job["job_order_id"], "completed", "failed", "aborted")
    assert done["status"] == "completed", done
    times = [
        datetime.fromisoformat(done[f"{t}_at"]) for t in ("requested", "sent", "started", "ended")
    ]
    assert times == sorted(times)  # requested → sent → running → completed
    assert done["wafers_processed"] == 3
    assert list(fab.sims[WET].tool.jobs) == [job["job_order_id"]]
    history = [e["event_type"] for e in await fab.history(lot)]
    assert history.count("TRACK_IN") == 1
    assert history.count("TRACK_OUT") == 1
    assert not list(world.sim_pki.rejected.iterdir())


async def test_an_untrusted_mes_certificate_connects_once_the_tool_trusts_it(
    fab: Fab, certs: Certificates, world: World
) -> None:
    shutil.copyfile(world.sim_certificate, world.mes_trust / "wet01.der")
    await fab.start_sim(WET, pki_dir=world.sim_pki.root, security=SimSecurity.REQUIRED)
    fab.start_adapter(security=secure(certs, world.mes_trust))
    refused = await _refused(fab, "the tool refused the MES client certificate")
    assert "BadCertificateUntrusted" in refused["last_error"]
    assert str(certs.mes_certificate) in refused["last_error"]
    rejected = list(world.sim_pki.rejected.iterdir())
    assert len(rejected) == 1
    assert rejected[0].read_bytes() == certs.mes_certificate.read_bytes()

    # What an operator does: move the refused certificate into the tool's trust list. The
    # adapter's next retry gets in; nothing is restarted.
    rejected[0].rename(world.sim_pki.trusted / rejected[0].name)
    await wait_for(lambda: _connection_is(fab, "connected"), f"{WET} connected", within=15)
    assert (await fab.connection(WET))["last_error"] is None


async def test_a_tool_certificate_the_mes_does_not_trust_is_refused(
    fab: Fab, certs: Certificates, world: World
) -> None:
    world.sim_pki.trust(certs.mes_certificate)
    # The trust folder holds a certificate, just not the tool's.
    shutil.copyfile(certs.mes_certificate, world.mes_trust / "someone-else.der")
    sim = await fab.start_sim(WET, pki_dir=world.sim_pki.root, security=SimSecurity.REQUIRED)
    fab.start_adapter(security=secure(certs, world.mes_trust))
    refused = await _refused(fab, "the MES refused the tool's certificate", "CN=T1-WET01")
    error = refused["last_error"]
    assert error.startswith("SecurityRefused: ")
    assert "BadCertificateUntrusted" in error
    assert str(world.mes_trust) in error
    assert sim.tool.jobs == {}


async def test_no_security_against_a_tool_that_requires_it_is_a_clear_error(
    fab: Fab, world: World
) -> None:
    await fab.start_sim(WET, pki_dir=world.sim_pki.root, security=SimSecurity.REQUIRED)
    fab.start_adapter(security=Security())
    refused = await _refused(fab, "the tool offers no endpoint with security None")
    assert "Basic256Sha256/SignAndEncrypt" in refused["last_error"]
    assert "MES_OPCUA_SECURITY_POLICY" in refused["last_error"]


def test_security_without_a_certificate_is_refused_at_start_up(
    certs: Certificates, tmp_path: Path
) -> None:
    from pydantic import ValidationError

    from mes.config import Settings
    from mes.opcua.runtime import adapter_settings

    with pytest.raises(ValidationError, match="needs MES_OPCUA_CERTIFICATE"):
        Settings(opcua_security_policy="Basic256Sha256", opcua_certificate=None)
    missing = Settings(
        opcua_security_policy="Basic256Sha256",
        opcua_certificate=str(tmp_path / "nowhere.der"),
        opcua_private_key=str(certs.mes_key),
    )
    with pytest.raises(ValueError, match=r"certificate .*nowhere\.der: no such file"):
        adapter_settings(missing)
    ok = Settings(
        opcua_security_policy="Basic256Sha256",
        opcua_certificate=str(certs.mes_certificate),
        opcua_private_key=str(certs.mes_key),
        opcua_trust_dir=str(tmp_path),
    )
    assert adapter_settings(ok).security == secure(certs, tmp_path)


def test_make_certificate_does_not_overwrite(certs: Certificates) -> None:
    before = certs.mes_certificate.read_bytes()
    out = certs.mes_certificate.parent
    result = CliRunner().invoke(cli, ["opcua", "make-certificate", "--out", str(out)])
    assert result.exit_code == 2
    assert "--force" in result.output
    assert certs.mes_certificate.read_bytes() == before

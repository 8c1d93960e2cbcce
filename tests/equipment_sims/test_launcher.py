"""A whole fab of simulators from a fab description, in-process and through the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest
from asyncua import Client

from equipment_sims.__main__ import main
from equipment_sims.fab import load_fab
from equipment_sims.launcher import SimFab
from equipment_sims.pki import Security
from mes.opcua import model as m

from .conftest import LITHO_BODY, TIMEOUT, ToolClient, free_port, job_order

EXAMPLE = Path(__file__).resolve().parents[2] / "equipment_sims" / "examples" / "fab.json"


async def test_sim_fab_serves_every_tool_on_consecutive_ports(
    shelf_dir: Path, pki_dir: Path
) -> None:
    specs = load_fab(EXAMPLE, base_port=free_port())
    async with SimFab(specs, speed=3000, seed=3, shelf_dir=shelf_dir, pki_dir=pki_dir) as fab:
        assert {s.security for s in fab.servers.values()} == {Security.OPTIONAL}
        assert all(s.certificate and s.certificate.exists() for s in fab.servers.values())
        assert [s.port for s in fab.servers.values()] == [specs[0].port + i for i in range(6)]
        assert len({id(s.clock) for s in fab.servers.values()}) == 1  # one clock for the fab
        for server in fab.servers.values():
            async with Client(server.endpoint, timeout=TIMEOUT) as client:
                tc = ToolClient(client, server.spec.tool_id)
                await tc.setup()
                kind = await tc.read(m.IDENTIFICATION, (m.NS_DI, "DeviceClass"))
                assert kind.endswith(server.spec.kind.value)
        litho = fab["LITHO01"]
        async with Client(litho.endpoint, timeout=TIMEOUT) as client:
            tc = ToolClient(client, "LITHO01")
            await tc.setup()
            await tc.download("R1", LITHO_BODY)
            await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", [1, 2])), "")
            assert (await tc.wait_job("J1", "Ended")).JobSubstate == "Completed"


async def test_the_journal_holds_every_job_state_change_the_tools_made(
    shelf_dir: Path, tmp_path: Path
) -> None:
    specs = load_fab(EXAMPLE, base_port=free_port(), only={"LITHO01"})
    journal = tmp_path / "jobs.jsonl"
    fab = SimFab(specs, speed=3000, shelf_dir=shelf_dir, pki_dir=None, journal=journal)
    async with fab, Client(fab["LITHO01"].endpoint, timeout=TIMEOUT) as client:
        tc = ToolClient(client, "LITHO01")
        await tc.setup()
        await tc.download("R1", LITHO_BODY)
        for job in ("J1", "J2"):
            await tc.job("StoreAndStart", job_order(job, "R1", ("L1", [1, 2])), "")
            await tc.wait_job(job, "Ended")
            await tc.job("Clear", job, "")
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    for job in ("J1", "J2"):
        mine = [r for r in records if r["job"] == job]
        assert all(r["tool"] == "LITHO01" and r["lots"] == ["L1"] for r in mine)
        assert [r["state"] for r in mine][-2:] == ["Running", "Ended"]
        assert mine[-1]["processed"] == 2
        # One start: every record after it carries the same start time.
        assert len({r["started"] for r in mine if r["started"] is not None}) == 1


async def test_cli_serves_the_fab_and_injects_faults(shelf_dir: Path, pki_dir: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "equipment_sims",
        "--fab",
        str(EXAMPLE),
        "--only",
        "ETCH01",
        "--base-port",
        str(port),
        "--shelf-dir",
        str(shelf_dir),
        "--pki-dir",
        str(pki_dir),
        "--fault-rate",
        "0.5",
        "--fault-kinds",
        "alarm,chamber_down",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        banner = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        endpoint = f"opc.tcp://127.0.0.1:{port}/ETCH01"
        assert endpoint in banner.decode()
        fault = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "equipment_sims",
            "fault",
            endpoint,
            "chamber_down",
            json.dumps({"chamber": "PM3"}),
        )
        assert await asyncio.wait_for(fault.wait(), TIMEOUT) == 0
        async with Client(endpoint, timeout=TIMEOUT) as client:
            tc = ToolClient(client, "ETCH01")
            await tc.setup()
            for _ in range(200):
                if await tc.read(m.CHAMBERS, "PM3", m.CHAMBER_STATE) == "Down":
                    break
                await asyncio.sleep(0.05)
            assert await tc.read(m.CHAMBERS, "PM3", m.CHAMBER_STATE) == "Down"
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0


async def test_a_fab_with_a_state_dir_starts_where_it_stopped(
    shelf_dir: Path, tmp_path: Path
) -> None:
    specs = load_fab(EXAMPLE, base_port=free_port(), only={"LITHO01"})
    options = {"shelf_dir": shelf_dir, "pki_dir": None, "state_dir": tmp_path}
    async with (
        SimFab(specs, speed=3000, **options) as fab,
        Client(fab["LITHO01"].endpoint, timeout=TIMEOUT) as client,
    ):
        tc = ToolClient(client, "LITHO01")
        await tc.setup()
        await tc.download("R1", LITHO_BODY)
        await tc.job("StoreAndStart", job_order("J1", "R1", ("L1", [1, 2])), "")
        await tc.wait_job("J1", "Ended")
    assert (tmp_path / "LITHO01.json").exists()
    async with (
        SimFab(specs, speed=3000, **options) as fab,  # a new process, as it were
        Client(fab["LITHO01"].endpoint, timeout=TIMEOUT) as client,
    ):
        tc = ToolClient(client, "LITHO01")
        await tc.setup()
        assert await tc.read(m.RECIPES, m.RECIPE_LIST) == ["R1"]
        assert await tc.read(m.COUNTERS, m.WAFERS_PROCESSED_TOTAL) == 2


def test_cli_adds_a_client_certificate_to_the_trust_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = tmp_path / "mes-client.der"
    cert.write_bytes(b"0\x82not-really-a-certificate")
    main(["trust", str(cert), "--pki-dir", str(tmp_path / "pki")])
    assert (tmp_path / "pki" / "trusted" / "mes-client.der").read_bytes() == cert.read_bytes()
    assert "trusted" in capsys.readouterr().out

"""Interoperability: node-opcua (a second, unrelated OPC UA stack) drives a simulated tool.

``tests/interop/node/probe.js`` gets a plan built here from the tool contract
(``mes/opcua/model.py``): it browses the machine, reads ControlState and the item state, goes
OnlineRemote, downloads and selects a recipe, has a bad job order refused, starts a job with
StoreAndStart and waits for the job status event saying it Ended. Install the client with
``npm ci --prefix tests/interop/node`` (``.ci/run`` does when node is present).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from equipment_sims.clock import SimClock
from equipment_sims.pki import Pki
from equipment_sims.server import SimServer
from equipment_sims.spec import ToolSpec
from mes.opcua import model as m
from mes.opcua.certificates import make_certificate
from mes.opcua.model import ControlState, ProcessingKind

from ..equipment_sims.conftest import LITHO_BODY, free_port, job_order

NODE_DIR = Path(__file__).parent / "node"
PROBE = NODE_DIR / "probe.js"
NODE = shutil.which("node")
INSTALLED = (NODE_DIR / "node_modules" / "node-opcua-client" / "package.json").exists()

pytestmark = pytest.mark.skipif(
    NODE is None or not INSTALLED,
    reason=(
        "node-opcua interop test needs `node` and `npm ci --prefix tests/interop/node` "
        f"(node: {NODE or 'absent'}; node-opcua-client installed: {INSTALLED})"
    ),
)

TOOL = "LI-NODE"


def plan(endpoint: str, scratch: Path) -> dict[str, Any]:
    fab = m.NS_FAB
    job_control = [m.BUILDING_BLOCKS, m.JOB_MANAGEMENT, m.JOB_ORDER_CONTROL]
    body = json.dumps(LITHO_BODY)

    def call(label: str, obj: list[m.BrowseName], method: m.BrowseName, *args: str) -> Any:
        return {"label": label, "object": obj, "method": method, "args": list(args)}

    return {
        "endpoint": endpoint,
        "scratch": str(scratch),
        "timeoutMs": 30_000,
        "namespaces": [m.NS_DI, m.NS_MACHINERY, m.NS_MACHINERY_JOBS, m.NS_ISA95_JOBS, fab],
        "machine": [m.MACHINES, (fab, TOOL)],
        "reads": {
            "ControlState": [m.CONTROL, (fab, m.CONTROL_STATE)],
            "ItemState": [m.BUILDING_BLOCKS, m.ITEM_STATE, m.CURRENT_STATE],
            "Manufacturer": [m.IDENTIFICATION, (m.NS_DI, "Manufacturer")],
        },
        "calls": [
            call("GoOnlineRemote", [m.CONTROL], (fab, m.GO_ONLINE_REMOTE)),
            call(
                "DownloadRecipe",
                [m.RECIPES],
                (fab, m.DOWNLOAD_RECIPE),
                "R-NODE",
                body,
                m.recipe_checksum(LITHO_BODY),
            ),
            call("SelectRecipe", [m.RECIPES], (fab, m.SELECT_RECIPE), "R-NODE"),
            call("StoreBad", job_control, (m.NS_ISA95_JOBS, "Store"), "not json", ""),
            call(
                "StoreAndStart",
                job_control,
                (m.NS_ISA95_JOBS, "StoreAndStart"),
                job_order("J-NODE", "R-NODE", ("L-NODE", [1, 2])),
                "from node-opcua",
            ),
        ],
        "eventFields": [
            (fab, "JobOrderID"),
            (fab, "JobState"),
            (fab, "JobSubstate"),
            (fab, "JobResponse"),
            (fab, m.EVENT_SEQUENCE),
        ],
        "waitFor": {
            "field": "JobOrderID",
            "equals": "J-NODE",
            "stateField": "JobState",
            "states": ["Ended"],
        },
    }


def node_client_certificate(folder: Path, pki: Pki) -> dict[str, str]:
    """A client certificate for node-opcua (PEM files), put on the tools' trust list."""
    uri = "urn:fab-mes:interop:node-opcua-secure"
    key, der = make_certificate(uri, "node-opcua probe", "127.0.0.1", server=False)
    cert = x509.load_der_x509_certificate(der)
    (folder / "node-client.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "node-client.key").write_bytes(key)
    pki.trust(folder / "node-client.pem")
    return {
        "mode": "SignAndEncrypt",
        "policy": "Basic256Sha256",
        "applicationUri": uri,
        "certificateFile": str(folder / "node-client.pem"),
        "privateKeyFile": str(folder / "node-client.key"),
    }


@pytest.mark.parametrize("secure", [False, True], ids=["None", "Basic256Sha256"])
async def test_node_opcua_client_runs_a_job_on_a_simulated_tool(
    shelf_dir: Path, pki_dir: Path, tmp_path: Path, secure: bool
) -> None:
    spec = ToolSpec(TOOL, ProcessingKind.SINGLE_WAFER, "litho", tool_group="LITHO_193")
    sim = SimServer(
        spec,
        clock=SimClock(600.0),
        port=free_port(),
        shelf_dir=shelf_dir,
        pki_dir=pki_dir,  # None and Basic256Sha256 offered; node-opcua uses None
        control_state=ControlState.ONLINE_LOCAL,
    )
    steps = plan(sim.endpoint, tmp_path)
    if secure:
        steps["security"] = node_client_certificate(tmp_path, Pki(pki_dir))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(steps))
    assert NODE is not None
    async with sim:
        proc = await asyncio.create_subprocess_exec(
            NODE,
            str(PROBE),
            str(plan_file),
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 90)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("PROBE-RESULT ")]
    assert lines, f"no result from the probe\nstdout: {out.decode()}\nstderr: {err.decode()}"
    result = json.loads(lines[-1].removeprefix("PROBE-RESULT "))
    assert "error" not in result, result.get("error")
    assert proc.returncode == 0
    assert result["channel"]["mode"] == ("SignAndEncrypt" if secure else "None")
    assert result["channel"]["policy"].endswith("#Basic256Sha256" if secure else "#None")

    assert {"Identification", "MachineryBuildingBlocks", "Recipes", "Control"} <= set(
        result["children"]
    )
    assert result["reads"]["ControlState"] == {"status": "Good", "value": "OnlineLocal"}
    assert result["reads"]["ItemState"]["value"] == "NotExecuting"
    assert result["reads"]["Manufacturer"]["value"] == spec.manufacturer
    calls = result["calls"]
    assert calls["GoOnlineRemote"]["status"] == "Good"
    assert calls["DownloadRecipe"]["status"] == "Good"
    assert calls["SelectRecipe"]["status"] == "Good"
    assert calls["StoreBad"]["status"] == "BadInvalidArgument"
    assert calls["StoreAndStart"]["status"] == "Good"

    ended = result["jobEvent"]
    assert ended["JobSubstate"] == "Completed"
    assert ended["SourceName"] == TOOL
    assert json.loads(ended["JobResponse"])["WafersProcessed"] == 2
    states = [e["JobState"] for e in result["events"] if e["JobOrderID"] == "J-NODE"]
    assert states[0] == "AllowedToStart"
    assert "Running" in states
    sequences = [e[m.EVENT_SEQUENCE] for e in result["events"] if e.get(m.EVENT_SEQUENCE)]
    assert sequences == sorted(sequences)

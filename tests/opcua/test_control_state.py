"""The MES records the tool's SEMI E30 control state as the tool reports it, and the dispatcher
offers no lot to a tool that does not take remote jobs (anything but OnlineRemote)."""

from __future__ import annotations

from .conftest import Fab, wait_for
from .test_adapter_faults import DEP, _ready


async def _control_state(fab: Fab, tool: str) -> str | None:
    return (await fab.tool(tool)).get("control_state")


async def test_a_tool_switched_to_local_is_recorded_and_not_dispatched_to(fab: Fab) -> None:
    await _ready(fab, DEP)
    await wait_for(
        lambda: _is(fab, DEP, "OnlineRemote"), "the control state recorded at connect", within=15
    )
    await fab.sims[DEP].set_control_state(state="OnlineLocal")
    await wait_for(lambda: _is(fab, DEP, "OnlineLocal"), "the switch to local recorded", within=15)
    listing = (await fab.api.get(f"/api/v1/dispatch/tools/{DEP}/list")).json()
    assert listing["tool_blocked"]["code"] == "tool.not_remote"

    await fab.sims[DEP].set_control_state(state="OnlineRemote")
    await wait_for(lambda: _is(fab, DEP, "OnlineRemote"), "back to remote", within=15)
    listing = (await fab.api.get(f"/api/v1/dispatch/tools/{DEP}/list")).json()
    assert listing["tool_blocked"] is None


async def _is(fab: Fab, tool: str, state: str) -> bool:
    return await _control_state(fab, tool) == state

"""The OPC UA methods of a simulated tool: ISA-95 job control, recipes, SEMI E30 control state,
alarm acknowledgement, and ``InjectFault``.

asyncua calls each handler with the parent NodeId and the input Variants. A refused command
returns its Bad status code (``model.REFUSAL_STATUS``), never an exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from asyncua import ua

from mes.opcua import model as m
from mes.opcua.model import ControlState

from .address_space import Handler, S
from .tool import Tool

if TYPE_CHECKING:
    from .server import SimServer

log = logging.getLogger(__name__)

# ISA-95 JobOrderControl methods: each takes a job order (Store...) or its id.
_JOB_ACTIONS: dict[str, Callable[[Tool, str], Any]] = {
    "Store": lambda tool, text: tool.store(text),
    "StoreAndStart": lambda tool, text: tool.store(text, start=True),
    "Start": Tool.start,
    "Stop": Tool.stop,
    "Abort": Tool.abort,
    "Pause": Tool.pause,
    "Resume": Tool.resume,
    "Cancel": Tool.cancel,
    "Clear": Tool.clear,
}


def _strings(args: tuple[ua.Variant, ...], n: int) -> list[str] | None:
    if len(args) < n or not all(isinstance(a.Value, str) for a in args[:n]):
        return None
    return [a.Value for a in args[:n]]


def _ok(_: object = None) -> list[ua.Variant]:
    return [ua.Variant(m.RETURN_OK, ua.VariantType.UInt64)]


class HostMethods:
    """The handlers behind the method nodes of one ``SimServer``."""

    def __init__(self, sim: SimServer) -> None:
        self._sim = sim

    async def _call(
        self,
        args: tuple[ua.Variant, ...],
        n: int,
        action: Callable[..., Any],
        reply: Callable[[Any], list[ua.Variant]] = _ok,
    ) -> Any:
        """Run ``action`` on the first ``n`` (string) arguments as a command of the tool."""
        strings = _strings(args, n)
        if strings is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        result = await self._sim.command(lambda: action(*strings))
        if isinstance(result, ua.StatusCode):
            return result
        return reply(result)

    def job(self, name: str) -> Handler:
        action = _JOB_ACTIONS[name]

        async def handler(parent: ua.NodeId, *args: ua.Variant) -> Any:
            result = await self._call(args, 1, lambda key: action(self._sim.tool, key))
            if self._sim.lost_replies > 0:  # fault: done, but the answer never arrives
                self._sim.lost_replies -= 1
                return ua.StatusCode(ua.StatusCodes.BadTimeout)
            return result

        return handler

    async def request_job_response(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        def reply(response: dict[str, Any]) -> list[ua.Variant]:
            text = self._sim.publisher.response_json(response)
            return [ua.Variant(text, S), ua.Variant(response["JobState"], S)]

        return await self._call(args, 1, lambda key: self._sim.tool.job_response(key), reply)

    async def download_recipe(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        return await self._call(args, 3, lambda *a: self._sim.tool.download_recipe(*a))

    async def select_recipe(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        return await self._call(args, 1, lambda key: self._sim.tool.select_recipe(key))

    async def delete_recipe(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        return await self._call(args, 1, lambda key: self._sim.tool.delete_recipe(key))

    async def get_checksum(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        def reply(checksum: str) -> list[ua.Variant]:
            return [ua.Variant(checksum, S)]

        return await self._call(args, 1, lambda key: self._sim.tool.reported_checksum(key), reply)

    def control(self, state: ControlState) -> Handler:
        async def handler(parent: ua.NodeId, *args: ua.Variant) -> Any:
            await self._sim.command(lambda: self._sim.tool.set_control_state(state))
            return _ok()

        return handler

    async def acknowledge(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        condition = self._sim.publisher.alarm_condition(parent)
        if condition is None:
            return ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
        alarm_id, gen = condition
        event_id = args[0].Value if args else None
        if event_id != gen.event.EventId.Value:
            return ua.StatusCode(ua.StatusCodes.BadEventIdUnknown)
        result = await self._sim.command(lambda: self._sim.tool.acknowledge(alarm_id))
        if isinstance(result, ua.StatusCode):
            if result.value == ua.StatusCodes.BadInvalidState:
                return ua.StatusCode(ua.StatusCodes.BadConditionBranchAlreadyAcked)
            return result
        return []

    async def inject_fault(self, parent: ua.NodeId, *args: ua.Variant) -> Any:
        strings = _strings(args, 2)
        if strings is None:
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        sim = self._sim
        fault, arguments = strings
        try:
            kwargs = json.loads(arguments or "{}")
            if not isinstance(kwargs, dict):
                raise TypeError("arguments must be a JSON object")
            sim.check_fault(fault, **kwargs)
            # Run it after the reply, so a drop does not cut off its own answer.
            asyncio.get_running_loop().call_later(0.05, sim.spawn, sim.inject(fault, **kwargs))
        except (TypeError, ValueError, KeyError) as exc:
            log.info("%s: bad fault %s %s: %s", sim.spec.tool_id, fault, arguments, exc)
            return ua.StatusCode(ua.StatusCodes.BadInvalidArgument)
        return _ok()

"""How many lots run on a tool, asked from below: equipment sits under lots in the layer
order and may not import them, yet a chamber coming back must return its tool to PRD, not
SBY, while lots are on it. The lots package installs the counter at the composition roots
(the service, the CLI), as the audit recorder is installed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

WipCounter = Callable[[AsyncSession, int], Awaitable[int]]

_counter: WipCounter | None = None


def install(counter: WipCounter) -> None:
    global _counter
    _counter = counter


async def lots_running(session: AsyncSession, tool_id: int) -> int:
    """Lots on the tool now; 0 where no counter is installed (equipment used on its own)."""
    return 0 if _counter is None else await _counter(session, tool_id)

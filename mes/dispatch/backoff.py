"""Back-off of the automatic dispatcher per tool and refusal code: a refusal that will repeat
(the tool answers busy, its recipe checksum is wrong, it is not remote) must not be retried
every cycle — a 2-hour furnace run at a 5 s cycle would be 1,400 attempts. Each consecutive
refusal of the same code doubles the pause (from ``base_s`` up to ``max_s``); a job the tool
accepts clears the tool's record. Plain data: the leader keeps it in memory (a new leader
starts afresh and learns again from the first refusal)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_CODE = re.compile(r"^([a-z][a-z0-9_]*\.[a-z0-9_.]+)\b")


def refusal_code(message: str | None) -> str:
    """The refusal code a failed job's error starts with (``recipe.checksum_mismatch: ...``),
    or ``tool.refused`` for a tool's own words."""
    found = _CODE.match(message or "")
    return found.group(1) if found else "tool.refused"


@dataclass
class Pause:
    code: str
    count: int
    until: float
    logged: bool = False  # the decision log has said so for this pause


@dataclass
class Backoff:
    base_s: float = 30.0
    max_s: float = 1800.0
    pauses: dict[int, Pause] = field(default_factory=dict)  # tool id -> its current pause

    def refused(self, tool_id: int, code: str, now: float) -> Pause:
        """Record a refusal; returns the pause it starts."""
        last = self.pauses.get(tool_id)
        count = last.count + 1 if last is not None and last.code == code else 1
        pause = Pause(code, count, now + min(self.max_s, self.base_s * 2 ** (count - 1)))
        self.pauses[tool_id] = pause
        return pause

    def accepted(self, tool_id: int) -> None:
        """The tool took a job: whatever refused before is over."""
        self.pauses.pop(tool_id, None)

    def paused(self, tool_id: int, now: float) -> Pause | None:
        """The pause the tool is in now, if any (an expired one stays on record, so that the
        next refusal of the same code doubles it)."""
        pause = self.pauses.get(tool_id)
        return pause if pause is not None and now < pause.until else None

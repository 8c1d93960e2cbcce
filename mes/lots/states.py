"""Lot states and priority classes.

The lot state is the MES's own model (SEMI leaves lot states to the MES): a lot waits at a
step, runs on a tool, is on hold, is in transit between fabs, or has ended (completed, scrapped
or terminated). Wafer state follows SEMI E90 only at the level a lot record needs (active or
scrapped); per-step substrate processing states belong to job tracking.
"""

from __future__ import annotations

import enum


class LotState(enum.StrEnum):
    WAITING = "Waiting"
    RUNNING = "Running"
    ON_HOLD = "OnHold"
    IN_TRANSIT = "InTransit"
    COMPLETED = "Completed"
    SCRAPPED = "Scrapped"
    TERMINATED = "Terminated"


FINAL_STATES = frozenset({LotState.COMPLETED, LotState.SCRAPPED, LotState.TERMINATED})


class PriorityClass(enum.StrEnum):
    NORMAL = "normal"
    HOT = "hot"
    SUPER_HOT = "super_hot"


class WaferState(enum.StrEnum):
    ACTIVE = "active"
    SCRAPPED = "scrapped"


MAX_WAFERS_PER_LOT = 25


def is_final(state: LotState) -> bool:
    return state in FINAL_STATES

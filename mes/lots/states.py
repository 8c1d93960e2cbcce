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


class LotType(enum.StrEnum):
    """What a lot is for (fab practice; SEMI leaves lot types to the MES, as Critical
    Manufacturing and Opcenter do with a configurable material/lot type).

    Production lots carry product wafers for customers. Engineering lots run experiments:
    they may use tools in E10 ENG and recipe versions not (yet) approved or qualified, each
    run under an engineer's e-signature. Monitor lots (test wafers that measure a tool) and
    dummy lots (filler wafers in a furnace batch) are non-product wafers: they do not count
    as output. Rework lots carry product wafers sent to be reprocessed.
    """

    PRODUCTION = "production"
    ENGINEERING = "engineering"
    MONITOR = "monitor"
    DUMMY = "dummy"
    REWORK = "rework"


class WaferState(enum.StrEnum):
    ACTIVE = "active"
    SCRAPPED = "scrapped"


MAX_WAFERS_PER_LOT = 25


def is_final(state: LotState) -> bool:
    return state in FINAL_STATES


class HoldState(enum.StrEnum):
    ACTIVE = "active"
    RELEASED = "released"


class FutureActionKind(enum.StrEnum):
    HOLD_ON_ARRIVAL = "hold_on_arrival"  # when the lot arrives at the step
    HOLD_AFTER_TRACK_OUT = "hold_after_track_out"  # when the lot leaves the step


class QTimeStatus(enum.StrEnum):
    OPEN = "open"
    MET = "met"
    EXPIRED = "expired"
    # The closing step was skipped (sampling or a jump): the window no longer applies.
    VOID = "void"


class GenealogyRelation(enum.StrEnum):
    SPLIT = "split"
    MERGE = "merge"

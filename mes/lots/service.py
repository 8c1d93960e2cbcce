"""The lots service: every lot transaction and the lot queries, one module per kind of verb.

Callers import this face (``from mes.lots import service as lots_service``); the verbs live in

- ``queries``: WIP and its filters, one lot, its history, genealogy, holds across lots;
- ``start``: start lots on their product's route version in force;
- ``moves``: track-in, track-out, and taking a lot off its tool when its job ends unrun;
- ``holds``: hold, release, mass hold, future actions;
- ``wafers``: split, merge, scrap, bonus;
- ``control``: jump, priority, lot type, terminate;
- ``transfer``: ship to another fab, receive there;
- ``explain``: what recipe a lot would run on a tool, and why not.

They share the building blocks of ``_core`` (locking a lot, its event, holds, future actions);
``begin``, ``lock_lot`` and ``release_carrier`` are exported for the lot transactions of
``mes.carriers`` (lots into carriers, sorter jobs).
Each verb takes a command of ``mes.lots.commands`` (or plain keyword arguments), the caller as
``actor: Principal`` and the clock; it flushes and never commits.
"""

from __future__ import annotations

from mes.lots._core import (
    begin,
    get_hold_code,
    lock_lot,
    lots_running_on,
    release_carrier,
    route_steps,
)
from mes.lots.control import change_lot_type, change_priority, jump, terminate
from mes.lots.explain import RecipeQuestion, explain_recipe
from mes.lots.holds import add_future_action, cancel_future_action, hold, mass_hold, release
from mes.lots.moves import abort_run, track_in, track_out
from mes.lots.queries import (
    LOT_OPTIONS,
    LotFilter,
    active_holds,
    future_actions,
    genealogy,
    get_lot,
    hold_list,
    hold_read,
    lot_answer,
    lot_history,
    lot_query,
    lots_by_codes,
    moved_lot_answer,
    reload_lot,
)
from mes.lots.start import route_version_for_start, start_lots
from mes.lots.transfer import (
    TRANSIT_TIME,
    Travelling,
    in_transit,
    recall,
    receive,
    ship,
    transit_time,
)
from mes.lots.wafers import bonus, merge, scrap, split

__all__ = [
    "LOT_OPTIONS",
    "TRANSIT_TIME",
    "LotFilter",
    "RecipeQuestion",
    "Travelling",
    "abort_run",
    "active_holds",
    "add_future_action",
    "begin",
    "bonus",
    "cancel_future_action",
    "change_lot_type",
    "change_priority",
    "explain_recipe",
    "future_actions",
    "genealogy",
    "get_hold_code",
    "get_lot",
    "hold",
    "hold_list",
    "hold_read",
    "in_transit",
    "jump",
    "lock_lot",
    "lot_answer",
    "lot_history",
    "lot_query",
    "lots_by_codes",
    "lots_running_on",
    "mass_hold",
    "merge",
    "moved_lot_answer",
    "recall",
    "receive",
    "release",
    "release_carrier",
    "reload_lot",
    "route_steps",
    "route_version_for_start",
    "scrap",
    "ship",
    "split",
    "start_lots",
    "terminate",
    "track_in",
    "track_out",
    "transit_time",
]

"""SEMI E10 equipment states (E10-0422 time tree).

Total time = NST + operations time; operations time = uptime (PRD, SBY, ENG) + downtime
(SDT, UDT). Every tool and every chamber is in exactly one of the six states, refined by a
substate code ``<STATE>.<REASON>`` such as ``SDT.PM`` or ``SBY.NO_PRODUCT``. E10 defines states,
not transitions, so any state may follow any other; what this module decides is which states
allow production, which substates are allowed (a configurable table, seeded with
``DEFAULT_SUBSTATES``), and how a cluster tool's chambers roll up into the tool's availability.

Extension of E10: a cluster tool whose chambers are all down is itself down (the roll-up state
below); with some chambers down it keeps running on the others (SEMI leaves multi-path cluster
tools to E116; we track a state per chamber and count the chambers up).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping


class E10State(enum.StrEnum):
    PRD = "PRD"  # productive: running production
    SBY = "SBY"  # standby: able to run, idle
    ENG = "ENG"  # engineering: able to run, running experiments
    SDT = "SDT"  # scheduled downtime: PM, setup, qualification
    UDT = "UDT"  # unscheduled downtime: failure, repair
    NST = "NST"  # non-scheduled time: no shift, installation, shutdown


UP_STATES = frozenset({E10State.PRD, E10State.SBY, E10State.ENG})
DOWN_STATES = frozenset({E10State.SDT, E10State.UDT})
PRODUCTION_STATES = frozenset({E10State.PRD, E10State.SBY})

DEFAULT_SUBSTATE = {
    E10State.PRD: "PRD.REGULAR",
    E10State.SBY: "SBY.NO_PRODUCT",
    E10State.ENG: "ENG.EXPERIMENT",
    E10State.SDT: "SDT.PM",
    E10State.UDT: "UDT.REPAIR",
    E10State.NST: "NST.UNWORKED",
}

_SUBSTATE_RE = re.compile(r"^(PRD|SBY|ENG|SDT|UDT|NST)\.[A-Z0-9_]{1,40}$")


# Substates the MES itself records; they must exist in the substate table.
NO_SIGNAL = "UDT.NO_SIGNAL"  # the tool sent nothing for too long while it should be up
PM_SUBSTATE = "SDT.PM"
ALARM = "UDT.ALARM"  # a breaking alarm reported by the tool
ALL_CHAMBERS_DOWN = {
    E10State.SDT: "SDT.ALL_CHAMBERS_DOWN",
    E10State.UDT: "UDT.ALL_CHAMBERS_DOWN",
    E10State.NST: "NST.ALL_CHAMBERS_DOWN",
}

# Substates the MES records on its own (defaults, no signal, alarm, PM, chamber roll-up, the
# SPC/OCAP down state): retiring one would make the MES refuse its own state changes.
SYSTEM_SUBSTATES = frozenset(
    {*DEFAULT_SUBSTATE.values(), NO_SIGNAL, PM_SUBSTATE, ALARM, *ALL_CHAMBERS_DOWN.values()}
    | {"UDT.SPC"}
)

# The default substate table (the migration seeds it; engineers add entries through the API).
DEFAULT_SUBSTATES: Mapping[str, str] = {
    "PRD.REGULAR": "regular production",
    "PRD.REWORK": "rework lots",
    "SBY.NO_PRODUCT": "no lot to run",
    "SBY.NO_OPERATOR": "no operator available",
    "SBY.NO_HOST": "host or MES connection down",
    "SBY.NO_SUPPORT_TOOL": "support tool (reticle, probe card) missing",
    "ENG.EXPERIMENT": "process experiment",
    "ENG.SOFTWARE": "equipment software test",
    "SDT.PM": "preventive maintenance",
    "SDT.SETUP": "setup or conversion",
    "SDT.CONSUMABLES": "scheduled change of consumables",
    "SDT.QUALIFICATION": "production test or qualification",
    "SDT.FACILITIES": "scheduled facilities outage",
    "SDT.ALL_CHAMBERS_DOWN": "every chamber is in scheduled downtime",
    "UDT.REPAIR": "repair after a failure",
    "UDT.MAINTENANCE_DELAY": "waiting for a technician or parts",
    "UDT.CONSUMABLES": "unscheduled change of consumables",
    "UDT.OUT_OF_SPEC_INPUT": "out-of-specification input",
    "UDT.FACILITIES": "unscheduled facilities failure",
    "UDT.ALARM": "breaking alarm reported by the tool",
    "UDT.NO_SIGNAL": "the tool reported nothing while it should be up (time to qualify)",
    "UDT.ALL_CHAMBERS_DOWN": "every chamber is down, at least one unscheduled",
    "UDT.SPC": "taken out of production by an SPC violation (OCAP) until an engineer releases it",
    "NST.UNWORKED": "unworked shift",
    "NST.INSTALLATION": "installation, modification, upgrade",
    "NST.SHUTDOWN": "planned shutdown",
    "NST.ALL_CHAMBERS_DOWN": "every chamber is non-scheduled",
}


class InvalidSubstate(ValueError):
    pass


class UnknownSubstate(InvalidSubstate):
    """Well-formed, but not in the substate table."""


class RetiredSubstate(InvalidSubstate):
    """In the substate table, but retired: history keeps it, new state changes may not use it."""


def state_of(substate: str) -> E10State:
    """The E10 state a well-formed substate code belongs to."""
    if not _SUBSTATE_RE.match(substate):
        raise InvalidSubstate(
            f"substate {substate!r} is not of the form <E10 state>.<REASON>, e.g. SDT.PM"
        )
    return E10State(substate.split(".", 1)[0])


def validate_substate(
    state: E10State,
    substate: str | None,
    allowed: Collection[str] | None = None,
    retired: Collection[str] = (),
) -> str:
    """Return the substate to record for ``state``, refusing one that belongs to another state,
    one that was ``retired``, or, when the table ``allowed`` is given, one that is not in it."""
    if substate is None:
        return DEFAULT_SUBSTATE[state]
    if state_of(substate) != state:
        raise InvalidSubstate(f"substate {substate!r} does not belong to state {state.value}")
    if substate in retired:
        raise RetiredSubstate(
            f"substate {substate!r} is retired; choose a current one (GET /api/v1/substates)"
        )
    if allowed is not None and substate not in allowed:
        raise UnknownSubstate(
            f"substate {substate!r} is not in the substate table; an engineer can add it"
        )
    return substate


def chambers_up(chamber_states: Collection[E10State]) -> int | None:
    """How many chambers can take a wafer (None: not a cluster tool)."""
    if not chamber_states:
        return None
    return sum(1 for s in chamber_states if allows_production(s))


def rollup(chamber_states: Collection[E10State]) -> E10State | None:
    """The down state a cluster tool takes when none of its chambers is up, else None.

    Any unscheduled chamber makes the tool UDT; otherwise any scheduled one makes it SDT;
    chambers that are all NST leave the tool NST. A chamber in ENG is up (able to run).
    """
    if not chamber_states or any(s in UP_STATES for s in chamber_states):
        return None
    if E10State.UDT in chamber_states:
        return E10State.UDT
    if E10State.SDT in chamber_states:
        return E10State.SDT
    return E10State.NST


def allows_production(state: E10State) -> bool:
    """Track-in and dispatch may use a tool only in SBY or PRD."""
    return state in PRODUCTION_STATES

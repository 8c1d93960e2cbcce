"""SEMI E10 equipment states (E10-0422 time tree).

Total time = NST + operations time; operations time = uptime (PRD, SBY, ENG) + downtime
(SDT, UDT). Every tool and every chamber is in exactly one of the six states, refined by a
substate code ``<STATE>.<REASON>`` such as ``SDT.PM`` or ``SBY.NO_PRODUCT``. E10 defines states,
not transitions, so any state may follow any other; what this module decides is which states
allow production and which substates are well-formed. The configurable substate table is a
later issue; until then a substate must name its own state as prefix.
"""

from __future__ import annotations

import enum
import re


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


class InvalidSubstate(ValueError):
    pass


def validate_substate(state: E10State, substate: str | None) -> str:
    """Return the substate to record for ``state``, refusing one that belongs to another state."""
    if substate is None:
        return DEFAULT_SUBSTATE[state]
    if not _SUBSTATE_RE.match(substate):
        raise InvalidSubstate(
            f"substate {substate!r} is not of the form <E10 state>.<REASON>, e.g. SDT.PM"
        )
    if substate.split(".", 1)[0] != state.value:
        raise InvalidSubstate(f"substate {substate!r} does not belong to state {state.value}")
    return substate


def allows_production(state: E10State) -> bool:
    """Track-in and dispatch may use a tool only in SBY or PRD."""
    return state in PRODUCTION_STATES

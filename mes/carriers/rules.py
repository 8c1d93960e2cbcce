"""Carriers, load ports and sorting (pure rules, no I/O), in SEMI E87 terms.

A carrier (FOUP) has 25 slots; its slot map says which wafer sits in which slot. It is in a
stocker, docked on a tool's load port, or in transit between them. A load port follows the
E87 transfer state model: out of service, or in service and then transfer blocked (a carrier
docked, the tool busy with it), ready to load (empty, waiting for a carrier) or ready to
unload (the tool is done with the carrier). Wafers change slots or carriers only on a sorter:
re-slot within a carrier, split into another carrier, merge two carriers into one.

When a job starts, the slot map the tool read from the docked carrier must be the one the MES
holds; a difference (a wafer missing, one too many, a wafer in the wrong slot) means the
material is not what the MES believes, and the job is refused before it runs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mes.errors import RuleViolation

SLOTS = 25  # a 300 mm FOUP


class PortState(enum.StrEnum):
    """The E87 load-port transfer states (``LoadPortTransferState`` holds the same values)."""

    OUT_OF_SERVICE = "OutOfService"
    TRANSFER_BLOCKED = "TransferBlocked"
    READY_TO_LOAD = "ReadyToLoad"
    READY_TO_UNLOAD = "ReadyToUnload"


class PortAction(enum.StrEnum):
    LOAD = "load"  # a carrier is placed on the port and docked
    READY_TO_UNLOAD = "ready_to_unload"  # the tool is done with the carrier
    UNLOAD = "unload"  # the carrier is taken away
    OUT_OF_SERVICE = "out_of_service"
    IN_SERVICE = "in_service"


# What each action needs (from-states) and where it leads.
_TRANSITIONS: dict[PortAction, tuple[frozenset[PortState], PortState]] = {
    PortAction.LOAD: (frozenset({PortState.READY_TO_LOAD}), PortState.TRANSFER_BLOCKED),
    PortAction.READY_TO_UNLOAD: (
        frozenset({PortState.TRANSFER_BLOCKED}),
        PortState.READY_TO_UNLOAD,
    ),
    PortAction.UNLOAD: (frozenset({PortState.READY_TO_UNLOAD}), PortState.READY_TO_LOAD),
    PortAction.OUT_OF_SERVICE: (
        frozenset({PortState.READY_TO_LOAD, PortState.TRANSFER_BLOCKED}),
        PortState.OUT_OF_SERVICE,
    ),
    PortAction.IN_SERVICE: (frozenset({PortState.OUT_OF_SERVICE}), PortState.READY_TO_LOAD),
}


def port_transition(state: PortState, action: PortAction, *, occupied: bool) -> PortState:
    """The port's state after ``action``, or the refusal saying why it cannot happen."""
    allowed, to = _TRANSITIONS[action]
    if action == PortAction.OUT_OF_SERVICE and occupied:
        raise RuleViolation(
            "load_port.occupied", "a carrier is on the port: unload it before taking the port down"
        )
    if action == PortAction.READY_TO_UNLOAD and not occupied:
        raise RuleViolation("load_port.empty", "no carrier is on the port")
    if state not in allowed:
        raise RuleViolation(
            "load_port.invalid_transition",
            f"a port in {state.value} cannot {action.value.replace('_', ' ')}; it must be "
            + " or ".join(sorted(s.value for s in allowed)),
            state=state.value,
        )
    return to


# --- slot maps -------------------------------------------------------------------------------


def check_slot_map(
    requested: Mapping[str, int], wafers: Sequence[str], capacity: int
) -> dict[int, str]:
    """The slot map (slot -> scribe id) of ``requested`` (scribe id -> slot) for a lot whose
    active wafers are ``wafers``: every wafer once, each in its own slot of the carrier."""
    missing = sorted(set(wafers) - set(requested))
    foreign = sorted(set(requested) - set(wafers))
    if missing or foreign:
        raise RuleViolation(
            "carrier.invalid_slot_map",
            f"the slot map must place exactly the lot's wafers; missing {missing}, "
            f"not in the lot {foreign}",
            status=422,
        )
    outside = sorted(s for s in requested.values() if not 1 <= s <= capacity)
    if outside:
        raise RuleViolation(
            "carrier.invalid_slot_map",
            f"slots {outside} are outside the carrier's 1..{capacity}",
            status=422,
        )
    by_slot: dict[int, str] = {}
    for scribe, slot in sorted(requested.items()):
        if slot in by_slot:
            raise RuleViolation(
                "carrier.invalid_slot_map",
                f"wafers {by_slot[slot]} and {scribe} are both in slot {slot}",
                status=422,
            )
        by_slot[slot] = scribe
    return dict(sorted(by_slot.items()))


def slot_moves(before: Mapping[str, int | None], after: Mapping[str, int]) -> list[list[object]]:
    """The sorter's moves as [scribe id, from slot, to slot], for the wafers that change."""
    return [[w, before.get(w), after[w]] for w in sorted(after) if before.get(w) != after[w]]


def occupied_slots(reported: Sequence[str]) -> frozenset[int]:
    """The slots a tool's mapper reported occupied (one string per slot, "" for empty)."""
    return frozenset(i for i, state in enumerate(reported, start=1) if state.strip())


@dataclass(frozen=True)
class SlotMapMismatch:
    carrier: str
    missing: tuple[int, ...]  # the MES has a wafer there, the tool found the slot empty
    unexpected: tuple[int, ...]  # the tool found a wafer where the MES has none

    def __str__(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"slots {list(self.missing)} empty on the tool but hold wafers")
        if self.unexpected:
            parts.append(f"slots {list(self.unexpected)} occupied on the tool but empty")
        return f"carrier {self.carrier}: " + "; ".join(parts)


def compare_slot_maps(
    carrier: str, expected: frozenset[int], reported: frozenset[int]
) -> SlotMapMismatch | None:
    """How the slots the tool read differ from the slots the MES holds (None: they agree)."""
    if expected == reported:
        return None
    return SlotMapMismatch(
        carrier, tuple(sorted(expected - reported)), tuple(sorted(reported - expected))
    )


# --- carriers and lots -----------------------------------------------------------------------


def check_carrier_move(code: str, at_port: bool) -> None:
    """A carrier goes to a stocker or into transit; one docked on a port is unloaded first."""
    if at_port:
        raise RuleViolation(
            "carrier.at_load_port", f"carrier {code} is on a load port: unload the port first"
        )


def check_sortable(lot: str, state: str, on_tool: bool) -> None:
    """A sorter moves wafers of a lot waiting (or held) at its step, never of one on a tool or
    travelling between fabs."""
    if on_tool or state not in ("Waiting", "OnHold"):
        raise RuleViolation(
            "carrier.lot_not_sortable",
            f"lot {lot} is {state}{' on a tool' if on_tool else ''}; only a lot waiting "
            "or on hold at its step can be sorted",
        )

"""Durables: reticles (masks), probe cards and carriers (pure rules, no I/O).

SEMI E10/E90 leave support tools to the MES. A reticle or probe card sits in one location
(the library, a tool, or cleaning), counts its uses against a limit, and is available, on
hold or retired. A litho step needs its recipe's reticle at the tool, available and under its
limit (the recipe names a design; any copy of it at the tool will do); a use is one wafer
exposed (probe cards: one wafer probed), counted at track-in, so the
check and the count happen in one transaction on the locked tool and a limit can never be
overrun by two lots at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mes.errors import RuleViolation


class DurableKind(enum.StrEnum):
    RETICLE = "reticle"
    PROBE_CARD = "probe_card"


class DurableLocation(enum.StrEnum):
    LIBRARY = "library"  # stocker or reticle library
    TOOL = "tool"  # loaded in a tool
    CLEANING = "cleaning"  # out for cleaning or inspection


class CarrierLocation(enum.StrEnum):
    """Where a carrier is (SEMI E87 leaves the stocker and the transport to the MES)."""

    STOCKER = "stocker"
    LOAD_PORT = "load_port"  # docked on a tool's load port
    IN_TRANSIT = "in_transit"  # on the AMHS or a cart between stocker and tool


class DurableState(enum.StrEnum):
    AVAILABLE = "available"
    ON_HOLD = "on_hold"  # suspect (defect, inspection due): not to be used
    RETIRED = "retired"  # end of life


@dataclass(frozen=True)
class DurableView:
    code: str
    kind: DurableKind
    state: DurableState
    location: DurableLocation
    equipment_id: int | None
    usage_count: int
    usage_limit: int | None


def check_use(durable: DurableView, tool_id: int, tool_code: str, units: int) -> None:
    """Refuse to run ``units`` wafers on ``tool_id`` with this durable."""
    what = durable.kind.value.replace("_", " ")
    if durable.state != DurableState.AVAILABLE:
        raise RuleViolation(
            "reticle.not_available", f"{what} {durable.code} is {durable.state.value}"
        )
    if durable.location != DurableLocation.TOOL or durable.equipment_id != tool_id:
        raise RuleViolation(
            "reticle.not_at_tool",
            f"{what} {durable.code} is not at tool {tool_code} "
            f"(it is at the {durable.location.value})",
        )
    if durable.usage_limit is not None and durable.usage_count + units > durable.usage_limit:
        raise RuleViolation(
            "reticle.over_limit",
            f"{what} {durable.code} has {durable.usage_count} of {durable.usage_limit} uses; "
            f"{units} more would pass its limit",
        )


def choose(
    design: str, copies: list[DurableView], tool_id: int, tool_code: str, units: int
) -> DurableView:
    """The copy of ``design`` to use on the tool for ``units`` wafers, or the refusal that
    says best why none can be used (not at the tool, not available, over its limit)."""
    at_tool = [
        d for d in copies if d.location == DurableLocation.TOOL and d.equipment_id == tool_id
    ]
    if not at_tool:
        where = ", ".join(f"{d.code} ({d.location.value})" for d in copies) or "none registered"
        raise RuleViolation(
            "reticle.not_at_tool",
            f"no copy of {design} is at tool {tool_code}; copies: {where}",
            design=design,
        )
    refusal: RuleViolation | None = None
    for candidate in sorted(at_tool, key=lambda d: d.code):
        try:
            check_use(candidate, tool_id, tool_code, units)
        except RuleViolation as exc:
            refusal = refusal or exc
            continue
        return candidate
    assert refusal is not None
    raise refusal


def check_move(durable: DurableView, to: DurableLocation, tool_id: int | None) -> None:
    """A durable goes to a tool only when available; it may always go back or to cleaning."""
    if (to == DurableLocation.TOOL) != (tool_id is not None):
        raise RuleViolation(
            "durable.invalid_move", "name a tool exactly when moving to a tool", status=422
        )
    if durable.state == DurableState.RETIRED:
        raise RuleViolation("durable.retired", f"{durable.code} is retired")
    if to == DurableLocation.TOOL and durable.state != DurableState.AVAILABLE:
        raise RuleViolation(
            "durable.not_available", f"{durable.code} is {durable.state.value}, not available"
        )


@dataclass(frozen=True)
class CarrierView:
    code: str
    fab_id: int
    capacity: int
    available: bool  # empty and clean: state ``available``
    location: CarrierLocation


def check_claim(carrier: CarrierView, fab_id: int, wafers: int) -> None:
    """Refuse to put ``wafers`` wafers of a lot in ``fab_id`` into this carrier."""
    if carrier.fab_id != fab_id or not carrier.available:
        raise RuleViolation(
            "carrier.not_available", f"carrier {carrier.code} is not an available carrier here"
        )
    if carrier.capacity < wafers:
        raise RuleViolation(
            "carrier.too_small", f"carrier {carrier.code} holds {carrier.capacity} wafers"
        )


def choose_free(candidates: list[CarrierView], fab_id: int, wafers: int) -> CarrierView:
    """The free carrier the MES takes when none is named: one waiting in a stocker (not docked
    on a port or travelling, where it belongs to a move already under way), the lowest code."""
    for candidate in sorted(candidates, key=lambda c: c.code):
        if candidate.location != CarrierLocation.STOCKER:
            continue
        try:
            check_claim(candidate, fab_id, wafers)
        except RuleViolation:
            continue
        return candidate
    raise RuleViolation(
        "carrier.none_free", f"no empty, clean carrier for {wafers} wafers in a stocker of the fab"
    )

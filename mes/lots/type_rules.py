"""Lot-type rules: what engineering lots may do that others may not, what counts as output,
and which lots may share a furnace batch. Pure (no I/O): track-in, the reports and the tests
apply the same functions.

* A tool in E10 ENG (engineering time) runs engineering lots only, and each such run is
  released by an engineer's e-signature. Production, monitor, dummy and rework lots never run
  there (``tool.engineering_only``).
* A recipe version that is not approved (a draft) or not qualified on the tool runs only for an
  engineering lot, under the same signed release; for every other lot the usual refusals
  stand (``recipe.not_approved``, ``tool.not_qualified``).
* A signed engineering release sent for a lot that is not an engineering lot is refused
  (``lot.not_engineering``): production material never takes the engineering path.
* Monitor and dummy lots carry non-product wafers: they are not output (moves, completions,
  the E79 units of OEE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mes.errors import RuleViolation
from mes.lots.states import LotType

NON_PRODUCT = frozenset({LotType.MONITOR, LotType.DUMMY})


def counts_in_output(lot_type: LotType) -> bool:
    """Does a lot of this type count in moves, completions and OEE units? (Not test wafers.)"""
    return lot_type not in NON_PRODUCT


# The types reports count, for a ``lot_type IN (...)`` filter.
OUTPUT_TYPES: tuple[LotType, ...] = tuple(t for t in LotType if counts_in_output(t))


@dataclass(frozen=True)
class Release:
    """An engineer's signed release of one engineering run (the signature is verified by the
    caller; here only who signed matters)."""

    signed_by: str
    signer_is_engineer: bool


def check_release_allowed(lot_code: str, lot_type: LotType, release: Release | None) -> None:
    """Only engineering lots take an engineering release."""
    if release is not None and lot_type != LotType.ENGINEERING:
        raise RuleViolation(
            "lot.not_engineering",
            f"lot {lot_code} is a {lot_type.value} lot: only engineering lots run on ENG tools "
            "or recipe versions not approved or not qualified",
        )


def check_eng_tool(lot_code: str, lot_type: LotType, tool_code: str) -> None:
    """A tool in E10 ENG takes engineering lots only."""
    if lot_type != LotType.ENGINEERING:
        raise RuleViolation(
            "tool.engineering_only",
            f"tool {tool_code} is in ENG (engineering time): it runs engineering lots only, "
            f"and lot {lot_code} is a {lot_type.value} lot",
        )


def check_engineering_run(
    lot_code: str,
    lot_type: LotType,
    *,
    eng_tool: bool,
    unreleased_recipe: bool,
    release: Release | None,
) -> bool:
    """Whether the run is an engineering exception (ENG tool, or a recipe version not approved
    or not qualified here), refusing it unless the lot is an engineering lot and an engineer
    signed its release. Returns True for an exception (recorded on the track-in)."""
    check_release_allowed(lot_code, lot_type, release)
    if not (eng_tool or unreleased_recipe):
        return False
    if lot_type != LotType.ENGINEERING:
        # Not reached through track-in (its own refusals come first), kept for completeness.
        raise RuleViolation(
            "lot.not_engineering",
            f"lot {lot_code} is a {lot_type.value} lot: it runs approved, qualified recipe "
            "versions on tools in SBY or PRD only",
        )
    what = " and ".join(
        part
        for part, needed in (
            ("a tool in ENG", eng_tool),
            ("a recipe version not approved or not qualified here", unreleased_recipe),
        )
        if needed
    )
    if release is None:
        raise RuleViolation(
            "lot.engineering_signature_required",
            f"engineering lot {lot_code} would run on {what}: an engineer must sign the "
            "release (send `engineering` with an e-signature)",
        )
    if not release.signer_is_engineer:
        raise RuleViolation(
            "lot.signer_not_engineer",
            f"{release.signed_by} is not an engineer: an engineering run on {what} needs an "
            "engineer's e-signature",
            status=403,
        )
    return True


def check_type_change(lot_code: str, current: LotType, wanted: LotType) -> None:
    if current == wanted:
        raise RuleViolation(
            "lot.type_unchanged", f"lot {lot_code} already is a {wanted.value} lot", status=422
        )


# --- furnace batches ------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchMember:
    """A lot already on a batch tool: its step and what it runs there."""

    lot_code: str
    step_id: int
    batch_max: int | None  # None: its step is no batch step
    setup: str | None
    recipe: tuple[str, int] | None  # (recipe, version) from its track-in


def check_batch_join(
    *,
    step_id: int,
    batch_max: int,
    setup: str | None,
    recipe: tuple[str, int],
    tool_code: str,
    tool_max_lots: int,
    members: Sequence[BatchMember],
) -> None:
    """May a lot of a batch step (``step_id``, running ``recipe``) join the lots on the tool?

    A batch runs one recipe version for every lot in it, so lots of different products,
    routes or steps batch together when each resolves to the same recipe version — and their
    steps are batch steps with the same setup. The batch holds as many lots as the smallest
    batch size of its steps (and the tool) allows.
    """
    for m in members:
        if m.batch_max is None:
            why = f"lot {m.lot_code} of a step without batching"
        elif m.recipe != recipe:
            ran = f"{m.recipe[0]} version {m.recipe[1]}" if m.recipe else "an unknown recipe"
            why = f"{ran}, not {recipe[0]} version {recipe[1]}"
        elif m.step_id != step_id and m.setup != setup:
            why = f"setup {m.setup}, not {setup}"
        else:
            continue
        raise RuleViolation(
            "tool.batch_mismatch", f"tool {tool_code} runs a batch this lot cannot join: {why}"
        )
    size = min([batch_max, tool_max_lots, *(m.batch_max or 1 for m in members)])
    if len(members) >= size:
        raise RuleViolation("tool.full", f"the batch on tool {tool_code} is full ({size} lots)")

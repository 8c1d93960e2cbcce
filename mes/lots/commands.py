"""What a caller asks of a lot: one frozen command per lot transaction (no I/O, no framework).

The lot verbs of ``mes.lots.service`` take these, never an HTTP schema: the routers translate
their request bodies into commands, and the equipment jobs, the dispatcher and the OPC UA
adapters build the same commands directly. ``version`` is the lot version the caller read
(``None``: do not check it).

Who acts is not part of a command. Every lot verb takes it as ``actor: Principal`` (from
``mes.auth.service``), the one way to name a caller: a person behind a token, or a service
identity (the tool an adapter acts for, the dispatcher, a CLI or a benchmark). One type, because
some verbs need more than a name: track-in checks that a person is certified for the tool
group (service identities act for the tool and are not), and release checks the caller's roles
against each hold code; the others record ``actor.username`` in the lot's history.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime

from mes.lots.states import FutureActionKind, LotType, PriorityClass
from mes.lots.type_rules import Release as SignedRelease

# Bounds of one measurement, as a lot event can hold it (the HTTP schema has the same ones).
MAX_MEASUREMENT_NAME = 64
MAX_MEASUREMENT_VALUES = 1000
MAX_MEASUREMENT_UNIT = 16


class TrackOutcome(enum.StrEnum):
    PASS = "pass"
    REWORK = "rework"


@dataclass(frozen=True)
class Measurement:
    """Values measured on the lot (per wafer, site, parameter), recorded in its TRACK_OUT."""

    name: str
    values: tuple[float, ...]
    unit: str | None = None

    def __post_init__(self) -> None:
        # Tools report these too, not only validated HTTP bodies; the event must stay valid JSON.
        if not 1 <= len(self.name) <= MAX_MEASUREMENT_NAME:
            raise ValueError(f"a measurement name has 1 to {MAX_MEASUREMENT_NAME} characters")
        if not 1 <= len(self.values) <= MAX_MEASUREMENT_VALUES:
            raise ValueError(f"a measurement has 1 to {MAX_MEASUREMENT_VALUES} values")
        if not all(math.isfinite(v) for v in self.values):
            raise ValueError(f"measurement {self.name!r} has a value that is not finite")
        if self.unit is not None and len(self.unit) > MAX_MEASUREMENT_UNIT:
            raise ValueError(f"a measurement unit has at most {MAX_MEASUREMENT_UNIT} characters")

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "values": list(self.values), "unit": self.unit}


@dataclass(frozen=True)
class Reading:
    """One data-collection value of a track-out, for the step's EDC plan: named by the plan's
    parameter (an operator's entry) or by what the tool measured (``metrology``,
    ``pv.<Name>.<mean|min|max>``), on a wafer slot and site. The value is checked against the
    plan (kind, unit), so it arrives as the caller sent it."""

    parameter: str
    value: float | int | str | bool | None
    unit: str | None = None
    slot: int | None = None
    site: int | None = None
    chamber: str | None = None


@dataclass(frozen=True)
class EngineeringRun:
    """An engineering lot's run on a tool in ENG or on an unreleased recipe version: who
    signed the release (verified by the caller) and, optionally, the version to run."""

    release: SignedRelease
    recipe_version: int | None = None


@dataclass(frozen=True)
class TrackIn:
    tool: str
    version: int | None = None
    # The step the caller believes the lot is at; refused if the lot is elsewhere.
    step_sequence: int | None = None
    # The chambers of a cluster tool to run in (None: every up chamber qualified to run it).
    chambers: tuple[str, ...] | None = None
    engineering: EngineeringRun | None = None
    # A supervisor's reason to start the lot although the Q-time gate says it would miss its
    # window (mes.lots.qtime_gate); None: the gate refuses such a start.
    qtime_gate_override: str | None = None


@dataclass(frozen=True)
class TrackOut:
    version: int | None = None
    # None: every wafer of the lot was processed. Fewer than the lot's wafers is a partial run:
    # the lot is held PARTIAL_RUN at the step instead of moving on.
    wafers_processed: int | None = None
    outcome: TrackOutcome = TrackOutcome.PASS
    measurements: tuple[Measurement, ...] = ()
    # What the tool said of the wafers it did not process (scribe id -> E90 state or reason),
    # recorded with the hold.
    not_processed: tuple[tuple[str, str], ...] = ()
    # Data-collection values for the step's plan; ``by_tool``: reported by the tool (through
    # its adapter), which may report more than the plan samples and is never refused.
    readings: tuple[Reading, ...] = ()
    by_tool: bool = False


@dataclass(frozen=True)
class Hold:
    hold_code: str
    reason: str
    version: int | None = None


@dataclass(frozen=True)
class Release:
    """Release the holds ``hold_ids``, else every active hold of ``hold_code``, else all."""

    reason: str
    hold_ids: tuple[int, ...] | None = None
    hold_code: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class MassHold:
    """Hold every active lot matching all the filters given (at least one of them)."""

    hold_code: str
    reason: str
    fab: str | None = None
    product: str | None = None
    tool: str | None = None
    route: str | None = None
    # With ``route``: the step of that route.
    step_sequence: int | None = None


@dataclass(frozen=True)
class AddFutureAction:
    step_sequence: int
    hold_code: str
    reason: str
    kind: FutureActionKind = FutureActionKind.HOLD_ON_ARRIVAL


@dataclass(frozen=True)
class Split:
    wafers: tuple[str, ...]  # scribe ids of the wafers that move to the child lot
    version: int | None = None
    # The child's carrier; None: a free one the MES chooses (when the parent has a carrier).
    carrier: str | None = None


@dataclass(frozen=True)
class Merge:
    source: str  # the lot whose wafers move into this one
    version: int | None = None


@dataclass(frozen=True)
class Scrap:
    wafers: tuple[str, ...]
    reason_code: str
    comment: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class Bonus:
    count: int
    reason_code: str
    comment: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class Jump:
    to_sequence: int
    reason: str
    version: int | None = None


@dataclass(frozen=True)
class ChangePriority:
    priority_class: PriorityClass
    reason: str
    due_at: datetime | None = None  # None: keep the due date
    version: int | None = None


@dataclass(frozen=True)
class ChangeLotType:
    lot_type: LotType
    reason: str
    version: int | None = None


@dataclass(frozen=True)
class Terminate:
    reason: str
    version: int | None = None


@dataclass(frozen=True)
class Ship:
    to_fab: str
    version: int | None = None


@dataclass(frozen=True)
class Receive:
    version: int | None = None


@dataclass(frozen=True)
class Recall:
    """Call a shipment back before the destination received it."""

    reason: str
    version: int | None = None

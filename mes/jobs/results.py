"""What a tool reports about a job it ran, as the job service records it.

The SEMI E40 outcome (the job's state and substate), how many wafers were processed, and per
wafer its SEMI E90 substrate state, chamber and measurements; and the process values sampled
while the job ran, summarised per wafer and over the job. Pure: the OPC UA adapter fills these
in from what the tool sends (``mes.opcua.mapping``), the job service stores them and tracks the
lots out by them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from mes.lots.commands import Reading

# The SEMI E90 substrate state of a wafer the tool processed (as the tool contract spells it:
# ``mes.opcua.model.SubstrateState.PROCESSED``, which a test holds equal).
WAFER_PROCESSED: Final = "Processed"


@dataclass(frozen=True)
class WaferReport:
    substrate_id: str
    slot: int
    state: str
    chamber: str
    measurements: tuple[float, ...]


@dataclass(frozen=True)
class JobResult:
    state: str
    substate: str
    wafers_processed: int
    wafers: tuple[WaferReport, ...]


@dataclass
class ValueStats:
    samples: int = 0
    total: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, value: float, at: datetime) -> None:
        self.samples += 1
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        self.first_at = self.first_at or at
        self.last_at = at

    @property
    def mean(self) -> float:
        return self.total / self.samples if self.samples else 0.0


@dataclass
class ProcessValueBuffer:
    """Process values of one job, summarised per wafer (the substrate the tool reported in
    process when the sample came) and over the whole job (substrate "").

    On cluster tools several wafers are in process at once and the tool reports one current
    substrate: the per-wafer split is then approximate; the job-level summary is exact.
    """

    stats: dict[tuple[str, str], ValueStats] = field(default_factory=dict)

    def add(self, substrate_id: str, name: str, value: float, at: datetime) -> None:
        for key in {(substrate_id, name), ("", name)}:
            self.stats.setdefault(key, ValueStats()).add(value, at)


@dataclass(frozen=True)
class ValueSummary:
    """A stored process-value summary of one wafer (``substrate_id``) or of the job ("")."""

    substrate_id: str
    name: str
    mean: float
    minimum: float
    maximum: float


def tool_readings(
    slots: Mapping[str, int], reports: Sequence[WaferReport], summaries: Sequence[ValueSummary]
) -> tuple[Reading, ...]:
    """What the tool reported for a lot's wafers (``slots``: scribe id -> slot), as readings
    for the step's data collection plan: each metrology site as ``metrology`` (site 1, 2…),
    each wafer's process-value statistics as ``pv.<Name>.<mean|min|max>``, the whole job's
    as ``job.pv.<Name>.<mean|min|max>`` on every slot. The plan picks what it samples; the
    rest is ignored there."""
    chambers = {w.substrate_id: w.chamber or None for w in reports}
    found: list[Reading] = []
    for w in reports:
        slot = slots.get(w.substrate_id)
        if slot is None:
            continue
        found += [
            Reading("metrology", value, slot=slot, site=site, chamber=chambers[w.substrate_id])
            for site, value in enumerate(w.measurements, start=1)
        ]
    for pv in summaries:
        if pv.substrate_id == "":
            # The job-level summary: one value for the whole job, offered on each of the lot's
            # slots as ``job.pv.<Name>.<stat>`` (the plan's sample plan takes one, or more).
            for slot in sorted(set(slots.values())):
                for stat, value in (("mean", pv.mean), ("min", pv.minimum), ("max", pv.maximum)):
                    found.append(Reading(f"job.pv.{pv.name}.{stat}", value, slot=slot))
            continue
        slot = slots.get(pv.substrate_id)
        if slot is None:
            continue  # another lot's wafer
        for stat, value in (("mean", pv.mean), ("min", pv.minimum), ("max", pv.maximum)):
            found.append(
                Reading(
                    f"pv.{pv.name}.{stat}",
                    value,
                    slot=slot,
                    chamber=chambers.get(pv.substrate_id),
                )
            )
    return tuple(found)

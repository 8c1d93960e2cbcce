"""What a tool reports about a job it ran, as the job service records it.

The SEMI E40 outcome (the job's state and substate), how many wafers were processed, and per
wafer its SEMI E90 substrate state, chamber and measurements; and the process values sampled
while the job ran, summarised per wafer and over the job. Pure: the OPC UA adapter fills these
in from what the tool sends (``mes.opcua.mapping``), the job service stores them and tracks the
lots out by them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

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

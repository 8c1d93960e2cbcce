"""What a simulated tool is: its identity, processing kind and timing knobs."""

from __future__ import annotations

from dataclasses import dataclass

from mes.opcua.model import ProcessingKind

FAMILIES = ("litho", "etch", "deposition", "implant", "wet", "furnace", "metrology")
_GROUP_PREFIX = {
    "LITHO": "litho",
    "ETCH": "etch",
    "DEP": "deposition",
    "IMPL": "implant",
    "WET": "wet",
    "FURN": "furnace",
    "METRO": "metrology",
}
_KIND_FAMILY = {
    ProcessingKind.SINGLE_WAFER: "litho",
    ProcessingKind.CLUSTER: "etch",
    ProcessingKind.BATCH: "furnace",
    ProcessingKind.WET_BENCH: "wet",
}


def family_of(tool_group: str, kind: ProcessingKind) -> str:
    prefix = tool_group.split("_")[0].upper()
    return _GROUP_PREFIX.get(prefix, _KIND_FAMILY[kind])


@dataclass(frozen=True)
class ToolSpec:
    tool_id: str
    kind: ProcessingKind
    family: str
    port: int = 0  # 0: let the launcher pick
    tool_group: str = ""
    chambers: tuple[str, ...] = ()  # cluster tools: process modules
    min_batch: int = 1  # lots per job
    max_batch: int = 1
    slots: int = 25
    load_ports: int = 2  # E87 load ports, each reporting the carrier on it and its slot map
    transfer_s: float = 15.0  # handling time per wafer (simulated seconds)
    manufacturer: str = "Simulated Equipment Inc."
    model: str = "SIM-1"
    location: str = ""
    measurement_sigma: float | None = None  # metrology: noise per site (None: family default)
    drift_per_wafer: float = 0.0  # metrology: drift of the measured value per wafer measured
    # Extra analog channels (Sensor01, Sensor02, ...) published with the process values: real
    # tools expose dozens of status variables; the ingest benchmark uses them to reach its load.
    sensors: int = 0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown tool family {self.family!r}")
        if self.kind is ProcessingKind.CLUSTER and not self.chambers:
            raise ValueError(f"cluster tool {self.tool_id} needs chambers")
        if not 0 <= self.sensors <= 999:
            raise ValueError(f"{self.tool_id}: sensors must be between 0 and 999")
        if not 0 <= self.load_ports <= 16:
            raise ValueError(f"{self.tool_id}: load_ports must be between 0 and 16")
        if not 1 <= self.min_batch <= self.max_batch:
            raise ValueError(f"{self.tool_id}: need 1 <= min_batch <= max_batch")

    @property
    def stations(self) -> tuple[str, ...]:
        """Where wafers are processed: chambers, or one station for the whole tool."""
        if self.kind is ProcessingKind.CLUSTER:
            return self.chambers
        return {
            ProcessingKind.SINGLE_WAFER: ("Stage",),
            ProcessingKind.BATCH: ("Tube",),
            ProcessingKind.WET_BENCH: ("Bath",),
        }[self.kind]

    @property
    def batch_processing(self) -> bool:
        return self.kind in (ProcessingKind.BATCH, ProcessingKind.WET_BENCH)

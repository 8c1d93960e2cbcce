"""The OPC UA contract between the MES and a fab tool: namespace URIs, browse names, enums.

Shared by the MES adapter and by ``equipment_sims`` (which may import only this module of
``mes``, and ``certificates``), so both sides spell every name the same way. Constants only,
plus one pure function (the recipe checksum): no asyncua, sqlalchemy or fastapi here.

The layout follows OPC 40001-1 (UA for Machinery) and OPC 10031-4 (ISA-95 Job Control). The
nodesets of those specifications are not loaded: the simulators create plain objects and
variables with the specifications' browse names in the specifications' namespaces, and put what
the specifications lack (recipes, SEMI control state, counters, chambers, process data) in the
project namespace ``NS_FAB``. Where the project simplifies, the docstrings below say so.

A browse path is a tuple of ``(namespace URI, name)`` pairs below ``Objects``; a client
resolves the URIs to indexes with ``get_namespace_index`` once per connection.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any, Final

# --- namespaces ---------------------------------------------------------------------------
NS_DI: Final = "http://opcfoundation.org/UA/DI/"
NS_MACHINERY: Final = "http://opcfoundation.org/UA/Machinery/"
NS_MACHINERY_JOBS: Final = "http://opcfoundation.org/UA/Machinery/Jobs/"
NS_ISA95_JOBS: Final = "http://opcfoundation.org/UA/ISA95-JOBCONTROL_V2/"
NS_FAB: Final = "urn:fab-mes:opcua:tool:1"

BrowseName = tuple[str, str]  # (namespace URI, name)

# --- browse names -------------------------------------------------------------------------
MACHINES: Final[BrowseName] = (NS_MACHINERY, "Machines")

IDENTIFICATION: Final[BrowseName] = (NS_DI, "Identification")
IDENTIFICATION_PROPERTIES: Final = (
    "Manufacturer",
    "Model",
    "SerialNumber",
    "ProductInstanceUri",
    "SoftwareRevision",
    "YearOfConstruction",
    "DeviceClass",
    "Location",
)

BUILDING_BLOCKS: Final[BrowseName] = (NS_MACHINERY, "MachineryBuildingBlocks")
ITEM_STATE: Final[BrowseName] = (NS_MACHINERY, "MachineryItemState")
OPERATION_MODE: Final[BrowseName] = (NS_MACHINERY, "MachineryOperationMode")
# The state machines of the specification are reduced to their CurrentState variable.
CURRENT_STATE: Final[BrowseName] = (NS_MACHINERY, "CurrentState")

JOB_MANAGEMENT: Final[BrowseName] = (NS_MACHINERY_JOBS, "JobManagement")
JOB_ORDER_CONTROL: Final[BrowseName] = (NS_ISA95_JOBS, "JobOrderControl")
JOB_ORDER_RESULTS: Final[BrowseName] = (NS_ISA95_JOBS, "JobOrderResults")
# JobOrderControl methods (ISA-95 names). Store/StoreAndStart take (JobOrder, Comment) where
# JobOrder is a JSON object string standing in for ISA95JobOrderDataType:
#   {"JobOrderID": str, "WorkMasterID": <recipe id>, "Lots": [{"LotID": str,
#    "CarrierID": str, "Slots": [int, ...], "SubstrateIDs": [str, ...] (optional)}],
#    "Chambers": [str, ...] (optional: the only chambers of a cluster tool to run in)}
# The others take (JobOrderID, Comment). All return ReturnStatus (UInt64, 0 = accepted);
# a refused command is a Bad status code on the call (see REFUSAL_STATUS below).
JOB_METHODS: Final = (
    "Store",
    "StoreAndStart",
    "Start",
    "Stop",
    "Abort",
    "Pause",
    "Resume",
    "Cancel",
    "Clear",
)
JOB_ORDER_LIST: Final = "JobOrderList"  # JSON array of job order summaries
WORK_MASTER: Final = "WorkMaster"  # String[]: the recipe ids the tool holds
EQUIPMENT_ID: Final = "EquipmentID"
MAX_DOWNLOADABLE_JOB_ORDERS: Final = "MaxDownloadableJobOrders"
# JobOrderResults: RequestJobResponseByJobOrderID(JobOrderID) -> (JobResponse JSON, JobState).
REQUEST_JOB_RESPONSE: Final = "RequestJobResponseByJobOrderID"
JOB_ORDER_RESPONSE_LIST: Final = "JobOrderResponseList"  # JSON array of job responses

# Project namespace.
RECIPES: Final[BrowseName] = (NS_FAB, "Recipes")
RECIPE_LIST: Final = "RecipeList"  # String[] of recipe ids
SELECTED_RECIPE: Final = "SelectedRecipe"
RECIPE_CHECKSUMS: Final = "RecipeChecksums"  # JSON object {recipe id: checksum}
DOWNLOAD_RECIPE: Final = "DownloadRecipe"  # (RecipeId, Body JSON, Checksum) -> ReturnStatus
SELECT_RECIPE: Final = "SelectRecipe"  # (RecipeId) -> ReturnStatus
DELETE_RECIPE: Final = "DeleteRecipe"  # (RecipeId) -> ReturnStatus
GET_RECIPE_CHECKSUM: Final = "GetRecipeChecksum"  # (RecipeId) -> Checksum

CONTROL: Final[BrowseName] = (NS_FAB, "Control")
CONTROL_STATE: Final = "ControlState"
GO_ONLINE_REMOTE: Final = "GoOnlineRemote"
GO_ONLINE_LOCAL: Final = "GoOnlineLocal"
GO_OFFLINE: Final = "GoOffline"

COUNTERS: Final[BrowseName] = (NS_FAB, "Counters")
WAFERS_PROCESSED_TOTAL: Final = "WafersProcessedTotal"
CURRENT_JOB_ORDER_ID: Final = "CurrentJobOrderId"
CURRENT_LOT_ID: Final = "CurrentLotId"
CURRENT_SUBSTRATE_ID: Final = "CurrentSubstrateId"
SLOT_MAP: Final = "SlotMap"  # String[25]: per slot "" (empty) or the E90 substrate state
# String (JSON), optional: the E87 load ports as the tool's mapper reads them,
# [{"PortID": int, "CarrierID": str ("" empty), "SlotMap": one str per slot, "" empty}]
LOAD_PORTS: Final = "LoadPorts"

CHAMBERS: Final[BrowseName] = (NS_FAB, "Chambers")
CHAMBER_STATE: Final = "State"
CHAMBER_SUBSTRATE: Final = "CurrentSubstrateId"

PROCESS_DATA: Final[BrowseName] = (NS_FAB, "ProcessData")
# Analog process values: browse name -> engineering unit (UNECE symbol as display name).
PROCESS_VALUES: Final[dict[str, str]] = {
    "ChamberTemperature": "°C",
    "ChamberPressure": "Pa",
    "RfForwardPower": "W",
    "GasFlow_1": "sccm",
    "GasFlow_2": "sccm",
}
STEP_NUMBER: Final = "StepNumber"
STEP_NAME: Final = "StepName"
LAST_MEASUREMENT: Final = "LastMeasurement"  # Double[]: the sites of the last measured wafer

ALARMS: Final[BrowseName] = (NS_FAB, "Alarms")

SIMULATION: Final[BrowseName] = (NS_FAB, "Simulation")  # fault injection (simulators only)
INJECT_FAULT: Final = "InjectFault"  # (Fault, ArgumentsJson) -> ReturnStatus

# Event types (created in NS_FAB, subtypes of BaseEventType; the ISA-95 one keeps its name).
JOB_STATUS_EVENT: Final = "ISA95JobOrderStatusEventType"
# fields: JobOrderID, JobState, JobSubstate, JobResponse (JSON), Sequence (UInt32, per tool)
SUBSTRATE_EVENT: Final = "SubstrateStatusEventType"
# fields: JobOrderID, LotID, SubstrateID, Slot, Chamber, SubstrateState, Measurements, Sequence
EVENT_SEQUENCE: Final = "Sequence"
ALARM_EVENT: Final = "FabAlarmConditionType"
# An AlarmConditionType subtype with one more field, Breaking (Boolean: the alarm interrupts
# processing). One condition object per alarm under Alarms/; Acknowledge (the standard
# AcknowledgeableConditionType method, called on the condition object) takes the EventId of
# the condition's latest event; ConditionRefresh replays retained alarms.

# Method ReturnStatus and refusals.
RETURN_OK: Final = 0
REFUSAL_STATUS: Final[dict[str, str]] = {
    "not_remote": "BadInvalidState",  # host command while not OnlineRemote
    "wrong_state": "BadInvalidState",  # job or tool in a state that forbids the command
    "unknown": "BadNotFound",  # unknown job order or recipe
    "invalid": "BadInvalidArgument",  # malformed job order or recipe, checksum mismatch, batch size
    "busy": "BadResourceUnavailable",  # another job is running, job list full
    "out_of_range": "BadOutOfRange",  # a recipe parameter outside its own min/max
}


# --- enums --------------------------------------------------------------------------------
class ControlState(StrEnum):
    """SEMI E30 (GEM) control state, reduced to its three host-visible states."""

    OFFLINE = "Offline"
    ONLINE_LOCAL = "OnlineLocal"
    ONLINE_REMOTE = "OnlineRemote"


class MachineryItemState(StrEnum):
    NOT_AVAILABLE = "NotAvailable"
    OUT_OF_SERVICE = "OutOfService"
    EXECUTING = "Executing"
    NOT_EXECUTING = "NotExecuting"


class MachineryOperationMode(StrEnum):
    NONE = "None"
    MAINTENANCE = "Maintenance"
    SETUP = "Setup"
    PROCESSING = "Processing"


class JobState(StrEnum):
    """ISA-95 job order states (top level)."""

    NOT_ALLOWED_TO_START = "NotAllowedToStart"
    ALLOWED_TO_START = "AllowedToStart"
    RUNNING = "Running"
    INTERRUPTED = "Interrupted"
    ENDED = "Ended"
    ABORTED = "Aborted"


class JobSubstate(StrEnum):
    """Why a job is where it is: the SEMI E40 outcome the MES needs beside the ISA-95 state."""

    NONE = ""
    WAITING = "Waiting"  # stored, recipe missing or not startable
    READY = "Ready"
    PROCESSING = "Processing"
    PAUSED = "Paused"  # Interrupted by Pause
    HELD = "Held"  # Interrupted by a breaking alarm
    COMPLETED = "Completed"  # Ended: all wafers processed
    STOPPED = "Stopped"  # Ended by Stop: wafers in process finished, the rest not started
    CANCELLED = "Cancelled"  # Ended by Cancel before it started
    ABORTED = "Aborted"  # Aborted: wafers in process aborted


class SubstrateState(StrEnum):
    """SEMI E90 substrate processing state."""

    NEEDS_PROCESSING = "NeedsProcessing"
    IN_PROCESS = "InProcess"
    PROCESSED = "Processed"
    ABORTED = "Aborted"
    STOPPED = "Stopped"
    SKIPPED = "Skipped"


class ChamberState(StrEnum):
    IDLE = "Idle"
    BUSY = "Busy"
    DOWN = "Down"


class ProcessingKind(StrEnum):
    """As ``processing_kind`` of a tool group in the seeded fab."""

    SINGLE_WAFER = "single_wafer"
    CLUSTER = "cluster"
    BATCH = "batch"
    WET_BENCH = "wet_bench"


# --- recipe checksum ----------------------------------------------------------------------
def canonical_recipe_body(body: dict[str, Any]) -> bytes:
    """The canonical JSON form of a recipe body: sorted keys, no whitespace, UTF-8.

    Identical to ``mes.recipes.rules.canonical_body`` (a test holds them together).
    """
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def recipe_checksum(body: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical recipe body."""
    return hashlib.sha256(canonical_recipe_body(body)).hexdigest()

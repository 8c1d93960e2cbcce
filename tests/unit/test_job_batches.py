"""How a batch job's result is shared out among its lots (``jobs.service.split_by_lot``)."""

from __future__ import annotations

from mes.jobs.service import split_by_lot
from mes.lots.models import Lot, Wafer
from mes.opcua.mapping import JobResult, WaferReport


def _lot(code: str, scribes: list[str]) -> Lot:
    lot = Lot(code=code, wafer_count=len(scribes))
    lot.wafers = [Wafer(slot=i, scribe_id=s) for i, s in enumerate(scribes, start=1)]
    return lot


def _report(scribe: str, state: str = "Processed") -> WaferReport:
    return WaferReport(scribe, 1, state, "", ())


def test_per_wafer_reports_are_matched_to_their_lots_by_scribe_id() -> None:
    a, b = _lot("A", ["A1", "A2", "A3"]), _lot("B", ["B1", "B2"])
    result = JobResult(
        "Ended",
        "Completed",
        4,
        (_report("A1"), _report("B1"), _report("A2", "Aborted"), _report("A3"), _report("B2")),
    )
    shares = split_by_lot([a, b], result)
    assert [(lot.code, n, [w.substrate_id for w in ws]) for lot, n, ws in shares] == [
        ("A", 2, ["A1", "A2", "A3"]),
        ("B", 2, ["B1", "B2"]),
    ]


def test_without_wafer_reports_the_count_is_handed_out_in_batch_order() -> None:
    a, b = _lot("A", ["A1", "A2", "A3"]), _lot("B", ["B1", "B2"])
    shares = split_by_lot([a, b], JobResult("Ended", "Stopped", 4, ()))
    assert [(lot.code, n) for lot, n, _ in shares] == [("A", 3), ("B", 1)]


def test_one_lot_without_wafer_reports_takes_the_count_up_to_its_size() -> None:
    a = _lot("A", ["A1", "A2"])
    ((lot, n, reports),) = split_by_lot([a], JobResult("Ended", "Completed", 5, ()))
    assert (lot.code, n, reports) == ("A", 2, [])


def test_wafer_reports_decide_over_the_tools_count_for_one_lot_too() -> None:
    # The tool claims 5 processed but reports one wafer: only what it reports as processed
    # counts, so the unreported wafer makes this a partial run (the lot will be held).
    a = _lot("A", ["A1", "A2"])
    ((lot, n, reports),) = split_by_lot([a], JobResult("Ended", "Completed", 5, (_report("A1"),)))
    assert (lot.code, n, len(reports)) == ("A", 1, 1)


def test_processed_is_spelled_as_the_tool_contract_spells_it() -> None:
    # jobs counts processed wafers by the E90 state the tools send (opcua.model is the contract;
    # jobs sits below opcua and keeps its own copy of the one value it needs).
    from mes.jobs.results import WAFER_PROCESSED
    from mes.opcua.model import SubstrateState

    assert WAFER_PROCESSED == SubstrateState.PROCESSED

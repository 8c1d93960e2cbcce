"""Lot queries through the HTTP API, and the lot tables' own database guarantees.

There is no lot-start API yet (it arrives with the lot transactions), so the tests insert lots
with the ORM through the ``session`` fixture. That session and the client's sessions share the
test's outer transaction, so a flush makes the rows visible to the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, StatementError

from mes.durables.models import Carrier
from mes.equipment.models import Equipment
from mes.fabs.models import Fab
from mes.lots.models import Lot, LotEvent, Wafer
from mes.lots.states import LotState, PriorityClass
from mes.products.models import Product
from mes.routes.models import Route, RouteVersion, Step
from tests.api.problems import assert_problem

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
CET = timezone(timedelta(hours=1))


@dataclass
class Refs:
    """Row ids of the example fab that lots point at."""

    fabs: dict[str, int]
    products: dict[str, int]
    route_versions: dict[str, int]
    steps: dict[tuple[str, int], int]
    carriers: dict[str, int]
    tools: dict[str, int]


@pytest.fixture
async def refs(session) -> Refs:
    fabs = dict((await session.execute(select(Fab.code, Fab.id))).all())
    products = dict((await session.execute(select(Product.code, Product.id))).all())
    route_versions = dict(
        (
            await session.execute(
                select(Route.code, RouteVersion.id)
                .join(RouteVersion, RouteVersion.route_id == Route.id)
                .where(RouteVersion.version == 1)
            )
        ).all()
    )
    steps = {
        (route, sequence): step_id
        for route, sequence, step_id in (
            await session.execute(
                select(Route.code, Step.sequence, Step.id)
                .join(RouteVersion, RouteVersion.route_id == Route.id)
                .join(Step, Step.route_version_id == RouteVersion.id)
                .where(RouteVersion.version == 1)
            )
        )
    }
    carriers = dict(
        (
            await session.execute(
                select(Carrier.code, Carrier.id).where(
                    Carrier.code.in_(["F1-FP0001", "F1-FP0002", "F2-FP0001"])
                )
            )
        ).all()
    )
    tools = dict(
        (
            await session.execute(
                select(Equipment.code, Equipment.id).where(
                    Equipment.code.in_(["F1-WETC01", "F2-LI9301"])
                )
            )
        ).all()
    )
    return Refs(fabs, products, route_versions, steps, carriers, tools)


def make_lot(
    refs: Refs,
    code: str,
    *,
    fab: str = "F1",
    product: str = "LOGIC28",
    route: str = "R-LOGIC28",
    sequence: int | None = 10,
    state: LotState = LotState.WAITING,
    **extra: Any,
) -> Lot:
    values: dict[str, Any] = {
        "priority_class": PriorityClass.NORMAL,
        "wafer_count": 25,
        "started_at": T0,
        **extra,
    }
    values.setdefault("step_entered_at", values["started_at"])
    # The database ties these to the state: a running lot is on a tool, a travelling one has a
    # destination.
    if state == LotState.RUNNING:
        values.setdefault("equipment_id", refs.tools["F1-WETC01"])
    if state == LotState.IN_TRANSIT:
        values.setdefault("destination_fab_id", refs.fabs["F2" if fab == "F1" else "F1"])
    return Lot(
        code=code,
        fab_id=refs.fabs[fab],
        product_id=refs.products[product],
        route_version_id=refs.route_versions[route],
        current_step_id=refs.steps[(route, sequence)] if sequence is not None else None,
        state=state,
        **values,
    )


@pytest.fixture
async def lots(session, refs) -> dict[str, Lot]:
    """Five lots across both fabs, in every kind of state."""
    first = make_lot(
        refs,
        "A24-0001.01",
        wafer_count=3,
        carrier_id=refs.carriers["F1-FP0001"],
        # Started 07:30 Central European time = 06:30 UTC.
        started_at=datetime(2026, 1, 5, 7, 30, tzinfo=CET),
        due_at=datetime(2026, 2, 1, 12, 0, tzinfo=UTC),
    )
    lots = {
        lot.code: lot
        for lot in (
            first,
            make_lot(
                refs,
                "A24-0002.01",
                product="ANALOG180",
                route="R-ANALOG",
                sequence=150,
                state=LotState.RUNNING,
                priority_class=PriorityClass.HOT,
                carrier_id=refs.carriers["F1-FP0002"],
            ),
            make_lot(
                refs,
                "A24-0003.01",
                fab="F2",
                sequence=160,
                state=LotState.ON_HOLD,
                priority_class=PriorityClass.SUPER_HOT,
                wafer_count=12,
            ),
            make_lot(
                refs,
                "M24-0001.01",
                fab="F2",
                product="MONITOR",
                route="R-TESTWF",
                sequence=None,
                state=LotState.COMPLETED,
                ended_at=T0 + timedelta(days=2),
            ),
        )
    }
    session.add_all(lots.values())
    await session.flush()
    # A child split from the first lot, and the first lot's wafers added out of slot order.
    child = make_lot(
        refs,
        "A24-0001.02",
        state=LotState.IN_TRANSIT,
        priority_class=PriorityClass.HOT,
        wafer_count=0,
        parent_lot_id=first.id,
    )
    lots[child.code] = child
    session.add(child)
    for slot in (3, 1, 2):
        session.add(
            Wafer(scribe_id=f"A240001-{slot:02d}", lot_id=first.id, fab_id=first.fab_id, slot=slot)
        )
    await session.flush()
    return lots


async def codes(client: Any, **params: Any) -> tuple[int, list[str]]:
    response = await client.get("/api/v1/lots", params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    return page["total"], [lot["code"] for lot in page["items"]]


# --- listing --------------------------------------------------------------------------------


async def test_no_lots_in_the_example_fab(client):
    page = (await client.get("/api/v1/lots")).json()
    assert (page["total"], page["items"], page["limit"], page["offset"]) == (0, [], 50, 0)


async def test_list_all_lots_in_code_order(client, lots):
    assert await codes(client) == (
        5,
        ["A24-0001.01", "A24-0001.02", "A24-0002.01", "A24-0003.01", "M24-0001.01"],
    )


async def test_list_row_content(client, lots):
    items = {lot["code"]: lot for lot in (await client.get("/api/v1/lots")).json()["items"]}
    assert items["A24-0002.01"] == {
        "code": "A24-0002.01",
        "fab": "F1",
        "product": "ANALOG180",
        "route": "R-ANALOG",
        "route_version": 1,
        "step": {"sequence": 150, "operation": "GATE_LITHO", "tool_group": "LITHO_193"},
        "state": "Running",
        "lot_type": "production",
        "priority_class": "hot",
        "due_at": None,
        "wafer_count": 25,
        "carrier": "F1-FP0002",
        "parent": None,
        "started_at": "2026-01-05T06:00:00Z",
        "ended_at": None,
        "version": 1,
    }
    assert items["A24-0001.02"]["parent"] == "A24-0001.01"
    assert items["M24-0001.01"]["step"] is None
    assert items["M24-0001.01"]["ended_at"] == "2026-01-07T06:00:00Z"


LOT_FILTERS = [
    ({"fab": "F1"}, ["A24-0001.01", "A24-0001.02", "A24-0002.01"]),
    ({"fab": "F2"}, ["A24-0003.01", "M24-0001.01"]),
    ({"fab": "F9"}, []),
    ({"product": "LOGIC28"}, ["A24-0001.01", "A24-0001.02", "A24-0003.01"]),
    ({"product": "MONITOR"}, ["M24-0001.01"]),
    ({"state": "OnHold"}, ["A24-0003.01"]),
    ({"state": "Completed"}, ["M24-0001.01"]),
    ({"state": "Scrapped"}, []),
    ({"priority_class": "hot"}, ["A24-0001.02", "A24-0002.01"]),
    ({"priority_class": "super_hot"}, ["A24-0003.01"]),
    ({"fab": "F1", "product": "LOGIC28"}, ["A24-0001.01", "A24-0001.02"]),
    ({"fab": "F1", "product": "LOGIC28", "priority_class": "hot"}, ["A24-0001.02"]),
    ({"fab": "F2", "state": "Waiting"}, []),
]


async def test_list_filters(client, lots):
    for params, expected in LOT_FILTERS:
        assert await codes(client, **params) == (len(expected), expected), params


async def test_list_pagination(client, lots):
    response = await client.get("/api/v1/lots", params={"limit": 2, "offset": 2})
    page = response.json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)
    assert [lot["code"] for lot in page["items"]] == ["A24-0002.01", "A24-0003.01"]


async def test_list_refuses_unknown_filter_values(client):
    for params in ({"state": "Sleeping"}, {"priority_class": "lukewarm"}, {"fab": "F 1"}):
        response = await client.get("/api/v1/lots", params=params)
        assert_problem(response, 422, "request.invalid")


# --- one lot --------------------------------------------------------------------------------


async def test_lot_detail_lists_wafers_in_slot_order(client, lots):
    response = await client.get("/api/v1/lots/A24-0001.01")
    assert response.status_code == 200, response.text
    lot = response.json()
    assert lot["wafers"] == [
        {"scribe_id": "A240001-01", "slot": 1, "state": "active"},
        {"scribe_id": "A240001-02", "slot": 2, "state": "active"},
        {"scribe_id": "A240001-03", "slot": 3, "state": "active"},
    ]
    assert lot["step"] == {"sequence": 10, "operation": "PAD_OX_CLEAN", "tool_group": "WET_CLEAN"}
    assert (lot["fab"], lot["product"], lot["route"], lot["route_version"]) == (
        "F1",
        "LOGIC28",
        "R-LOGIC28",
        1,
    )
    assert (lot["carrier"], lot["wafer_count"], lot["state"]) == ("F1-FP0001", 3, "Waiting")
    # Stored from a CET time, read back as the same instant in UTC.
    assert lot["started_at"] == "2026-01-05T06:30:00Z"
    assert lot["due_at"] == "2026-02-01T12:00:00Z"


async def test_lot_without_wafers_and_finished_lot(client, lots):
    child = (await client.get("/api/v1/lots/A24-0001.02")).json()
    assert (child["wafers"], child["parent"], child["state"]) == ([], "A24-0001.01", "InTransit")
    done = (await client.get("/api/v1/lots/M24-0001.01")).json()
    assert (done["step"], done["state"], done["ended_at"]) == (
        None,
        "Completed",
        "2026-01-07T06:00:00Z",
    )


async def test_unknown_lot_is_404(client, lots):
    assert_problem(await client.get("/api/v1/lots/NOPE"), 404, "lot.not_found")
    assert_problem(await client.get("/api/v1/lots/NOPE/history"), 404, "lot.not_found")


# --- history --------------------------------------------------------------------------------


@pytest.fixture
async def history(session, refs, lots) -> None:
    lot = lots["A24-0001.01"]
    step10 = refs.steps[("R-LOGIC28", 10)]
    later = T0 + timedelta(hours=1)
    # Added out of time order; two events share a timestamp (then the insert order decides).
    events = [
        LotEvent(
            lot_id=lot.id,
            fab_id=refs.fabs["F1"],
            event_type="TrackIn",
            occurred_at=later,
            actor="op.ida",
            step_id=step10,
            equipment_id=refs.tools["F1-WETC01"],
            before={"state": "Waiting"},
            after={"state": "Running", "tool": "F1-WETC01"},
        ),
        LotEvent(
            lot_id=lot.id,
            fab_id=refs.fabs["F1"],
            event_type="Start",
            occurred_at=T0 + timedelta(minutes=30),
            actor="planner",
            step_id=step10,
            after={"state": "Waiting", "wafer_count": 3},
        ),
        LotEvent(
            lot_id=lot.id,
            fab_id=refs.fabs["F1"],
            event_type="Hold",
            occurred_at=later,
            actor="op.ida",
            reason="particles on slot 2",
        ),
        # An event recorded in the other fab keeps that fab, whatever the lot's fab is now.
        LotEvent(
            lot_id=lot.id,
            fab_id=refs.fabs["F2"],
            event_type="Inspect",
            occurred_at=datetime(2026, 1, 5, 9, 0, tzinfo=CET),
            actor="qa.jan",
            equipment_id=refs.tools["F2-LI9301"],
        ),
    ]
    for event in events:
        session.add(event)
        await session.flush()
    # Another lot's events never show up in this lot's history.
    session.add(
        LotEvent(
            lot_id=lots["A24-0002.01"].id,
            fab_id=refs.fabs["F1"],
            event_type="Start",
            occurred_at=T0,
            actor="planner",
        )
    )
    await session.flush()


async def test_history_is_oldest_first(client, history):
    response = await client.get("/api/v1/lots/A24-0001.01/history")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == 4
    assert [(e["event_type"], e["occurred_at"]) for e in page["items"]] == [
        ("Start", "2026-01-05T06:30:00Z"),
        ("TrackIn", "2026-01-05T07:00:00Z"),
        ("Hold", "2026-01-05T07:00:00Z"),
        ("Inspect", "2026-01-05T08:00:00Z"),
    ]
    start, track_in, hold, inspect = page["items"]
    assert track_in == {
        "event_type": "TrackIn",
        "occurred_at": "2026-01-05T07:00:00Z",
        "actor": "op.ida",
        "fab": "F1",
        "step_sequence": 10,
        "tool": "F1-WETC01",
        "reason": None,
        "before": {"state": "Waiting"},
        "after": {"state": "Running", "tool": "F1-WETC01"},
    }
    assert (start["step_sequence"], start["tool"], start["before"]) == (10, None, None)
    assert start["after"] == {"state": "Waiting", "wafer_count": 3}
    assert (hold["reason"], hold["step_sequence"], hold["tool"]) == (
        "particles on slot 2",
        None,
        None,
    )
    assert (inspect["fab"], inspect["tool"]) == ("F2", "F2-LI9301")


async def test_history_pagination(client, history):
    page = (
        await client.get("/api/v1/lots/A24-0001.01/history", params={"limit": 2, "offset": 1})
    ).json()
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 1)
    assert [e["event_type"] for e in page["items"]] == ["TrackIn", "Hold"]


async def test_history_of_a_lot_without_events_is_empty(client, history):
    page = (await client.get("/api/v1/lots/A24-0003.01/history")).json()
    assert (page["total"], page["items"]) == (0, [])


# --- timestamps -----------------------------------------------------------------------------


async def test_timestamps_read_back_are_utc(session, lots):
    lot = lots["A24-0001.01"]
    await session.refresh(lot)
    for value in (lot.started_at, lot.due_at, lot.created_at, lot.updated_at):
        assert value is not None
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
    assert lot.started_at == datetime(2026, 1, 5, 6, 30, tzinfo=UTC)
    assert lot.started_at.hour == 6  # converted, not merely relabelled

    fetched = await session.scalar(
        select(Lot.started_at)
        .where(Lot.code == "A24-0001.01")
        .execution_options(populate_existing=True)
    )
    assert fetched == datetime(2026, 1, 5, 6, 30, tzinfo=UTC)
    assert fetched.utcoffset() == timedelta(0)


async def test_naive_datetime_is_refused(session, refs):
    async with session.begin_nested():
        session.add(make_lot(refs, "NAIVE-01", started_at=datetime(2026, 1, 5, 8, 0)))
        with pytest.raises(StatementError) as caught:
            await session.flush()
    assert isinstance(caught.value.orig, ValueError)
    assert "naive datetime" in str(caught.value)
    assert await session.scalar(select(Lot.id).where(Lot.code == "NAIVE-01")) is None


async def test_naive_event_time_is_refused(session, lots, refs):
    async with session.begin_nested():
        session.add(
            LotEvent(
                lot_id=lots["A24-0001.01"].id,
                fab_id=refs.fabs["F1"],
                event_type="Start",
                occurred_at=datetime(2026, 1, 5, 8, 0),
                actor="x",
            )
        )
        with pytest.raises(StatementError) as caught:
            await session.flush()
    assert isinstance(caught.value.orig, ValueError)
    assert await session.scalar(select(func.count()).select_from(LotEvent)) == 0


# --- database constraints -------------------------------------------------------------------


async def assert_refused(session: Any, constraint: str | tuple[str, ...], *rows: Any) -> None:
    """The database refuses ``rows`` for ``constraint`` (its name, or what SQLite reports
    instead); the test's session stays usable afterwards."""
    async with session.begin_nested():
        session.add_all(rows)
        with pytest.raises(IntegrityError) as caught:
            await session.flush()
    message = str(caught.value.orig)
    expected = (constraint,) if isinstance(constraint, str) else constraint
    assert any(e in message for e in expected), message
    # The savepoint was rolled back: the session works and holds none of the refused rows.
    assert all(row not in session for row in rows)
    assert await session.scalar(select(Fab.id).where(Fab.code == "F1")) is not None


def wafer(lot: Lot, slot: int, scribe: str | None = None, fab_id: int | None = None) -> Wafer:
    return Wafer(
        scribe_id=scribe or f"W-{lot.code}-{slot}",
        lot_id=lot.id,
        fab_id=fab_id if fab_id is not None else lot.fab_id,
        slot=slot,
    )


@pytest.mark.parametrize("slot", [0, 26])
async def test_wafer_slot_outside_the_carrier_is_refused(session, lots, slot):
    await assert_refused(session, "ck_wafer_slot_range", wafer(lots["A24-0001.01"], slot))


async def test_wafer_slots_1_and_25_are_accepted(session, lots):
    lot = lots["A24-0001.02"]
    async with session.begin_nested():
        session.add_all([wafer(lot, 1), wafer(lot, 25)])
        await session.flush()
    slots = await session.scalars(select(Wafer.slot).where(Wafer.lot_id == lot.id))
    assert sorted(slots) == [1, 25]


async def test_two_wafers_in_one_slot_are_refused(session, lots):
    await assert_refused(
        session,
        ("uq_wafer_lot_id_slot", "UNIQUE constraint failed: wafer.lot_id, wafer.slot"),
        wafer(lots["A24-0001.01"], 2, scribe="A240001-XX"),
    )


async def test_duplicate_scribe_id_is_refused(session, lots):
    await assert_refused(
        session,
        ("uq_wafer_scribe_id", "UNIQUE constraint failed: wafer.scribe_id"),
        wafer(lots["A24-0001.02"], 4, scribe="A240001-01"),
    )


async def test_wafer_in_another_fab_than_its_lot_is_refused(session, lots, refs):
    await assert_refused(
        session,
        ("fk_wafer_lot_id_lot", "FOREIGN KEY constraint failed"),
        wafer(lots["A24-0001.01"], 9, fab_id=refs.fabs["F2"]),
    )


@pytest.mark.parametrize("count", [-1, 26])
async def test_wafer_count_outside_0_to_25_is_refused(session, refs, count):
    await assert_refused(
        session, "ck_lot_wafer_count_range", make_lot(refs, "BAD-0001", wafer_count=count)
    )


@pytest.mark.parametrize(
    "state", [LotState.WAITING, LotState.RUNNING, LotState.ON_HOLD, LotState.IN_TRANSIT]
)
async def test_active_lot_without_a_step_is_refused(session, refs, state):
    await assert_refused(
        session,
        "ck_lot_active_lot_has_step",
        make_lot(refs, "BAD-0001", sequence=None, state=state),
    )


@pytest.mark.parametrize("state", [LotState.COMPLETED, LotState.SCRAPPED, LotState.TERMINATED])
async def test_finished_lot_without_end_time_is_refused(session, refs, state):
    await assert_refused(
        session,
        "ck_lot_ended_iff_final",
        make_lot(refs, "BAD-0001", sequence=None, state=state),
    )


async def test_active_lot_with_an_end_time_is_refused(session, refs):
    await assert_refused(
        session,
        "ck_lot_ended_iff_final",
        make_lot(refs, "BAD-0001", ended_at=T0 + timedelta(hours=1)),
    )


async def test_duplicate_lot_code_is_refused(session, lots, refs):
    await assert_refused(
        session,
        ("uq_lot_code", "UNIQUE constraint failed: lot.code"),
        make_lot(refs, "A24-0002.01"),
    )


async def test_a_sound_lot_is_accepted_by_the_same_checks(session, refs):
    # The positive twin of the refusals above: the helper's defaults make a valid lot.
    lot = make_lot(refs, "GOOD-0001", sequence=None, state=LotState.SCRAPPED, ended_at=T0)
    async with session.begin_nested():
        session.add(lot)
        await session.flush()
    assert await session.scalar(select(Lot.state).where(Lot.code == "GOOD-0001")) == (
        LotState.SCRAPPED
    )
    assert lot.version == 1


async def test_running_lot_without_a_tool_is_refused(session, refs):
    await assert_refused(
        session,
        "ck_lot_running_iff_on_tool",
        make_lot(refs, "BAD-0001", state=LotState.RUNNING, equipment_id=None),
    )


async def test_waiting_lot_on_a_tool_is_refused(session, refs):
    await assert_refused(
        session,
        "ck_lot_running_iff_on_tool",
        make_lot(refs, "BAD-0001", equipment_id=refs.tools["F1-WETC01"]),
    )


async def test_lot_in_transit_needs_its_destination(session, refs):
    await assert_refused(
        session,
        "ck_lot_in_transit_iff_destination",
        make_lot(refs, "BAD-0001", state=LotState.IN_TRANSIT, destination_fab_id=None),
    )

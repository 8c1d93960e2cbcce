"""Q-time rules beyond the deadline: a minimum wait, rework that restarts a window, and jumps
that void only the windows they make meaningless."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from mes.lots.models import Lot, QTimeWindow
from mes.routes.models import RouteVersion, Step
from mes.routes.rules import StepShape, route_problems
from tests.api.problems import assert_problem
from tests.api.test_lot_transactions import SIGNED, move, start, tools_for


async def _set_window(session, *, sequence: int, to: int, min_s: int | None = None) -> None:
    """Give step ``sequence`` of the LOGIC28 route a 4-hour window to step ``to``."""
    route_versions = (
        select(RouteVersion.id)
        .join(RouteVersion.route)
        .where(RouteVersion.route.has(code="R-LOGIC28"))
    )
    await session.execute(
        update(Step)
        .where(Step.route_version_id.in_(route_versions), Step.sequence == sequence)
        .values(qtime_to_sequence=to, qtime_max_s=4 * 3600, qtime_min_s=min_s)
    )
    await session.flush()


async def _windows(session, code: str) -> list[tuple[str, object]]:
    rows = await session.execute(
        select(QTimeWindow.status, QTimeWindow.deadline_at)
        .join(Lot, Lot.id == QTimeWindow.lot_id)
        .where(Lot.code == code)
        .order_by(QTimeWindow.id)
    )
    return [(status.value, deadline) for status, deadline in rows.all()]


async def _jump(client, code: str, to: int) -> None:
    jumped = await client.post(
        f"/api/v1/lots/{code}/jump", json={"to_sequence": to, "signature": SIGNED}
    )
    assert jumped.status_code == 200, jumped.text


async def test_a_minimum_qtime_refuses_an_early_start_without_holding(client, session, clock):
    await _set_window(session, sequence=110, to=120, min_s=1800)
    code = (await start(client))["code"]
    await _jump(client, code, 110)
    await move(client, code)  # leaves 110: the furnace may not start for 30 minutes
    lot = (await client.get(f"/api/v1/lots/{code}")).json()
    furnace = (await tools_for(client, lot))[0]

    clock.advance(timedelta(minutes=20))
    early = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": furnace})
    assert_problem(early, 409, "lot.qtime_min_not_reached")
    after = (await client.get(f"/api/v1/lots/{code}")).json()
    assert (after["state"], after["holds"]) == ("Waiting", [])  # refused, not held

    clock.advance(timedelta(minutes=11))
    ok = await client.post(f"/api/v1/lots/{code}/track-in", json={"tool": furnace})
    assert ok.status_code == 200, ok.text
    assert [s for s, _ in await _windows(session, code)] == ["met"]


def test_a_minimum_must_be_shorter_than_its_maximum():
    def shape(min_s: int | None, max_s: int | None) -> list[StepShape]:
        return [
            StepShape(
                1,
                "G",
                "R",
                qtime_to_sequence=2 if max_s else None,
                qtime_max_s=max_s,
                qtime_min_s=min_s,
            ),
            StepShape(2, "G", "R"),
        ]

    assert route_problems(shape(300, 600)) == []
    assert route_problems(shape(None, 600)) == []
    for bad in ((900, 600), (600, 600), (300, None)):
        problems = route_problems(shape(*bad))
        assert [p.sequence for p in problems] == [1], bad
        assert "minimum Q-time" in problems[0].message


async def test_rework_to_the_windows_start_voids_it_and_the_rerun_opens_a_new_one(
    client, session, clock
):
    # LITHO (150) opens a window to ETCH (170); overlay (160) reworks back to 150.
    await _set_window(session, sequence=150, to=170)
    code = (await start(client))["code"]
    await _jump(client, code, 150)
    await move(client, code)
    assert [s for s, _ in await _windows(session, code)] == ["open"]
    clock.advance(timedelta(hours=3))
    reworked = await move(client, code, outcome="rework")
    assert reworked["step"]["sequence"] == 150
    assert [s for s, _ in await _windows(session, code)] == ["void"]

    clock.advance(timedelta(hours=2))  # the first window's deadline passes: no false hold
    await move(client, code)  # litho again: a fresh window from now
    statuses = await _windows(session, code)
    assert [s for s, _ in statuses] == ["void", "open"]
    assert statuses[1][1] == clock.now() + timedelta(hours=4)
    await move(client, code)  # overlay passes
    lot = (await client.get(f"/api/v1/lots/{code}")).json()
    assert (lot["state"], lot["step"]["sequence"]) == ("Waiting", 170)


async def test_a_jump_keeps_a_window_whose_end_is_still_ahead(client, session):
    await _set_window(session, sequence=110, to=140)
    code = (await start(client))["code"]
    await _jump(client, code, 110)
    await move(client, code)  # at 120, window open to 140
    await _jump(client, code, 130)  # 140 is still ahead: the deadline still applies
    assert [s for s, _ in await _windows(session, code)] == ["open"]
    await _jump(client, code, 150)  # past 140: the window can no longer be met or missed
    assert [s for s, _ in await _windows(session, code)] == ["void"]


async def test_a_jump_back_to_the_windows_start_voids_it(client, session):
    await _set_window(session, sequence=110, to=140)
    code = (await start(client))["code"]
    await _jump(client, code, 110)
    await move(client, code)
    await _jump(client, code, 100)
    assert [s for s, _ in await _windows(session, code)] == ["void"]

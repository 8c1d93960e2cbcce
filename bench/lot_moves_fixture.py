"""The benchmark's database: the example fab, plus a private set of tools per client."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from mes.audit import recorder
from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind
from mes.auth.service import Principal
from mes.clock import SystemClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.equipment.models import Equipment
from mes.lots import service as lot_service
from mes.lots.states import PriorityClass
from mes.routes.models import Route, RouteVersion, Step
from mes.seed import loader

PRODUCT, ROUTE, FAB = "LOGIC28", "R-LOGIC28", "F1"
STARTER = ("engineer", "change-me-engineer")  # may start lots
OPERATOR = ("operator", "change-me-operator")  # certified on every tool group; moves lots


def bench_tool(client: int, template: str) -> str:
    return f"B{client:03d}-{template}"


@dataclass
class Fixture:
    """What the seeding made: each client's tool per tool group, the raw workers' lots."""

    tools: dict[int, dict[str, str]]  # client → tool group code → tool code
    tool_ids: dict[int, dict[int, int]]  # client → tool group id → tool id
    steps: list[tuple[int, int]]  # (step id, tool group id) of the route, in order
    raw_lots: list[tuple[int, int]]  # (lot id, fab id), one per raw worker
    seed_s: float


async def prepare(url: str, clients: int) -> Fixture:
    began = time.perf_counter()
    recorder.install()  # the fixture's own writes are audited as in the service
    db = Database.from_settings(Settings(database_url=url))
    try:
        await migrate.upgrade(db.engine)
        data = loader.read_example()
        route = next(r for r in data.routes if r.code == ROUTE)
        groups = sorted({st.tool_group for st in route.steps})
        templates = {
            g: next(t for t in data.tools if t.fab == FAB and t.tool_group == g) for g in groups
        }
        by_template = {t.code for t in templates.values()}
        for n in range(clients):
            for template in templates.values():
                data.tools.append(
                    template.model_copy(
                        update={
                            "code": bench_tool(n, template.code),
                            "name": f"bench client {n}: {template.name}"[:128],
                            "opcua_endpoint": None,
                        }
                    )
                )
            # Litho recipes need their reticle at the tool: give each private tool its copies
            # (without a use limit, so a long run never exhausts them).
            for durable in [d for d in data.durables if d.at_tool in by_template]:
                data.durables.append(
                    durable.model_copy(
                        update={
                            "code": f"{durable.code}-C{n}"[:32],
                            "at_tool": bench_tool(n, durable.at_tool),
                            "usage_limit": None,
                        }
                    )
                )
        async with unit_of_work(db) as session:
            await loader.load(session, data, clock=SystemClock())
        async with unit_of_work(db) as session:
            # The raw workers' lots, started by the service itself (the API is not up yet).
            bind(
                session,
                AuditContext(actor="bench", role="system", operation="bench.start", at=utc_now()),
            )
            raw = await lot_service.start_lots(
                session,
                product_code=PRODUCT,
                fab_code=FAB,
                route_code=ROUTE,
                count=clients,
                wafer_count=25,
                priority_class=PriorityClass.NORMAL,
                due_at=None,
                code=None,
                carrier_code=None,
                actor=Principal(0, "bench", AccountKind.SERVICE, frozenset(), None),
                clock=SystemClock(),
            )
            raw_lots = [(lot.id, lot.fab_id) for lot in raw]
        async with unit_of_work(db, write=False) as session:
            version_id = await session.scalar(
                select(RouteVersion.id)
                .join(Route, Route.id == RouteVersion.route_id)
                .where(Route.code == ROUTE, RouteVersion.version == 1)
            )
            steps = [
                (sid, gid)
                for sid, gid in (
                    await session.execute(
                        select(Step.id, Step.tool_group_id)
                        .where(Step.route_version_id == version_id)
                        .order_by(Step.sequence)
                    )
                ).all()
            ]
            rows = (
                await session.execute(
                    select(Equipment.code, Equipment.id, Equipment.tool_group_id).where(
                        Equipment.code.like("B%")
                    )
                )
            ).all()
        by_code = {code: (tid, gid) for code, tid, gid in rows}
        tools: dict[int, dict[str, str]] = {}
        tool_ids: dict[int, dict[int, int]] = {}
        for n in range(clients):
            tools[n] = {g: bench_tool(n, t.code) for g, t in templates.items()}
            tool_ids[n] = {by_code[c][1]: by_code[c][0] for c in tools[n].values()}
        return Fixture(tools, tool_ids, steps, raw_lots, time.perf_counter() - began)
    finally:
        await db.dispose()


def utc_now() -> datetime:
    return datetime.now(UTC)

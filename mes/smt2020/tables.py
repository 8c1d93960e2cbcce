"""SMT2020 testbed tables (Kopp, Hassoun, Kalir, Mönch 2020), read into plain dataclasses.

Pure: no database, no MES types, so the fab simulator reads the same folders with the same code.
Nothing about counts is assumed (products, routes, families, lots all come from the files).
The files are AutoSched AP input tables: tab-separated with a header line; ``IGNORE`` columns
are comments; units per row (``sec``, ``min``, ``hr``, ``day``); uniform distributions are
``mean, spread`` (we keep both and use the mean).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

WAFERS_PER_LOT = 25
TIME_FORMAT = "%m/%d/%y %H:%M:%S"
UNIT_S = {"sec": 1.0, "s": 1.0, "min": 60.0, "hr": 3600.0, "hour": 3600.0, "day": 86400.0}


class TestbedError(ValueError):
    """A table is missing or a row does not read; the message names file and line."""

    __test__ = False  # not a pytest class, despite the name


@dataclass(frozen=True)
class ToolFamily:
    name: str
    area: str  # STNGRP
    count: int  # STNQTY
    location: str  # "Fab" or "Delay"
    cascading: bool
    load_s: float
    unload_s: float
    rule: str  # RULE, e.g. rule_HotLotFIRST
    ranking: tuple[str, ...]  # FWLRANK split on ";"
    wake_rank: str
    setup_group: str
    # BATCHCRITF: which lots may share a batch; ``crit_sameroutestep`` = only lots of the same
    # route and step (empty: lots of the same step name, whatever their route).
    batch_criterion: str = ""

    @property
    def is_delay(self) -> bool:
        return self.location.lower() == "delay"

    @property
    def batches_per_route_step(self) -> bool:
        return self.batch_criterion.lower() == "crit_sameroutestep"


@dataclass(frozen=True)
class RouteStep:
    route: str
    step: int
    desc: str
    family: str
    process_s: float  # mean, in the unit ``per`` says
    process_spread_s: float
    per: str  # per_lot, per_piece, per_batch
    batch_min_wafers: int | None
    batch_max_wafers: int | None
    setup: str | None
    setup_time_s: float | None
    same_tool_for_step: int | None  # SVESTN=yes + FORSTEP=j: step j runs on this step's tool
    rework_step: int | None
    rework_percent: float
    step_percent: float  # sampling: % of lots that run the step
    cqt_step: int | None  # the step a critical queue-time window ends at
    cqt_s: float | None
    # Cascading tools: the next lot may start this long after this one (PartInterval per wafer,
    # BatchInterval per lot or batch) while this one still runs; None: not cascading.
    cascade_s: float | None = None
    cascade_per: str = "per_piece"

    def cascade_lot_s(self, wafers: int = WAFERS_PER_LOT) -> float | None:
        """How long after its start a lot frees a cascading tool for the next lot."""
        if self.cascade_s is None:
            return None
        return self.cascade_s * wafers if self.cascade_per == "per_piece" else self.cascade_s

    def lot_process_s(self, wafers: int = WAFERS_PER_LOT) -> float:
        """Processing time of one lot (per_batch: of one batch)."""
        return self.process_s * wafers if self.per == "per_piece" else self.process_s

    @property
    def batch_lots(self) -> tuple[int, int] | None:
        """Batch size in lots (min, max), from the wafer counts of the table."""
        if self.batch_max_wafers is None:
            return None
        high = max(1, self.batch_max_wafers // WAFERS_PER_LOT)
        low = max(1, math.ceil((self.batch_min_wafers or WAFERS_PER_LOT) / WAFERS_PER_LOT))
        return min(low, high), high


@dataclass(frozen=True)
class Part:
    part: str
    family: str
    route_file: str
    route: str


@dataclass(frozen=True)
class Lot:
    """A lot of the initial WIP (or a release stream of order.txt, with ``repeat_s``)."""

    name: str
    part: str
    priority: int  # 10 normal, 20 hot, 30 super-hot
    pieces: int
    start: datetime
    due: datetime | None
    step: int | None = None  # CURSTEP (WIP only)
    repeat_s: float | None = None
    repetitions: int | None = None


@dataclass(frozen=True)
class SetupTime:
    from_setup: str | None  # None: from any setup
    to_setup: str
    time_s: float


@dataclass(frozen=True)
class MinRun:
    group: str
    setup: str
    min_run: int


@dataclass(frozen=True)
class DownCalendar:
    """Breakdowns (``downcal.txt``): time to failure in calendar time, time to repair."""

    name: str
    mttf_dist: str  # exponential, constant or uniform
    mttf_s: float
    mttr_dist: str
    mttr_s: float


@dataclass(frozen=True)
class PmCalendar:
    """Preventive maintenance (``pmcal.txt``): every ``every`` seconds of calendar time, or
    every ``every`` wafers when ``by_wafers``; the PM takes ``duration_s`` (uniform ± spread)."""

    name: str
    every: float
    by_wafers: bool
    duration_dist: str
    duration_s: float
    duration_spread_s: float


@dataclass(frozen=True)
class Attachment:
    """``attach.txt``: a calendar on an area (``stngrp``) or a tool family (``stnfam``), with
    its first occurrence (seconds, or wafers for a wafer-count PM)."""

    calendar: str
    kind: str  # down or pm
    resource_type: str  # stngrp or stnfam
    resource: str
    first_dist: str
    first: float
    first_in_wafers: bool


@dataclass(frozen=True)
class Testbed:
    families: Mapping[str, ToolFamily]
    parts: tuple[Part, ...]
    routes: Mapping[str, tuple[RouteStep, ...]]
    wip: tuple[Lot, ...]
    orders: tuple[Lot, ...] = ()
    setup_times: tuple[SetupTime, ...] = ()
    min_runs: tuple[MinRun, ...] = ()
    transport_s: float | None = None
    transport_spread_s: float = 0.0
    downs: Mapping[str, DownCalendar] = field(default_factory=dict)
    pms: Mapping[str, PmCalendar] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()

    @property
    def start(self) -> datetime:
        """Time zero of the testbed: the earliest release of the WIP and the orders."""
        times = [lot.start for lot in (*self.wip, *self.orders)]
        return min(times) if times else datetime(2018, 1, 1, tzinfo=UTC)

    def recipe_name(self, step: RouteStep) -> str:
        """The recipe a step runs, as the MES importer and the simulator both name it: one per
        family and step description (DESC is the testbed's batch key: lots of one recipe may
        share a batch), and for a family batching by route and step (``crit_sameroutestep``)
        one per route and step, so that lots of two routes never batch together there."""
        name = f"{step.family}.{step.desc}"
        family = self.families.get(step.family)
        if family is not None and family.batches_per_route_step:
            name += f"@{step.route}.{step.step}"
        return name[:64]


# --- reading -------------------------------------------------------------------------------


def rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row by column name) of a tab-separated table; short rows are padded."""
    try:
        text = path.read_text("utf-8-sig")
    except FileNotFoundError as exc:
        raise TestbedError(f"{path.name}: missing") from exc
    reader = csv.reader(text.splitlines(), delimiter="\t")
    header = [h.strip() for h in next(reader, [])]
    if not header:
        raise TestbedError(f"{path.name}: empty")
    for number, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        padded = [v.strip() for v in values] + [""] * (len(header) - len(values))
        yield number, dict(zip(header, padded, strict=False))


def _float(value: str, where: str, *, default: float | None = None) -> float:
    if value == "":
        if default is None:
            raise TestbedError(f"{where}: a number is missing")
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise TestbedError(f"{where}: {value!r} is not a number") from exc


def _int(value: str, where: str) -> int | None:
    return None if value == "" else round(_float(value, where))


def seconds(amount: str, unit: str, where: str) -> float:
    factor = UNIT_S.get(unit.strip().lower())
    if factor is None:
        raise TestbedError(f"{where}: unknown time unit {unit!r}")
    return _float(amount, where) * factor


def _time(value: str, where: str) -> datetime:
    try:
        return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise TestbedError(f"{where}: {value!r} is not a time like 01/31/18 07:29:20") from exc


def read_families(path: Path) -> dict[str, ToolFamily]:
    out = {}
    for n, r in rows(path):
        where = f"{path.name}:{n}"
        name = r.get("STNFAM", "")
        if not name:
            raise TestbedError(f"{where}: STNFAM is empty")
        out[name] = ToolFamily(
            name=name,
            area=r.get("STNGRP") or name,
            count=max(1, round(_float(r.get("STNQTY", ""), where, default=1))),
            location=r.get("STNFAMLOC") or "Fab",
            cascading=r.get("STNCAP", "") not in ("", "1", "1.0"),
            load_s=seconds(r["LTIME"], r.get("LTUNITS") or "min", where) if r.get("LTIME") else 0,
            unload_s=seconds(r["ULTIME"], r.get("ULTUNITS") or "min", where)
            if r.get("ULTIME")
            else 0,
            rule=r.get("RULE", ""),
            ranking=tuple(x for x in r.get("FWLRANK", "").split(";") if x),
            wake_rank=r.get("WAKERESRANK", ""),
            setup_group=r.get("SETUPGRP", ""),
            batch_criterion=r.get("BATCHCRITF", ""),
        )
    return out


def read_route(path: Path) -> dict[str, tuple[RouteStep, ...]]:
    """A route file (it may in principle hold several routes)."""
    by_route: dict[str, list[RouteStep]] = {}
    for n, r in rows(path):
        where = f"{path.name}:{n}"
        unit = r.get("PTUNITS") or "min"
        cqt = r.get("CQT", "")
        stime = r.get("STIME", "")
        cascade = _cascade(r, where)
        step = RouteStep(
            route=r["ROUTE"],
            step=_int(r.get("STEP", ""), where) or 0,
            desc=r.get("DESC", ""),
            family=r.get("STNFAM", ""),
            process_s=seconds(r.get("PTIME", ""), unit, where),
            process_spread_s=seconds(r["PTIME2"], unit, where) if r.get("PTIME2") else 0.0,
            per=r.get("PTPER") or "per_lot",
            batch_min_wafers=_int(r.get("BATCHMN", ""), where),
            batch_max_wafers=_int(r.get("BATCHMX", ""), where),
            setup=r.get("SETUP") or None,
            setup_time_s=seconds(stime, r.get("STUNITS") or "min", where) if stime else None,
            same_tool_for_step=_int(r.get("FORSTEP", ""), where)
            if r.get("SVESTN", "").lower() == "yes"
            else None,
            rework_step=_int(r.get("RWKSTEP", ""), where),
            rework_percent=_float(r.get("REWORK", ""), where, default=0.0),
            step_percent=_float(r.get("StepPercent", ""), where, default=100.0),
            cqt_step=_int(r.get("STEP_CQT", ""), where),
            cqt_s=seconds(cqt, r.get("CQTUNITS") or "min", where) if cqt else None,
            cascade_s=cascade[0],
            cascade_per=cascade[1],
        )
        if step.step < 1 or not step.family:
            raise TestbedError(f"{where}: a step needs STEP >= 1 and STNFAM")
        by_route.setdefault(step.route, []).append(step)
    return {k: tuple(sorted(v, key=lambda s: s.step)) for k, v in by_route.items()}


def _cascade(r: dict[str, str], where: str) -> tuple[float | None, str]:
    if r.get("PartInterval"):
        return seconds(r["PartInterval"], r.get("PartIntUnits") or "min", where), "per_piece"
    if r.get("BatchInterval"):
        return seconds(r["BatchInterval"], r.get("BatchIntUnits") or "min", where), "per_batch"
    return None, "per_piece"


def read_parts(path: Path) -> tuple[Part, ...]:
    return tuple(
        Part(r["PART"], r.get("PARTFAM", ""), r.get("ROUTEFILE", ""), r.get("ROUTE", ""))
        for _, r in rows(path)
    )


def read_lots(path: Path, *, wip: bool) -> tuple[Lot, ...]:
    out = []
    for n, r in rows(path):
        where = f"{path.name}:{n}"
        repeat = r.get("REPEAT", "")
        out.append(
            Lot(
                name=r["LOT"],
                part=r["PART"],
                priority=_int(r.get("PRIOR", ""), where) or 10,
                pieces=_int(r.get("PIECES", ""), where) or WAFERS_PER_LOT,
                start=_time(r["START"], where),
                due=_time(r["DUE"], where) if r.get("DUE") else None,
                step=_int(r.get("CURSTEP", ""), where) if wip else None,
                repeat_s=seconds(repeat, r.get("RUNITS") or "min", where) if repeat else None,
                repetitions=_int(r.get("RPT#", ""), where),
            )
        )
    return tuple(out)


def read_setup_times(path: Path) -> tuple[SetupTime, ...]:
    return tuple(
        SetupTime(
            r.get("CURSETUP") or None,
            r["NEWSETUP"],
            seconds(r["STIME"], r.get("STUNITS") or "min", f"{path.name}:{n}"),
        )
        for n, r in rows(path)
    )


def read_min_runs(path: Path) -> tuple[MinRun, ...]:
    out, group = [], ""
    for n, r in rows(path):
        group = r.get("SETUPGRP") or group  # the group is named on its first row only
        run = _int(r.get("MINRUN", ""), f"{path.name}:{n}")
        if r.get("SETUP") and run:
            out.append(MinRun(group, r["SETUP"], run))
    return tuple(out)


def read_transport(path: Path) -> float | None:
    return read_transport_spread(path)[0]


def read_transport_spread(path: Path) -> tuple[float | None, float]:
    """Mean and spread of the (single, Fab → Fab) transport time."""
    for n, r in rows(path):
        unit, where = r.get("DUNITS") or "min", f"{path.name}:{n}"
        spread = seconds(r["DTIME2"], unit, where) if r.get("DTIME2") else 0.0
        return seconds(r.get("DTIME", "0"), unit, where), spread
    return None, 0.0


def read_downs(path: Path) -> dict[str, DownCalendar]:
    out = {}
    for n, r in rows(path):
        where = f"{path.name}:{n}"
        out[r["DOWNCALNAME"]] = DownCalendar(
            name=r["DOWNCALNAME"],
            mttf_dist=(r.get("MTTFDIST") or "exponential").lower(),
            mttf_s=seconds(r.get("MTTF", ""), r.get("MTTFUNITS") or "min", where),
            mttr_dist=(r.get("MTTRDIST") or "exponential").lower(),
            mttr_s=seconds(r.get("MTTR", ""), r.get("MTTRUNITS") or "min", where),
        )
    return out


def read_pms(path: Path) -> dict[str, PmCalendar]:
    out = {}
    for n, r in rows(path):
        where = f"{path.name}:{n}"
        unit = (r.get("MTBPMUNITS") or "day").lower()
        by_wafers = unit in ("pieces", "piece", "wafers")
        every = _float(r.get("MTBPM", ""), where) if by_wafers else seconds(r["MTBPM"], unit, where)
        if every <= 0:
            raise TestbedError(f"{where}: MTBPM must be positive")
        units = r.get("MTTRUNITS") or "hr"
        out[r["PMCALNAME"]] = PmCalendar(
            name=r["PMCALNAME"],
            every=every,
            by_wafers=by_wafers,
            duration_dist=(r.get("MTTRDIST") or "constant").lower(),
            duration_s=seconds(r.get("MTTR", ""), units, where),
            duration_spread_s=seconds(r["MTTR2"], units, where) if r.get("MTTR2") else 0.0,
        )
    return out


def read_attachments(path: Path) -> tuple[Attachment, ...]:
    out = []
    for n, r in rows(path):
        where = f"{path.name}:{n}"
        units = r.get("FOAUNITS", "")
        kind = r.get("CALTYPE", "").lower()
        if kind not in ("down", "pm"):
            raise TestbedError(f"{where}: CALTYPE must be down or pm")
        out.append(
            Attachment(
                calendar=r["CALNAME"],
                kind=kind,
                resource_type=(r.get("RESTYPE") or "stnfam").lower(),
                resource=r.get("RESNAME", ""),
                first_dist=(r.get("FOADIST") or "constant").lower(),
                # No unit: a wafer-count PM, first due after FOA wafers.
                first=seconds(r.get("FOA", "0"), units, where)
                if units
                else _float(r.get("FOA", ""), where, default=0.0),
                first_in_wafers=not units,
            )
        )
    return tuple(out)


def read_testbed(folder: Path | str) -> Testbed:
    """Every table of an SMT2020-format folder that the MES and the simulator use."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TestbedError(f"{folder}: not a folder")
    families = read_families(folder / "tool.txt.1l")
    parts = read_parts(folder / "part.txt")
    routes: dict[str, tuple[RouteStep, ...]] = {}
    for route_file in sorted({p.route_file for p in parts}):
        routes.update(read_route(folder / route_file))
    for part in parts:
        if part.route not in routes:
            raise TestbedError(f"part.txt: route {part.route} of {part.part} is in no route file")
    for route, steps in routes.items():
        for s in steps:
            if s.family not in families:
                raise TestbedError(f"{route} step {s.step}: unknown tool family {s.family}")
    optional = folder / "order.txt", folder / "setup.txt", folder / "setupgrp.txt"
    orders = read_lots(optional[0], wip=False) if optional[0].exists() else ()
    setup_times = read_setup_times(optional[1]) if optional[1].exists() else ()
    min_runs = read_min_runs(optional[2]) if optional[2].exists() else ()
    transport, spread = (
        read_transport_spread(folder / "fromto.txt")
        if (folder / "fromto.txt").exists()
        else (None, 0.0)
    )
    downs = read_downs(folder / "downcal.txt") if (folder / "downcal.txt").exists() else {}
    pms = read_pms(folder / "pmcal.txt") if (folder / "pmcal.txt").exists() else {}
    attached = read_attachments(folder / "attach.txt") if (folder / "attach.txt").exists() else ()
    for a in attached:
        if a.calendar not in (downs if a.kind == "down" else pms):
            raise TestbedError(f"attach.txt: unknown {a.kind} calendar {a.calendar}")
    wip = read_lots(folder / "WIP.txt", wip=True) if (folder / "WIP.txt").exists() else ()
    known_parts = {p.part for p in parts}
    for lot in (*wip, *orders):
        if lot.part not in known_parts:
            raise TestbedError(f"lot {lot.name}: unknown part {lot.part}")
    return Testbed(
        families=families,
        parts=parts,
        routes=routes,
        wip=wip,
        orders=orders,
        setup_times=setup_times,
        min_runs=min_runs,
        transport_s=transport,
        transport_spread_s=spread,
        downs=downs,
        pms=pms,
        attachments=attached,
    )


# --- the testbed's prescribed dispatching, as MES rule-set entries ---------------------------

_RANK_TO_RULE = {
    "rank_HP": ("priority", 1000.0),
    "rank_RSETUP": ("setup", 20.0),
    "rank_CR": ("critical_ratio", 5.0),
    "rank_FIFO": ("fifo", 1.0),
}


def rule_set_for(family: ToolFamily) -> list[dict[str, object]]:
    """The family's RULE/FWLRANK as weighted rules (hot lots first, least setup, FIFO, CR).

    ``rule_LSSU`` (least setup) puts setup avoidance above everything but the priority class;
    batch families also weigh batch formation.
    """
    entries: dict[str, float] = {}
    for rank in family.ranking:
        mapped = _RANK_TO_RULE.get(rank)
        if mapped is not None:
            entries.setdefault(*mapped)
    if family.rule == "rule_HotLotFIRST":
        entries["priority"] = 1000.0
    if family.rule == "rule_LSSU" or family.wake_rank == "wake_LeastSetupTime":
        entries["setup"] = 200.0
    if not entries:
        entries = {"priority": 1000.0, "fifo": 1.0}
    return [{"rule": k, "weight": v} for k, v in sorted(entries.items(), key=lambda kv: -kv[1])]

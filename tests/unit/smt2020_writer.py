"""Write small SMT2020-format folders for hand-checkable simulator tests (the same tables the
reader reads, so the tests go through ``mes.smt2020.tables`` too)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

TOOL_HEADER = [
    "STNFAM",
    "STN",
    "RULE",
    "FWLRANK",
    "WAKERESRANK",
    "BATCHCRITF",
    "BATCHPER",
    "LTIME",
    "LTUNITS",
    "ULTIME",
    "ULTUNITS",
    "STNCAP",
    "STNQTY",
    "STNGRP",
    "STNFAMSTEP_ACTLIST",
    "STNFAMLOC",
    "PRERULERWL",
    "SETUPGRP",
]
ROUTE_HEADER = [
    "ROUTE",
    "STEP",
    "DESC",
    "STNFAM",
    "PDIST",
    "PTIME",
    "PTIME2",
    "PTUNITS",
    "PTPER",
    "BATCHMN",
    "BATCHMX",
    "SETUP",
    "WHEN",
    "STIME",
    "STUNITS",
    "SVESTN",
    "FORSTEP",
    "BatchInterval",
    "BatchIntUnits",
    "PartInterval",
    "PartIntUnits",
    "RWKSTEP",
    "REWORK",
    "RWKTYPE",
    "StepPercent",
    "STEP_CQT",
    "CQT",
    "CQTUNITS",
    "IGNORE",
]
LOT_HEADER = [
    "LOT",
    "PART",
    "PRIOR",
    "PIECES",
    "START",
    "RDIST",
    "REPEAT",
    "RUNITS",
    "RPT#",
    "LOTSPERRPT",
    "DUE",
    "ORDER",
]
WIP_HEADER = ["LOT", "PART", "PRIOR", "PIECES", "START", "CURSTEP", "DUE", "ORDER"]


def _write(path: Path, header: Sequence[str], rows: Sequence[dict[str, object]]) -> None:
    lines = ["\t".join(header)]
    for row in rows:
        unknown = set(row) - set(header)
        assert not unknown, f"{path.name}: unknown columns {unknown}"
        lines.append("\t".join(str(row.get(h, "")) for h in header))
    path.write_text("\n".join(lines) + "\n", "utf-8")


def family(name: str, count: int = 1, *, load_min: float = 0, area: str = "", **extra: object):
    return {
        "STNFAM": name,
        "STN": name,
        "RULE": "rule_HotLotFIRST",
        "FWLRANK": "rank_HP;rank_RSETUP;rank_FIFO",
        "LTIME": load_min,
        "LTUNITS": "min",
        "ULTIME": load_min,
        "ULTUNITS": "min",
        "STNQTY": count,
        "STNGRP": area or name,
        "STNFAMLOC": "Fab",
        **extra,
    }


def step(n: int, fam: str, minutes: float, per: str = "per_lot", **extra: object):
    return {
        "ROUTE": "r_1",
        "STEP": n,
        "DESC": f"{n:03d}_{fam}",
        "STNFAM": fam,
        "PDIST": "uniform",
        "PTIME": minutes,
        "PTIME2": 0,
        "PTUNITS": "min",
        "PTPER": per,
        **extra,
    }


def order(name: str, every_min: float, count: int, *, prior: int = 10, due: str = "", **extra):
    return {
        "LOT": name,
        "PART": "part_1",
        "PRIOR": prior,
        "PIECES": 25,
        "START": "01/01/18 00:00:00",
        "RDIST": "constant",
        "REPEAT": every_min,
        "RUNITS": "min",
        "RPT#": count,
        "LOTSPERRPT": 1,
        "DUE": due or "01/02/18 00:00:00",
        "ORDER": f"O_{name}",
        **extra,
    }


def wip(name: str, at_step: int, *, prior: int = 10, due: str = "01/02/18 00:00:00"):
    return {
        "LOT": name,
        "PART": "part_1",
        "PRIOR": prior,
        "PIECES": 25,
        "START": "01/01/18 00:00:00",
        "CURSTEP": at_step,
        "DUE": due,
        "ORDER": "O_Init_WIP",
    }


def make_testbed(
    folder: Path,
    *,
    families: Sequence[dict[str, object]],
    steps: Sequence[dict[str, object]],
    orders: Sequence[dict[str, object]] = (),
    wip_lots: Sequence[dict[str, object]] = (),
    transport_min: float | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """One part (part_1) on one route (r_1) over ``families``."""
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / "tool.txt.1l", TOOL_HEADER, families)
    _write(folder / "route_1.txt", ROUTE_HEADER, steps)
    (folder / "part.txt").write_text(
        "PARTGRP\tPARTFAM\tPART\tROUTEFILE\tROUTE\nSaleable\tproduct_1\tpart_1\troute_1.txt\tr_1\n"
    )
    _write(folder / "order.txt", LOT_HEADER, orders)
    _write(folder / "WIP.txt", WIP_HEADER, wip_lots)
    if transport_min is not None:
        (folder / "fromto.txt").write_text(
            f"FROMLOC\tTOLOC\tDDIST\tDTIME\tDTIME2\tDUNITS\nFab\tFab\tuniform\t{transport_min}\t0\tmin\n"
        )
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text, "utf-8")
    return folder

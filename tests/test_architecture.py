"""Layering rules that keep domain logic pure and the domains apart (docs/architecture.md)."""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MES = ROOT / "mes"

# The domain layers, lowest first. A module may import its own package and packages of lower
# layers only; packages sharing a layer (other than the foundation) do not import each other.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        # foundation: no framework in errors or clock; observability holds the metric objects
        # every layer records into (it imports none of the MES's packages but config)
        "config clock errors observability",
        "db",
        "kit",
        "audit",
        "fabs",
        "auth",
        "equipment",
        "durables",
        "products",
        "recipes",
        "routes",
        "lots",
        "carriers",  # lots in carriers, load ports, sorter jobs: lot transactions use lots
        "jobs planning",
        "opcua dispatch",
        "exchange smt2020 reports quality check retention",
        "simulation",  # reads SMT2020 tables, decides with the dispatch policy
        "seed",
    )
)
# The application: composition roots and HTTP plumbing that may import any domain.
APPLICATION = frozenset(
    {"main", "cli", "serving", "health", "problems", "contract", "links", "all_models", "console"}
)

# Modules that hold domain rules: plain Python, testable without a database or network, usable
# by the dispatcher and the simulator. They import the standard library and other pure modules.
PURE_NAMES = frozenset(
    {"rules.py", "states.py", "policy.py", "mapping.py", "metrics.py", "chain.py", "commands.py"}
)
PURE_EXTRA = (
    "errors.py",
    "clock.py",
    "opcua/model.py",
    "smt2020/tables.py",
    "dispatch/policy_inputs.py",
    "dispatch/what_next.py",
    "dispatch/where_next.py",
    "jobs/results.py",
    "quality/limits.py",
    # The fab simulator's engine: no database, the policy and the table reader only.
    "simulation/dispatching.py",
    "simulation/engine.py",
    "simulation/gating.py",
    "simulation/maintenance.py",
    "simulation/model.py",
    "simulation/rulesets.py",
    "simulation/state.py",
    "simulation/streams.py",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _imports(path: Path) -> frozenset[str]:
    """Every module ``path`` imports, at any depth in the file (lazy imports count)."""
    tree = ast.parse(path.read_text("utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from mes.lots import service`` imports the module mes.lots.service.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(found)


def _mes_modules() -> list[Path]:
    return sorted(MES.rglob("*.py"))


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_router(module: str) -> bool:
    return module.rsplit(".", 1)[-1].endswith("router")


def _layer(package: str) -> int | None:
    return next((i for i, names in enumerate(LAYERS) if package in names), None)


def _existing(module: str) -> bool:
    relative = Path(*module.split("."))
    return (ROOT / relative.with_suffix(".py")).exists() or (ROOT / relative).is_dir()


def test_every_package_has_a_place() -> None:
    packages = {_package(_module_name(p)) for p in _mes_modules()} - {""}
    placed = set().union(*LAYERS) | APPLICATION
    assert packages <= placed, f"put {sorted(packages - placed)} into LAYERS or APPLICATION"


def _violations(path: Path) -> list[str]:
    source = _module_name(path)
    source_package = _package(source)
    found = []
    for target in sorted(_imports(path)):
        if not target.startswith("mes.") or not _existing(target):
            continue
        target_package = _package(target)
        if _is_router(target):
            if source_package not in APPLICATION:
                found.append(f"{source} imports the router {target}")
            continue
        if source_package in APPLICATION or _is_router(source):
            continue  # the HTTP face and the composition roots sit above every domain
        if target_package in APPLICATION:
            found.append(f"{source} imports the application module {target}")
            continue
        if target_package == source_package:
            continue
        mine, theirs = _layer(source_package), _layer(target_package)
        if mine is None or theirs is None:
            continue  # reported by test_every_package_has_a_place
        if not (theirs < mine or (theirs == mine == 0)):
            found.append(f"{source} ({source_package}) imports {target} ({target_package})")
    return found


@pytest.mark.parametrize("path", _mes_modules(), ids=lambda p: str(p.relative_to(MES)))
def test_imports_follow_the_layer_order(path: Path) -> None:
    assert _violations(path) == []


def _pure_modules() -> list[Path]:
    named = [p for p in _mes_modules() if p.name in PURE_NAMES or p.name.endswith("_rules.py")]
    return sorted({*named, *(MES / extra for extra in PURE_EXTRA)})


def test_pure_modules_exist() -> None:
    assert len(_pure_modules()) >= 15
    assert all(p.exists() for p in _pure_modules())


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(MES)))
def test_pure_modules_import_only_the_standard_library_and_pure_modules(path: Path) -> None:
    pure = {_module_name(p) for p in _pure_modules()}
    bad = set()
    for target in _imports(path):
        top = target.split(".")[0]
        if top == "__future__" or top in sys.stdlib_module_names:
            continue
        if top == "mes" and (target in pure or not _existing(target)):
            continue  # ``from mes.x import Name`` also lists mes.x.Name, which is no module
        bad.add(target)
    assert not bad, f"{path.relative_to(MES)} imports {sorted(bad)}"


def test_the_architecture_test_catches_a_back_edge(tmp_path: Path) -> None:
    # A check that cannot fail proves nothing: a lower domain importing a higher one is caught.
    fake = MES / "equipment" / "_probe_for_architecture_test.py"
    fake.write_text("from mes.lots import service\nfrom mes.lots.router import router\n")
    try:
        _imports.cache_clear()
        found = _violations(fake)
    finally:
        fake.unlink()
        _imports.cache_clear()
    assert any("(equipment) imports mes.lots.service" in v for v in found)
    assert any("imports the router mes.lots.router" in v for v in found)


@pytest.mark.parametrize("path", sorted(MES.rglob("*router.py")), ids=lambda p: p.parent.name)
def test_routers_do_not_raise_http_exceptions(path: Path) -> None:
    # Errors are MesError subclasses rendered by one handler, never ad-hoc HTTPExceptions.
    assert "HTTPException" not in path.read_text("utf-8")


@pytest.mark.parametrize(
    "path", sorted(p for p in MES.rglob("*.py") if p.parent.name != "db"), ids=str
)
def test_services_never_commit(path: Path) -> None:
    # One business operation = one transaction, committed by the caller's unit of work
    # (mes.db.transaction); background loops open their own units of work.
    assert ".commit(" not in path.read_text("utf-8"), path


def test_nothing_imports_the_equipment_simulators() -> None:
    for path in MES.rglob("*.py"):
        assert not any(m.startswith("equipment_sims") for m in _imports(path)), path


def test_documented_role_table_is_the_enforced_one() -> None:
    # The manual's copy (docs/security.md, between the markers) is `mes users roles` output.
    from mes.auth.roles import markdown_matrix

    page = (ROOT / "docs" / "security.md").read_text("utf-8")
    documented = page.split("<!-- roles:begin -->")[1].split("<!-- roles:end -->")[0].strip()
    assert documented == markdown_matrix()

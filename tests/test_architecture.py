"""Layering rules that keep domain logic pure and the domains apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MES = Path(__file__).resolve().parents[1] / "mes"
PURE_MODULES = ("rules.py", "states.py", "policy.py", "mapping.py")
FORBIDDEN_IN_PURE = ("sqlalchemy", "fastapi", "asyncua", "starlette", "httpx")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _pure_modules() -> list[Path]:
    return sorted(p for name in PURE_MODULES for p in MES.rglob(name))


def test_pure_modules_exist() -> None:
    assert len(_pure_modules()) >= 4


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(MES)))
def test_pure_modules_do_no_io(path: Path) -> None:
    bad = {m for m in _imports(path) if m.split(".")[0] in FORBIDDEN_IN_PURE}
    assert not bad, f"{path.relative_to(MES)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted(MES.rglob("router.py")), ids=lambda p: p.parent.name)
def test_routers_do_not_raise_http_exceptions(path: Path) -> None:
    # Errors are MesError subclasses rendered by one handler, never ad-hoc HTTPExceptions.
    assert "HTTPException" not in path.read_text("utf-8")


@pytest.mark.parametrize("path", sorted(MES.rglob("service.py")), ids=lambda p: p.parent.name)
def test_services_never_commit(path: Path) -> None:
    # One business operation = one transaction, committed by the caller's unit of work.
    assert ".commit(" not in path.read_text("utf-8")


def test_nothing_imports_the_equipment_simulators() -> None:
    for path in MES.rglob("*.py"):
        assert not any(m.startswith("equipment_sims") for m in _imports(path)), path


def test_readme_role_table_is_the_enforced_one() -> None:
    from mes.auth.roles import markdown_matrix

    readme = (MES.parent / "README.md").read_text("utf-8")
    documented = readme.split("<!-- roles:begin -->")[1].split("<!-- roles:end -->")[0].strip()
    assert documented == markdown_matrix()

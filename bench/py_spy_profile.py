"""Where the service's CPU time goes: py-spy sampling of its process, and the analysis."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


@dataclass
class Profiler:
    directory: Path
    process: asyncio.subprocess.Process | None = None
    output: Path | None = None

    async def start(self, pid: int, seconds: float, label: str) -> None:
        spy = _py_spy()
        if spy is None:
            print("  (--profile: py-spy not found; pip install py-spy)")
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.output = self.directory / f"lot_moves-{label}.txt"
        self.process = await asyncio.create_subprocess_exec(
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            # Blocking: py-spy pauses the service for each sample. Without it (--nonblocking) the
            # stacks are read while the process runs on, and time showed up in frames that were
            # merely waiting (asyncpg's execute), which misled the earlier per-layer figures.
            "--output",
            str(self.output),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def finish(self) -> dict[str, Any] | None:
        if self.process is None or self.output is None:
            return None
        await self.process.wait()
        if not self.output.exists():
            return None
        return analyse_profile(self.output)


# Where a sampled frame belongs, by its file (first match wins).
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("HTTP client of the in-process benchmark (httpx)", ("httpx/", "lot_moves_inproc")),
    ("audit (mes.audit)", ("mes/audit/",)),
    ("auth (mes.auth, PyJWT)", ("mes/auth/", "jwt/")),
    ("idempotency (mes.kit.idempotency)", ("mes/kit/idempotency",)),
    ("lot service + rules (mes.lots)", ("mes/lots/",)),
    ("other MES code", ("mes/",)),
    (
        "asyncpg + SQLAlchemy's asyncpg adapter",
        ("asyncpg/", "sqlalchemy/dialects/postgresql/asyncpg"),
    ),
    (
        "SQLAlchemy async bridge (greenlet)",
        ("sqlalchemy/util/concurrency", "sqlalchemy/ext/asyncio"),
    ),
    ("SQLAlchemy ORM", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core (SQL compile, engine, types)", ("sqlalchemy/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("JSON (json, jsonable_encoder)", ("json/", "fastapi/encoders")),
    ("FastAPI + Starlette", ("fastapi/", "starlette/")),
    ("uvicorn + httptools", ("uvicorn/", "httptools/", "h11/")),
    ("logging", ("logging/",)),
    ("asyncio event loop", ("asyncio/", "uvloop/")),
]
# Inclusive: time spent under these functions (and everything they call).
UNDER = [
    ("authenticated (token → principal, own read transaction)", "authenticated (mes/auth/"),
    ("lot service track_in", "track_in (mes/lots/moves"),
    ("lot service track_out", "track_out (mes/lots/moves"),
    ("audit recorder (_after_flush)", "_after_flush (mes/audit/"),
    ("response body: lot answer + LotRead", "read (mes/lots/http"),
    ("idempotency wrapper (runs the operation)", "idempotent (mes/kit/idempotency"),
    ("route matching (FastAPI/Starlette)", "_match (fastapi/routing"),
    ("ORM flush (unit of work)", "flush (sqlalchemy/orm/session"),
    ("SQL compile + cache key", "_compile_w_cache (sqlalchemy/sql/elements"),
    ("ORM result → objects (loading.instances)", "instances (sqlalchemy/orm/loading"),
    ("commit", "commit (sqlalchemy/ext/asyncio/session"),
    ("FastAPI request validation + dependencies", "solve_dependencies (fastapi/"),
    ("FastAPI response serialisation", "serialize_response (fastapi/"),
    ("uvicorn access log", "send (uvicorn/protocols/http/httptools_impl"),
    ("audit sealer (background)", "seal_audit_forever (mes/audit/sealer"),
]


# Samples of a thread that waits rather than works (py-spy's blocking mode counts them):
# the event loop polling, worker threads parked, the child watcher of a subprocess.
IDLE_LEAVES = (
    "EpollSelector.select (",
    "._do_waitpid (",
    "Condition.wait (",
    "Event.wait (",
    "Thread.join (",
    # an idle thread-pool worker blocks in SimpleQueue.get (C), so py-spy shows this line
    "_worker (concurrent/futures/thread.py:81)",
)


def _category(frame: str) -> str:
    for name, needles in CATEGORIES:
        if any(needle in frame for needle in needles):
            return name
    return "other (stdlib, interpreter)"


def analyse_profile(path: Path) -> dict[str, Any]:
    """Shares of the sampled CPU time of the service (py-spy raw/collapsed stacks)."""
    total = 0
    self_by_category: Counter[str] = Counter()
    incl_by_category: Counter[str] = Counter()
    self_by_function: Counter[str] = Counter()
    under: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        leaf = frames[-1]
        if any(idle in leaf for idle in IDLE_LEAVES):
            continue
        total += count
        self_by_category[_category(leaf)] += count
        self_by_function[leaf] += count
        for name in {_category(f) for f in frames}:
            incl_by_category[name] += count
        for label, needle in UNDER:
            if any(needle in f for f in frames):
                under[label] += count

    def share(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "file": str(path),
        "self_pct": {k: share(v) for k, v in self_by_category.most_common()},
        "inclusive_pct": {k: share(v) for k, v in incl_by_category.most_common()},
        "under_pct": {k: share(under[k]) for k, _ in UNDER},
        "top_self_functions_pct": {k: share(v) for k, v in self_by_function.most_common(15)},
    }


def describe_profile(profile: dict[str, Any]) -> list[str]:
    lines = [f"  profile of the 1-worker service: {profile['samples']} samples ({profile['file']})"]
    lines.append("    self time by component (% of the service's CPU samples):")
    lines += [f"      {v:5.1f}  {k}" for k, v in profile["self_pct"].items()]
    lines.append("    inclusive (samples with a frame of the component anywhere on the stack):")
    lines += [f"      {v:5.1f}  {k}" for k, v in profile["inclusive_pct"].items()]
    lines.append("    time under:")
    lines += [f"      {v:5.1f}  {k}" for k, v in profile["under_pct"].items()]
    lines.append("    top functions by self time:")
    lines += [f"      {v:5.1f}  {k}" for k, v in profile["top_self_functions_pct"].items()]
    return lines

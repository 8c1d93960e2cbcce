"""The process roles as separate OS processes on PostgreSQL: SIGKILL an adapter process and the
dispatcher leader, and the standbys take over within their bounds (``bench/scale_out.py``, run
here small and with a short lease; ``make bench-scale-out`` runs it at 100 tools)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("MES_TEST_DATABASE_URL", "")

pytestmark = pytest.mark.skipif(
    not DATABASE_URL.startswith("postgresql"),
    reason="several processes share one database: PostgreSQL only (MES_TEST_DATABASE_URL)",
)


def test_killed_adapter_and_dispatcher_leader_are_taken_over_within_their_bounds() -> None:
    ttl, cycle = 3.0, 1.0
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "scale_out.py"),
            "--tools", "4",
            "--lease-ttl", str(ttl),
            "--cycle", str(cycle),
            "--base-port", str(47600 + os.getpid() % 200 * 4),
            "--timeout", "120",
            "--database-url", DATABASE_URL,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert run.stdout.strip(), run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(run.stdout)  # the figures, for the CI log (pytest -s / on failure)
    assert result["tools_killed"] >= 2, result  # the victim held at least half of the tools
    assert result["adapter_takeover_s"] is not None, result
    assert result["adapter_takeover_s"] <= ttl + 15, result
    assert result["dispatcher_takeover_s"] is not None, result
    assert result["dispatcher_takeover_s"] <= ttl + cycle, result
    assert run.returncode == 0, run.stderr[-3000:]

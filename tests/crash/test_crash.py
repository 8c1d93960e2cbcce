"""SIGKILL the MES under concurrent API load and restart it: after every restart the invariants
hold, and no acknowledged request is lost or applied twice (``bench/crash.py``, run here short;
``make crash`` runs 50 kills)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("MES_TEST_DATABASE_URL", "")
KILLS = int(os.environ.get("MES_CRASH_KILLS", "4"))

pytestmark = pytest.mark.skipif(
    not DATABASE_URL.startswith("postgresql"),
    reason="the crash suite runs on PostgreSQL (MES_TEST_DATABASE_URL)",
)


def test_killed_and_restarted_service_loses_and_doubles_nothing() -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "crash.py"),
            "--kills", str(KILLS),
            "--clients", "4",
            "--database-url", DATABASE_URL,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert run.stdout.strip(), run.stderr[-3000:]
    print(run.stdout)  # the figures, for the CI log
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["kills"] == KILLS, result
    assert result["kills_survived"] == KILLS, result
    assert result["acknowledged"] > 0, result
    assert result["acknowledged_lost"] == 0, result
    assert result["applied_twice"] == 0, result
    assert result["invariants_final"], result
    assert run.returncode == 0, run.stderr[-3000:]

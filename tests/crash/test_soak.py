"""A short soak (``bench/soak.py``; ``make soak`` runs ten minutes): the simulated fab, the
dispatcher and API load; memory, connections and latency show no growth over the second half,
the pruned tables keep no row past their retention, and the invariants hold at every sample."""

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
    reason="the soak runs once per CI, on PostgreSQL (MES_TEST_DATABASE_URL)",
)


def test_a_short_soak_is_bounded_and_keeps_its_invariants() -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--seconds", "75",
            "--interval", "5",
            "--retention", "15",
            "--database-url", DATABASE_URL,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert run.stdout.strip(), run.stderr[-3000:]
    print(run.stdout)  # the samples and figures, for the CI log
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["samples"] >= 10, result
    assert result["requests"] > 0, result
    assert result["server_errors"] == 0, result
    assert result["invariants_ok"], result
    assert result["unbounded"] == [], result["verdict"]
    assert run.returncode == 0, run.stderr[-3000:]

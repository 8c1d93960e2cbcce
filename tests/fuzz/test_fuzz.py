"""A bounded schemathesis run in CI: every operation, every phase, no failure.

`make fuzz` runs the same harness for longer (tests/fuzz/harness.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.databases import BACKEND
from tests.fuzz.harness import run

# Seconds for schemathesis itself; with the server's start the test takes about two minutes.
CI_SECONDS = int(os.environ.get("MES_FUZZ_CI_SECONDS", "60"))


@pytest.mark.skipif(
    BACKEND != "sqlite" and not os.environ.get("MES_FUZZ_POSTGRES"),
    reason="the CI fuzz run is on SQLite (MES_FUZZ_POSTGRES=1 or `make fuzz` for PostgreSQL)",
)
async def test_fuzzing_finds_no_failure(tmp_path: Path):
    report = await run(CI_SECONDS, 19, 1, tmp_path, ["--max-examples", "8"])
    print(
        f"\nfuzz: {report.operations} operations, {report.requests} requests, "
        f"{report.links_covered}/{report.links} links followed, lot transactions "
        f"{report.lot_events}, {report.failures} failures"
    )
    output = (tmp_path / "schemathesis.txt").read_text("utf-8")
    assert report.operations >= 140, output[-3000:]
    # At least a request per operation (about 1,500 in all on an idle machine).
    assert report.requests >= report.operations, output[-3000:]
    assert report.failures == 0, "\n".join(report.failed) + output[-6000:]
    assert report.errors == 0, output[-6000:]
    assert report.exit_code == 0, output[-6000:]

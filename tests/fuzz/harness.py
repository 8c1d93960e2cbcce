"""Fuzz the API with schemathesis over real HTTP.

A throw-away database (SQLite, or PostgreSQL beside MES_TEST_DATABASE_URL) is migrated and
loaded with the example fab, ``mes serve`` runs on a free loopback port, and ``st run`` attacks
its ``/openapi.json`` with every phase (examples, coverage, fuzzing, stateful links) as an
account holding every human role, with a token that outlives the run. The figures (operations,
requests, failures) are printed, and the last line is one JSON object.

    python -m tests.fuzz.harness --max-time 600        # what `make fuzz` runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from mes.audit import recorder
from mes.audit.context import AuditContext, bind
from mes.auth.models import AccountKind, Certification, User, UserRole
from mes.auth.roles import HUMAN_ROLES
from mes.auth.tokens import issue_access_token
from mes.clock import SystemClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database, create_engine
from mes.db.transaction import unit_of_work
from mes.fabs.models import ToolGroup
from mes.lots.models import LotEvent
from mes.seed import loader
from tests.databases import create_database, drop_database

FUZZER = "fuzzer"
SECRET = "fuzz-signing-key-not-for-production-0123456789"
HOOKS = "tests.fuzz.hooks"
# Every check schemathesis has but three whose premise the API does not share:
# positive_data_acceptance takes any schema-valid request for one that must succeed (here a
# well-formed request for a lot that does not exist is a 404, a lot on hold a 409);
# object_level_authorization looks for one caller reading another's objects, and every account
# of a fab may read every lot by design (docs/security.md); ensure_resource_availability takes
# any 404 after a creation for the created resource missing, also when the 404 names another id
# of the request body (a qualification for tool '0' of a recipe version just made). That the
# created resources are where Location says is tested in tests/api/test_contract.py.
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
    "missing_required_header,unsupported_method,allow_header_conformance,use_after_free,"
    "ignored_auth,problem_json_errors"
)


@dataclass
class FuzzReport:
    backend: str
    seconds: float
    operations: int = 0
    requests: int = 0
    failures: int = 0
    errors: int = 0
    exit_code: int = 0
    links: int = 0
    links_covered: int = 0
    lot_events: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def prepare(url: str) -> None:
    """Schema, example fab, and the fuzzing account (every human role, certified everywhere)."""
    recorder.install()
    engine = create_engine(Settings(database_url=url))
    try:
        await migrate.upgrade(engine)
        db = Database(engine)
        async with unit_of_work(db) as session:
            await loader.load(session, loader.read_example(), clock=SystemClock())
        async with unit_of_work(db) as session:
            now = datetime.now(UTC)
            bind(session, AuditContext(actor="fuzz", role="system", operation="fuzz.setup", at=now))
            groups = list(await session.scalars(select(ToolGroup)))
            session.add(
                User(
                    username=FUZZER,
                    display_name="schemathesis",
                    kind=AccountKind.HUMAN,
                    roles=[UserRole(role=r) for r in sorted(HUMAN_ROLES)],
                    password_hash=None,
                    certifications=[
                        Certification(tool_group=g, certified_at=now, certified_by="fuzz")
                        for g in groups
                    ],
                )
            )
    finally:
        await engine.dispose()


def _token() -> str:
    now = datetime.now(UTC)
    # A day: longer than any run, so no request fails for an expired token.
    return issue_access_token(FUZZER, secret=SECRET, now=now, ttl=timedelta(days=1), auth_time=now)


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:  # the child keeps its own descriptor
        server = subprocess.Popen(
            [sys.executable, "-m", "mes.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 180  # a loaded two-core machine imports slowly
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if http.get("/healthz").status_code == 200:
                    return server
            if server.poll() is not None:
                break
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"mes serve did not come up; see {log}")


def _summarise(output: str, report: FuzzReport) -> None:
    """Add the figures of one schemathesis run's closing summary to ``report``."""
    if found := re.search(r"Tested: (\d+)", output):
        report.operations = max(report.operations, int(found.group(1)))
    if found := re.search(r"(\d+) generated", output):
        report.requests += int(found.group(1))
    if found := re.search(r"(\d+) unique failures?", output):
        report.failures += int(found.group(1))
    if found := re.search(r"(\d+) errors?\b", output.split("Test cases:")[-1]):
        report.errors += int(found.group(1))
    for covered, total in re.findall(r"API Links: +(\d+) covered / (\d+)", output):
        report.links_covered += int(covered)
        report.links += int(total)
    report.failed += re.findall(r"^  \S+ (ST\d+ .+: \d+)$", output, flags=re.MULTILINE)


async def _lot_events(url: str) -> dict[str, int]:
    """The lot transactions the fuzzer's requests made, by kind: how far the chains got."""
    engine = create_engine(Settings(database_url=url))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(LotEvent.event_type, func.count()).group_by(LotEvent.event_type)
            )
            return {str(kind): int(n) for kind, n in rows}
    finally:
        await engine.dispose()


async def run(max_time: int, seed: int, workers: int, out: Path, extra: list[str]) -> FuzzReport:
    started = time.monotonic()
    backend = "postgresql" if os.environ.get("MES_TEST_DATABASE_URL") else "sqlite"
    url = await create_database(out, "fuzz")
    report = FuzzReport(backend=backend, seconds=0.0)
    try:
        await prepare(url)
        port = _free_port()
        env = {
            **os.environ,
            "MES_DATABASE_URL": url,
            "MES_JWT_SECRET": SECRET,
            "MES_LOG_LEVEL": "warning",
            "MES_DISPATCH_FABS": "",
            # E-signatures (release, scrap...) ride on the token's login for the whole run.
            "MES_ESIGN_MAX_AGE_S": "3600",
        }
        server = await asyncio.to_thread(_serve, env, port, out / "server.log")
        try:
            token = _token()
            # Fetched once here, without schemathesis' 10 s timeout: building the document reads
            # the source of every route, slow on a loaded machine.
            schema = out / "openapi.json"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
                schema.write_bytes((await http.get("/openapi.json")).content)
            st_env = {**env, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(Path.cwd())}
            # The stateful phase alone on the lot operations, where the links chain start ->
            # track-in -> track-out -> hold -> release; then every operation in every phase.
            # In that order: the second run obsoletes recipes and takes tools down at random.
            chain_time = max(10, max_time // 4)
            everything = ["--phases", "examples,coverage,fuzzing,stateful"]
            lots = ["--phases", "stateful", "--include-path-regex", "^/api/v1/lots"]
            runs = [("lots", chain_time, lots), ("all", max_time - chain_time, everything)]
            outputs = []
            for name, seconds, phases in runs:
                command = [
                    str(Path(sys.executable).with_name("st")),
                    "run",
                    str(schema),
                    "--url",
                    f"http://127.0.0.1:{port}",
                    "--header",
                    f"Authorization: Bearer {token}",
                    "--checks",
                    CHECKS,
                    *phases,
                    "--max-time",
                    str(seconds),
                    "--seed",
                    str(seed),
                    "--workers",
                    str(workers),
                    "--request-timeout",
                    "30",
                    "--no-shrink",
                    "--suppress-health-check",
                    "all",
                    "--warnings",
                    "off",
                    "--output-truncate",
                    "true",
                    *extra,
                ]
                done = await asyncio.to_thread(
                    subprocess.run, command, env=st_env, capture_output=True, text=True
                )
                outputs.append(f"=== {name} ===\n{done.stdout}{done.stderr}")
                report.exit_code = max(report.exit_code, done.returncode)
                _summarise(done.stdout, report)
            (out / "schemathesis.txt").write_text("\n".join(outputs), "utf-8")
            report.lot_events = await _lot_events(url)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    finally:
        await drop_database(url)
    report.seconds = round(time.monotonic() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=int, default=600, help="seconds for schemathesis")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="folder for logs and events")
    args, extra = parser.parse_known_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mes-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run(args.max_time, args.seed, args.workers, out, extra))
    print(f"backend: {report.backend}, {report.seconds} s (logs in {out})")
    print(f"operations fuzzed: {report.operations}")
    print(f"requests sent: {report.requests}")
    print(f"stateful links followed: {report.links_covered} of {report.links}")
    print(f"lot transactions made: {report.lot_events}")
    print(f"failures: {report.failures}, errors: {report.errors}")
    for line in report.failed:
        print(f"  {line}")
    print(json.dumps(asdict(report) | {"failed": len(report.failed)}))
    sys.exit(0 if report.exit_code == 0 else 1)


if __name__ == "__main__":
    main()

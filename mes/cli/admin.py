"""The ``mes`` command's administration: schema, example data, accounts, the audit trail,
invariants, retention, OPC UA certificates, process documents and imports. The long-running
process roles are in ``mes.cli.roles``."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import socket
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr, ValidationError

from mes.audit import recorder
from mes.audit import service as audit_service
from mes.audit.context import AuditContext, bind
from mes.auth import service as auth_service
from mes.auth.roles import Role, markdown_matrix
from mes.auth.schemas import ESignature, UserCreate
from mes.clock import Clock, SystemClock
from mes.config import Settings
from mes.db import migrate
from mes.db.engine import Database
from mes.db.transaction import unit_of_work
from mes.equipment import wip
from mes.errors import MesError
from mes.lots.service import lots_running_on
from mes.quality import collection
from mes.seed import loader
from mes.simulation.cli import simulate_app, simulate_whatif

app = typer.Typer(help="Fab MES service and administration.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
seed_app = typer.Typer(help="Example data.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
opcua_app = typer.Typer(help="OPC UA security.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(seed_app, name="seed")
app.add_typer(users_app, name="users")
app.add_typer(audit_app, name="audit")
app.add_typer(opcua_app, name="opcua")
app.add_typer(simulate_app, name="simulate")
app.command("whatif", help="Simulate a fab from where it stands now (mes simulate whatif).")(
    simulate_whatif
)


def open_database(settings: Settings) -> Database:
    # Every write of a command is audited in its own flush, as in the service.
    recorder.install()
    wip.install(lots_running_on)
    collection.install()  # data collection and SPC in every track-out
    return Database.from_settings(settings)


def long_statements(settings: Settings) -> Settings:
    """Schema changes and bulk loads may run single statements (an index over a big table, an
    ANALYZE) far longer than a request may: the request bound does not apply to them."""
    return settings.model_copy(update={"database_command_timeout_s": 3600.0})


def _cli_context(operation: str) -> AuditContext:
    return AuditContext(
        actor=f"cli:{getpass.getuser()}"[:64],
        role="system",
        operation=operation,
        at=SystemClock().now(),
    )


async def _upgrade(settings: Settings, revision: str) -> str | None:
    database = open_database(settings)
    try:
        await migrate.upgrade(database.engine, revision)
        return await migrate.current_revision(database.engine)
    finally:
        await database.dispose()


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the database to ``revision`` (default: the newest)."""
    settings = Settings()
    current = asyncio.run(_upgrade(long_statements(settings), revision))
    typer.echo(f"database at revision {current}")


async def _downgrade(settings: Settings, revision: str) -> None:
    database = open_database(settings)
    try:
        await migrate.downgrade(database.engine, revision)
    finally:
        await database.dispose()


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Migrate the database back to ``revision`` ("base" empties it)."""
    asyncio.run(_downgrade(long_statements(Settings()), revision))
    typer.echo(f"database at revision {revision}")


async def _seed_example(settings: Settings, *, if_empty: bool) -> dict[str, int] | None:
    database = open_database(settings)
    try:
        async with unit_of_work(database) as session:
            if not await loader.database_is_empty(session):
                if if_empty:
                    return None
                raise typer.BadParameter(
                    "the database already holds data; the example loads only into an empty one"
                )
            return await loader.load(session, loader.read_example(), clock=SystemClock())
    finally:
        await database.dispose()


@seed_app.command("example")
def seed_example(
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="do nothing if the database holds data")
    ] = False,
) -> None:
    """Load the example two-fab network (fabs, tools, recipes, routes, carriers)."""
    logging.basicConfig(level=logging.WARNING)
    counts = asyncio.run(_seed_example(Settings(), if_empty=if_empty))
    if counts is None:
        typer.echo("database already holds data; example not loaded")
    else:
        typer.echo("loaded example fab: " + json.dumps(counts))


@seed_app.command("welcome")
def seed_welcome(
    url: Annotated[str, typer.Option(help="the service's base URL")] = "http://127.0.0.1:8000",
    wait: Annotated[float, typer.Option(help="seconds to wait for it to be ready")] = 120.0,
) -> None:
    """Wait until the service is ready, then print its console URL and the demo logins."""
    from mes.seed import welcome

    if not welcome.wait_until_ready(url.rstrip("/"), wait):
        typer.echo(f"{url} did not become ready within {wait:g} s", err=True)
        raise typer.Exit(1)
    typer.echo(welcome.banner(url.rstrip("/")))


async def _create_admin(settings: Settings, data: UserCreate) -> None:
    database = open_database(settings)
    try:
        async with unit_of_work(database) as session:
            bind(session, _cli_context("users.create_admin"))
            await auth_service.create_user(session, data, clock=SystemClock())
    finally:
        await database.dispose()


@users_app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(prompt=True, help="login name")],
    display_name: Annotated[str, typer.Option(prompt=True, help="full name")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="MES_ADMIN_PASSWORD",
            help="asked for if not given; or set MES_ADMIN_PASSWORD",
        ),
    ],
) -> None:
    """Create an administrator account (bootstrap, without an existing admin)."""
    try:
        data = UserCreate(
            username=username,
            display_name=display_name,
            roles=[Role.ADMIN],
            password=SecretStr(password),
            signature=ESignature(reason="bootstrap administrator from the command line"),
        )
        asyncio.run(_create_admin(Settings(), data))
    except (ValidationError, MesError) as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"administrator {username} created")


async def _seal(settings: Settings) -> int:
    database = open_database(settings)
    total = 0
    try:
        while True:
            async with unit_of_work(database) as session:
                sealed = await audit_service.seal(session, clock=SystemClock())
            total += sealed
            if sealed < audit_service.SEAL_BATCH:
                return total
    finally:
        await database.dispose()


@users_app.command("roles")
def show_roles() -> None:
    """Print which role may perform which operation (Markdown)."""
    typer.echo(markdown_matrix())


@audit_app.command("seal")
def audit_seal() -> None:
    """Link committed audit records into the hash chain now (the service does it continuously)."""
    typer.echo(f"sealed {asyncio.run(_seal(Settings()))} audit records")


async def _verify(settings: Settings) -> audit_service.VerificationReport:
    database = open_database(settings)
    try:
        async with unit_of_work(database, write=False) as session:
            return await audit_service.verify(session)
    finally:
        await database.dispose()


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit hash chain; names every edited, deleted or forged record (exit 1)."""
    report = asyncio.run(_verify(Settings()))
    typer.echo(
        f"checked {report.checked} sealed records; {report.unsealed} not sealed yet; "
        f"head chain_seq={report.head_seq} hash={report.head_hash}"
    )
    for problem in report.problems:
        typer.echo(f"TAMPERED: {problem.message}")
    if not report.ok:
        raise typer.Exit(1)
    typer.echo("audit chain intact")


async def _check(settings: Settings) -> Any:
    from mes.check.invariants import check_database

    database = open_database(settings)
    try:
        return await check_database(database)
    finally:
        await database.dispose()


@app.command("check")
def check_invariants(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document on stdout")] = False,
) -> None:
    """Check the database's invariants (wafers, steps, tools, histories, jobs, leases, audit
    chain); names each violation with the rows involved and exits 1 on any."""
    report = asyncio.run(_check(Settings()))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "counts": report.counts,
                    "violations": [v.as_dict() for v in report.violations],
                },
                default=str,
            )
        )
    else:
        typer.echo("checked " + ", ".join(f"{n} {t}" for t, n in sorted(report.counts.items())))
        for v in report.violations:
            typer.echo(f"VIOLATION [{v.kind}] {v.message}")
            for row in v.rows:
                typer.echo(f"    {json.dumps(row, default=str)}")
        typer.echo("all invariants hold" if report.ok else f"{len(report.violations)} violations")
    if not report.ok:
        raise typer.Exit(1)


retention_app = typer.Typer(help="Pruning of the tables that grow by design.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")


async def _prune(settings: Settings) -> dict[str, int]:
    from mes.retention.service import prune

    database = open_database(settings)
    try:
        return await prune(database, settings, SystemClock().now())
    finally:
        await database.dispose()


@retention_app.command("prune")
def retention_prune() -> None:
    """Delete dispatch decisions, idempotency records and (if set) E10 state events older than
    their MES_RETENTION_* settings now (the service does it every MES_RETENTION_INTERVAL_S)."""
    typer.echo(json.dumps(asyncio.run(_prune(Settings())), sort_keys=True))


@opcua_app.command("make-certificate")
def opcua_make_certificate(
    out: Annotated[Path, typer.Option("--out", help="folder to write NAME.der and NAME.pem to")],
    name: Annotated[str, typer.Option(help="file name and certificate common name")] = "mes",
    app_uri: Annotated[
        str | None,
        typer.Option(help="application URI (default urn:fab-mes:mes:<host name>)"),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="DNS name or IP address to name (default: host name)")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="validity")] = 365,
    force: Annotated[bool, typer.Option(help="overwrite existing files")] = False,
) -> None:
    """Make the MES's OPC UA client certificate (self-signed, DER) and key (PEM, unencrypted)."""
    from mes.opcua import certificates

    hostname = socket.gethostname()
    uri = app_uri or f"urn:fab-mes:mes:{hostname}"
    cert_file, key_file = (out / f"{name}.der").resolve(), (out / f"{name}.pem").resolve()
    existing = [str(f) for f in (cert_file, key_file) if f.exists()]
    if existing and not force:
        typer.echo(f"refused: {', '.join(existing)} exist(s); --force overwrites", err=True)
        raise typer.Exit(2)
    key, cert = certificates.make_certificate(uri, name, host or hostname, server=False, days=days)
    certificates.save(key, cert, key_file, cert_file)
    typer.echo(f"certificate {cert_file} (application URI {uri})")
    typer.echo(f"private key {key_file}")
    typer.echo("MES settings (environment or .env):")
    typer.echo("  MES_OPCUA_SECURITY_POLICY=Basic256Sha256")
    typer.echo("  MES_OPCUA_SECURITY_MODE=SignAndEncrypt")
    typer.echo(f"  MES_OPCUA_CERTIFICATE={cert_file}")
    typer.echo(f"  MES_OPCUA_PRIVATE_KEY={key_file}")
    typer.echo("  MES_OPCUA_TRUST_DIR=<folder holding the tools' server certificates>")
    typer.echo(f"Have the tools trust it; simulated tools: mes-sims trust {cert_file}")


process_app = typer.Typer(help="Process definitions as JSON (mes-process/1).", no_args_is_help=True)
app.add_typer(process_app, name="process")


async def _export(settings: Settings, products: list[str] | None, qualifications: bool) -> str:
    from mes.exchange import service as exchange_service

    database = open_database(settings)
    try:
        async with unit_of_work(database, write=False) as session:
            document = await exchange_service.export(
                session,
                products=products,
                include_qualifications=qualifications,
                now=SystemClock().now(),
                actor=_cli_context("process.export").actor,
            )
    finally:
        await database.dispose()
    return document.model_dump_json(indent=2) + "\n"


@process_app.command("export")
def process_export(
    out: Annotated[
        typer.FileTextWrite, typer.Option("--out", "-o", help="file to write (default stdout)")
    ] = "-",  # type: ignore[assignment]  # typer opens "-" as stdout
    product: Annotated[
        list[str] | None, typer.Option(help="only this product (repeatable)")
    ] = None,
    qualifications: Annotated[bool, typer.Option(help="include the qualification history")] = True,
) -> None:
    """Write routes, recipes, context rules, schemas and qualifications as one JSON document."""
    out.write(asyncio.run(_export(Settings(), product, qualifications)))


async def _import(settings: Settings, text: str, dry_run: bool) -> str:
    from mes.exchange import service as exchange_service
    from mes.exchange.schemas import ProcessDocument

    document = ProcessDocument.model_validate_json(text)
    database = open_database(settings)
    try:
        async with unit_of_work(database) as session:
            bind(session, _cli_context("process.import"))
            summary = await exchange_service.import_document(session, document, dry_run=dry_run)
    finally:
        await database.dispose()
    return summary.model_dump_json()


@process_app.command("import")
def process_import(
    source: Annotated[typer.FileText, typer.Argument(help="the JSON document ('-': stdin)")],
    dry_run: Annotated[bool, typer.Option(help="report what would change, apply nothing")] = False,
) -> None:
    """Apply a process document all-or-nothing (as the operating-system user, audited)."""
    try:
        typer.echo(asyncio.run(_import(Settings(), source.read(), dry_run)))
    except ValidationError as exc:
        typer.echo(f"refused: the document is malformed: {exc}", err=True)
        raise typer.Exit(2) from exc
    except MesError as exc:
        typer.echo(f"refused ({exc.code}): {exc.detail}", err=True)
        for error in exc.extra.get("errors", []):
            typer.echo(f"  - {error}", err=True)
        raise typer.Exit(2) from exc


import_app = typer.Typer(help="Import external data sets.", no_args_is_help=True)
app.add_typer(import_app, name="import")


async def import_smt2020_into(
    database: Database,
    folder: str,
    fab: str,
    start_at: datetime | None,
    *,
    clock: Clock | None = None,
) -> dict[str, int]:
    """Read an SMT2020-format folder and load it as fab ``fab`` in one transaction."""
    from mes.smt2020 import importer, tables

    testbed = tables.read_testbed(folder)
    async with unit_of_work(database) as session:
        bind(session, _cli_context("smt2020.import"))
        counts = await importer.import_testbed(
            session, testbed, fab_code=fab, clock=clock or SystemClock(), start_at=start_at
        )
    if database.engine.dialect.name == "postgresql":
        # A bulk load leaves the planner without statistics until autovacuum comes by; plans
        # made blind (nested loops over every lot) cost dispatching tens of milliseconds.
        async with database.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("ANALYZE")
    return counts


async def _import_smt2020(
    settings: Settings, folder: str, fab: str, start_at: datetime | None
) -> dict[str, int]:
    database = open_database(settings)
    try:
        return await import_smt2020_into(database, folder, fab, start_at)
    finally:
        await database.dispose()


@import_app.command("smt2020")
def import_smt2020(
    folder: Annotated[str, typer.Argument(help="folder with tool.txt.1l, route_*.txt, WIP.txt …")],
    fab: Annotated[str, typer.Option("--fab", help="code of the fab to create and fill")],
    start: Annotated[
        str | None, typer.Option(help="ISO time that the testbed's time zero maps to (now)")
    ] = None,
) -> None:
    """Load an SMT2020-format testbed as one fab's master data and WIP."""
    from mes.smt2020.tables import TestbedError

    start_at = None
    if start is not None:
        start_at = datetime.fromisoformat(start)
        if start_at.tzinfo is None:
            raise typer.BadParameter("--start needs a time zone, e.g. 2026-01-05T06:00:00+00:00")
    try:
        counts = asyncio.run(_import_smt2020(long_statements(Settings()), folder, fab, start_at))
    except TestbedError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from exc
    except MesError as exc:
        typer.echo(f"refused ({exc.code}): {exc.detail}", err=True)
        for error in exc.extra.get("errors", []):
            typer.echo(f"  - {error}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(counts, sort_keys=True))

"""The ``mes`` command's long-running process roles: ``mes serve`` (API and console),
``mes adapters run`` (OPC UA adapters) and ``mes dispatcher run``; each sets up its logging,
tracing and metrics before it opens the database (docs/deployment.md)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer
import uvicorn

from mes.cli.admin import app, open_database
from mes.clock import SystemClock
from mes.config import Settings

adapters_app = typer.Typer(help="OPC UA equipment adapters.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")


def _configure_logging(settings: Settings) -> None:
    """Text or JSON lines (MES_LOG_FORMAT) for the long-running roles."""
    from mes.observability import logs

    logs.configure(settings.log_level, settings.log_format)


def _start_role(settings: Settings, role: str, actor: str | None = None) -> None:
    """Logging, tracing (if OTEL_EXPORTER_OTLP_ENDPOINT) and the metrics port of a role
    without HTTP (if MES_METRICS_PORT), before its database is opened."""
    from mes.observability import exposition, logs, tracing

    _configure_logging(settings)
    if actor is not None:
        logs.set_process_actor(actor)
    tracing.start(role)
    try:
        exposition.serve_metrics(settings.metrics_port, role)
    except OSError as exc:
        typer.echo(f"refused: MES_METRICS_PORT={settings.metrics_port}: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="service processes, each with its own socket on the port", min=1),
    ] = None,
) -> None:
    """Serve the REST API (and /docs) with uvicorn."""
    settings = Settings()
    _configure_logging(settings)
    count = workers or settings.workers
    if count > 1:
        from mes.serving import serve_workers

        serve_workers(settings, host or settings.host, port or settings.port, count)
        return
    from mes.main import create_app
    from mes.observability.logs import uvicorn_log_config

    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(settings.log_format),
        # Console event streams never end by themselves: on Ctrl-C give requests a moment,
        # then close what is still open instead of waiting for every browser tab to go.
        timeout_graceful_shutdown=3,
    )


async def _run_adapters(settings: Settings, fab: str | None, shard: str, owner: str | None) -> None:
    from mes.opcua.runtime import build_registry

    database = open_database(settings)
    try:
        registry = build_registry(
            database, SystemClock(), settings, fab=fab, shard=shard, owner=owner
        )
        logging.getLogger("mes.opcua").info(
            "adapter %s: fab %s, shard %s", registry.owner, fab or "all", shard
        )
        await registry.run()
    finally:
        await database.dispose()


@adapters_app.command("run")
def adapters_run(
    fab: Annotated[str | None, typer.Option(help="serve this fab's tools (default: all)")] = None,
    shard: Annotated[str, typer.Option(help="i/n: serve the tools of shard i of n")] = "0/1",
    owner: Annotated[str | None, typer.Option(help="lease owner name (default: host:pid)")] = None,
) -> None:
    """Run OPC UA adapters for a fab's tools until interrupted (each tool leased to one adapter;
    a dead adapter's tools are taken over by another within the lease TTL)."""
    from mes.opcua.registry import default_owner
    from mes.opcua.runtime import adapter_settings

    settings = Settings()
    _configure_logging(settings)
    try:
        adapter_settings(settings)  # unusable security files: refuse before connecting
    except ValueError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from exc
    owner = owner or default_owner()
    _start_role(settings, "adapters", f"adapter:{owner}")
    try:
        asyncio.run(_run_adapters(settings, fab, shard, owner))
    except KeyboardInterrupt:
        typer.echo("adapters stopped")


dispatcher_app = typer.Typer(help="The automatic dispatcher as its own process.")
app.add_typer(dispatcher_app, name="dispatcher")


async def _run_dispatcher(settings: Settings, fabs: str, owner: str | None) -> None:
    from mes.dispatch.scheduler import Dispatcher, parse_fabs
    from mes.opcua.registry import default_owner

    database = open_database(settings)
    dispatcher = Dispatcher(
        database,
        SystemClock(),
        parse_fabs(fabs),
        owner=owner or default_owner(),
        interval_s=settings.dispatch_interval_s or 30.0,
        lease_ttl_s=settings.dispatch_lease_ttl_s,
        top_n=settings.dispatch_top_n,
        min_gap_s=settings.dispatch_min_gap_s,
    )
    logging.getLogger("mes.dispatch").info("dispatcher %s: fabs %s", dispatcher.owner, fabs)
    try:
        await dispatcher.run()
    finally:
        await database.dispose()


@dispatcher_app.command("run")
def dispatcher_run(
    fab: Annotated[str, typer.Option(help='fabs to dispatch: "F1,F2" or "F1,F2=advise"')],
    owner: Annotated[str | None, typer.Option(help="lease owner name (default: host:pid)")] = None,
) -> None:
    """Dispatch fabs until interrupted: every candidate started for a fab waits on its lease;
    the holder decides every MES_DISPATCH_INTERVAL_S (30 s if unset), and a standby takes over
    within MES_DISPATCH_LEASE_TTL_S of the leader's death."""
    from mes.dispatch.scheduler import parse_fabs
    from mes.opcua.registry import default_owner

    settings = Settings()
    _configure_logging(settings)
    try:
        if not parse_fabs(fab):
            raise ValueError("name at least one fab")
    except ValueError as exc:
        typer.echo(f"refused: --fab {fab!r}: {exc}", err=True)
        raise typer.Exit(2) from exc
    owner = owner or default_owner()
    _start_role(settings, "dispatcher", f"dispatcher:{owner}")
    try:
        asyncio.run(_run_dispatcher(settings, fab, owner))
    except KeyboardInterrupt:
        typer.echo("dispatcher stopped", err=True)

"""Command line: serve a fab of simulated tools, or inject a fault into a running one.

    python -m equipment_sims --fab mes/seed/example_fab.json --speed 60 --fab-code F1
    python -m equipment_sims fault opc.tcp://127.0.0.1:4844/F1-ETPO01 chamber_down \
        '{"chamber": "PM2"}'
    python -m equipment_sims trust path/to/mes-client-cert.der      # add to the trust list

(also installed as the console script ``mes-sims``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from mes.opcua import model as m

from .fab import DEFAULT_BASE_PORT, load_fab
from .faults import KINDS as FAULT_KINDS
from .launcher import DEFAULT_SHELF_DIR, SimFab
from .pki import DEFAULT_PKI_DIR, Pki, Security
from .server import SimServer


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mes-sims", description="Serve simulated fab tools.")
    p.add_argument("--fab", type=Path, required=True, help="fab description (JSON)")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    p.add_argument("--fab-code", help="only the tools of this fab")
    p.add_argument("--only", action="append", help="only this tool (repeatable)")
    p.add_argument("--shelf-dir", type=Path, default=DEFAULT_SHELF_DIR)
    p.add_argument(
        "--pki-dir",
        type=Path,
        default=DEFAULT_PKI_DIR,
        help="server certificates (own/), trust list (trusted/), refused clients (rejected/)",
    )
    sec = p.add_mutually_exclusive_group()
    sec.add_argument(
        "--require-security",
        action="store_const",
        dest="security",
        const=Security.REQUIRED,
        help="offer Basic256Sha256 only (no SecurityPolicy None endpoint)",
    )
    sec.add_argument(
        "--no-security",
        action="store_const",
        dest="security",
        const=Security.NONE,
        help="offer SecurityPolicy None only (no certificates)",
    )
    p.add_argument(
        "--state-dir", type=Path, help="persist each tool's state here and start from it"
    )
    p.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="random faults: occurrences per simulated hour of each kind (0: none)",
    )
    p.add_argument(
        "--fault-kinds",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated subset of {','.join(FAULT_KINDS)}",
    )
    p.add_argument(
        "--pv-period",
        type=float,
        default=0.5,
        help="real seconds between publications of the process values (default 0.5)",
    )
    p.add_argument(
        "--journal", type=Path, help="append every job state change as a JSON line (for tests)"
    )
    p.add_argument("--log-level", default="WARNING")
    return p


def _trust_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mes-sims trust", description="Add a client certificate to the tools' trust list."
    )
    p.add_argument("certificate", type=Path, help="client certificate (.der or .pem)")
    p.add_argument("--pki-dir", type=Path, default=DEFAULT_PKI_DIR)
    return p


def _fault_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mes-sims fault", description="Inject a fault.")
    p.add_argument("endpoint", help="opc.tcp://host:port/TOOL")
    p.add_argument("fault", choices=SimServer.FAULTS)
    p.add_argument("arguments", nargs="?", default="{}", help="JSON object of arguments")
    return p


async def serve(args: argparse.Namespace) -> None:
    specs = load_fab(
        args.fab,
        base_port=args.base_port,
        fab=args.fab_code,
        only=set(args.only) if args.only else None,
    )
    if not specs:
        raise SystemExit("no tools to simulate")
    kinds = tuple(k for k in args.fault_kinds.split(",") if k)
    if set(kinds) - set(FAULT_KINDS):
        raise SystemExit(f"unknown fault kinds: {sorted(set(kinds) - set(FAULT_KINDS))}")
    security = args.security or Security.OPTIONAL
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with SimFab(
        specs,
        speed=args.speed,
        seed=args.seed,
        host=args.host,
        shelf_dir=args.shelf_dir,
        pki_dir=None if security is Security.NONE else args.pki_dir,
        security=security,
        state_dir=args.state_dir,
        fault_rate=args.fault_rate,
        fault_kinds=kinds,
        process_value_period_s=args.pv_period,
        journal=args.journal,
    ) as fab:
        for server in fab.servers.values():
            print(f"{server.spec.tool_id:12} {server.spec.kind.value:12} {server.endpoint}")
        if security is not Security.NONE:
            pki = Pki(args.pki_dir)
            print(f"security {security.value}: server certificates in {pki.own}")
            print(f"trust list {pki.trusted} (refused client certificates land in {pki.rejected})")
        print(f"{len(specs)} tools at speed {args.speed:g}; Ctrl-C stops", flush=True)
        await stop.wait()


async def inject(args: argparse.Namespace) -> None:
    from asyncua import Client

    async with Client(args.endpoint, timeout=10) as client:
        idx = await client.get_namespace_index(m.NS_FAB)
        tool = args.endpoint.rstrip("/").rsplit("/", 1)[-1]
        machines = await client.nodes.objects.get_child(
            f"{await client.get_namespace_index(m.NS_MACHINERY)}:{m.MACHINES[1]}"
        )
        sim = await machines.get_child([f"{idx}:{tool}", f"{idx}:{m.SIMULATION[1]}"])
        await sim.call_method(f"{idx}:{m.INJECT_FAULT}", args.fault, args.arguments)
    print(f"{args.fault} injected into {tool}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "fault":
        asyncio.run(inject(_fault_parser().parse_args(argv[1:])))
        return
    if argv and argv[0] == "trust":
        targs = _trust_parser().parse_args(argv[1:])
        print(f"trusted: {Pki(targs.pki_dir).trust(targs.certificate)}")
        return
    args = _serve_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()

"""A TCP proxy in front of the database that a test controls: pass traffic, refuse new
connections (the port closed), stall (connections accepted, nothing forwarded either way), or
sever every open connection (what a database restart does to its clients)."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open.add(writer)
        try:
            await self.flowing.wait()  # a stalled proxy accepts and then says nothing
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self.open.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open.discard(writer)
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            self.open.discard(writer)
            writer.close()

    def sever(self) -> None:
        """Drop every open connection (both sides), as a database restart does."""
        for writer in list(self.open):
            writer.transport.abort()
        self.open.clear()

    async def refuse(self) -> None:
        """Close the port: new connections are refused; open ones are dropped."""
        assert self.server is not None
        self.server.close()
        self.sever()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1)
        self.server = None

    def stall(self) -> None:
        """Accept connections but forward nothing, on new and open connections alike."""
        self.flowing.clear()

    async def restore(self) -> None:
        self.flowing.set()
        if self.server is None:
            await self.start()

    async def close(self) -> None:
        self.flowing.set()
        self.sever()
        if self.server is not None:
            self.server.close()

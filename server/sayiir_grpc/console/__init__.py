"""The operators' web console (`sayiir-grpc serve --console-listen HOST:PORT`).

It runs in the service process on an event loop and thread of its own, with
a small database pool of its own, so a slow page never delays a worker's
gRPC call. Served over TLS when the service is.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field

from aiohttp import web

from sayiir_common.codec import SnapshotCodec
from sayiir_grpc.console.pages import Console
from sayiir_grpc.db import Database, PoolOptions
from sayiir_grpc.security import Token

CONSOLE_POOL = PoolOptions(max_connections=3, min_connections=1)


@dataclass
class ConsoleServer:
    """The console's thread; `start()` returns once it listens, `stop()` ends it."""

    listen: str
    database_url: str
    codec: SnapshotCodec
    tokens: list[Token]
    tls: ssl.SSLContext | None = None
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _stop: asyncio.Event | None = None
    _error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._run, name="sayiir-console", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise OSError(f"the console did not start listening on {self.listen} within {timeout} s")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            db = await Database.connect(self.database_url, CONSOLE_POOL)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        runner = web.AppRunner(
            Console(db, self.codec, self.tokens, secure_cookie=self.tls is not None).application(), access_log=None
        )
        try:
            await runner.setup()
            host, _, port = self.listen.rpartition(":")
            site = web.TCPSite(runner, host, int(port), ssl_context=self.tls)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else int(port)
        except BaseException as exc:
            self._error = exc
            await runner.cleanup()
            await db.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await db.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)


def tls_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    """The console's TLS context: the service's own certificate, when it serves TLS."""
    if not cert_file or not key_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context

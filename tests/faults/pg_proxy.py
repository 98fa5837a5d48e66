"""A TCP proxy that speaks enough of the PostgreSQL protocol to cut a
connection right after a COMMIT succeeded, before the client reads it.

A keyed call made of one statement commits without a COMMIT (autocommit:
its writes and its idempotency key in one `WITH ...` statement); the proxy
cuts those too, on the ReadyForQuery that follows their success, when the
implicit transaction has committed.

The service then holds a transaction that committed but was never
acknowledged: the one case where it cannot know the outcome by itself.
Connections must not ask for TLS (`sslmode=disable`): the proxy reads the
messages in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field

# A keyed one-statement write: it records its idempotency key in a CTE
# (COMPLETE_CONTINUED always carries that CTE, and runs only when keyed).
_KEYED_STATEMENT = b"sayiir_grpc_idempotency_keys"


@dataclass
class _Connection:
    commits_in_flight: int = 0
    # Prepared statements by name: is each a keyed one-statement write?
    keyed: dict[bytes, bool] = field(default_factory=dict)
    in_transaction: bool = False
    # A keyed one-statement write sent outside a transaction, and whether it succeeded.
    autocommit_in_flight: bool = False
    autocommit_done: bool = False


@dataclass
class CommitCuttingProxy:
    upstream_host: str
    upstream_port: int
    port: int = 0
    # COMMITs still to cut; each cut one is counted in `cuts`.
    armed: int = 0
    cuts: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def cut_next_commit(self) -> None:
        self.armed += 1

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            client_writer.close()
            self._handlers.discard(task)
            return
        state = _Connection()
        pumps = [
            asyncio.create_task(self._client_to_server(client_reader, up_writer, state)),
            asyncio.create_task(self._server_to_client(up_reader, client_writer, state)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client_writer, up_writer):
                writer.transport.abort()
            self._handlers.discard(task)

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Connection
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            writer.write(struct.pack("!i", length) + await reader.readexactly(length - 4))  # the startup message
            while True:
                header = await reader.readexactly(5)
                body = await reader.readexactly(struct.unpack("!i", header[1:])[0] - 4)
                kind = header[:1]
                if kind == b"Q" and body.rstrip(b"\0").strip().rstrip(b";").strip().upper() == b"COMMIT":
                    state.commits_in_flight += 1
                elif kind == b"P":  # Parse: statement name, query text
                    name, query = body.split(b"\0", 2)[:2]
                    state.keyed[name] = _KEYED_STATEMENT in query and query.lstrip().upper().startswith(b"WITH")
                elif kind == b"B":  # Bind: portal name, statement name
                    statement = body.split(b"\0", 2)[1]
                    if state.keyed.get(statement) and not state.in_transaction:
                        state.autocommit_in_flight, state.autocommit_done = True, False
                writer.write(header + body)
                await writer.drain()

    async def _server_to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Connection
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header = await reader.readexactly(5)
                body = await reader.readexactly(struct.unpack("!i", header[1:])[0] - 4)
                kind = header[:1]
                committed = False
                if kind == b"C" and body.startswith(b"COMMIT") and state.commits_in_flight:
                    state.commits_in_flight -= 1
                    committed = True
                elif kind in (b"C", b"s") and state.autocommit_in_flight:
                    # CommandComplete, or PortalSuspended (asyncpg's fetchrow asks
                    # for one row; the writes of the statement all run either way).
                    state.autocommit_done = True
                elif kind == b"E":  # ErrorResponse: the implicit transaction rolls back
                    state.autocommit_done = False
                elif kind == b"Z":  # ReadyForQuery: the transaction status
                    state.in_transaction = body[:1] != b"I"
                    committed = state.autocommit_in_flight and state.autocommit_done
                    state.autocommit_in_flight = False
                if committed and self.armed:
                    # Committed in PostgreSQL; the client never hears of it.
                    self.armed -= 1
                    self.cuts += 1
                    return
                writer.write(header + body)
                await writer.drain()

"""The floor under the service's CPU per workflow: a bare grpc.aio server
and pool (the service's own `ConnectionPool`) making the same round trips,
with no store logic at all.

Per linear workflow of 4 steps the fleet run makes 6 calls (SaveSnapshot,
one ClaimAvailableTasks, CompleteTask x 4 with the claim continued) and the
server runs, per call, the same number of database round trips as the real
handlers (bench/run.py's SERVICE_ROUND_TRIPS: a save one statement, a
claim one keyed statement, a continued completion one statement, which
with `--sql service` goes through the service's own `CompletionBatch`, so
the completions of one event-loop turn share a round trip as there). Here
each handler runs that many `SELECT $1::bytea` on a pooled connection and
answers 200 bytes: gRPC, HTTP/2, the event loop, the pool
and the protocol, nothing else. The server and the client are separate
processes (uvloop for both, as the service); their CPU over the window,
divided by the workflows, is the floor of the server and worker-client
roles.

The shape is configurable: statements per call kind, whether each kind is a
transaction (BEGIN and COMMIT are 2 more round trips), and the transport of
claims and completions: `unary` (one RPC each) or `stream` (messages on one
bidi session stream per client channel, carrying a request id; the server
runs each message in its own task and answers through one writer per stream;
saves stay unary RPCs, as they come from the submitter). As the service's
session, each message carries every request (or reply) queued when it is
written, and a writer lingers for more (at most the service's LINGER_S)
while others of its session are under way. With `--sql service` (the
service's statements) each load loop saves WORKFLOWS_PER_CLAIM workflows
and claims their tasks together, as the service's workers claim as many
tasks as they have room for: its claims per workflow are measured.

After the CPU window, under the same load, a probe process calls a `Load`
RPC (one `SELECT $1::bytea`, no transaction, on a connection of its own as
the service's read lane) every 10 ms; the server times
each Load handler and reports p50/p99/max: the floor of the load_snapshot
latency goal. The probe has a window of its own (as in bench/fleet.py) so
that its calls do not count as workflow CPU.

    .venv/bin/python bench/floor.py --url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/floor.py --transport stream --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import latency_block
from sayiir_grpc.pool import ConnectionPool
from sayiir_grpc.servicers.worker_session import LINGER_S  # the client's default linger is the same

KINDS = ("Save", "Claim", "Complete")
STATEMENTS = {"Save": 2, "Claim": 1, "Complete": 3}
TRANSACTION = {"Save": True, "Claim": False, "Complete": True}
PAYLOAD = b"x" * 200
CALLS_PER_WF = ["Save", "Claim", "Complete", "Complete", "Complete", "Complete"]
# What a worker sends on its session stream; saves come from the submitter.
STREAMED = frozenset({"Claim", "Complete"})
TRANSPORTS = ("unary", "stream")
# What each statement is: `SELECT $1::bytea` (the transport alone), or the
# service's own statements on the engine's tables (bench/floor_sql.py).
SQL_KINDS = ("select", "service")
# The service's statements per call kind (`--sql service`): a keyed save,
# a keyed claim (the long poll's first look), a continued completion.
SERVICE_STATEMENTS = {"Save": 1, "Claim": 1, "Complete": 1}
CHANNELS = 4
POOL_SIZE = 12  # bench/fleet.py's SERVICE_POOL
ACQUIRE_TIMEOUT_S = 30.0
ID_BYTES = 8
QUERY = "SELECT $1::bytea"
# `--sql service`: each load loop runs this many workflows on one claim, as
# the service's workers claim as many tasks as they have room for (about
# one claim per two workflows in bench/fleet.py's run).
WORKFLOWS_PER_CLAIM = 2

Call = Callable[[bytes], Awaitable[bytes]]


@dataclass(frozen=True)
class Shape:
    statements: Mapping[str, int]
    transaction: Mapping[str, bool]
    transport: str = "unary"
    sql: str = "select"

    @classmethod
    def make(
        cls,
        statements: Mapping[str, int | None] | None = None,
        transaction: Mapping[str, bool | None] | None = None,
        transport: str = "unary",
        sql: str = "select",
    ) -> Shape:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r} is not one of {TRANSPORTS}")
        if sql not in SQL_KINDS:
            raise ValueError(f"sql {sql!r} is not one of {SQL_KINDS}")
        unknown = (set(statements or {}) | set(transaction or {})) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown call kinds {sorted(unknown)}; the kinds are {KINDS}")
        defaults = (SERVICE_STATEMENTS, dict.fromkeys(KINDS, False)) if sql == "service" else (STATEMENTS, TRANSACTION)
        given_statements = {k: v for k, v in (statements or {}).items() if v is not None}
        given_transaction = {k: v for k, v in (transaction or {}).items() if v is not None}
        shape = cls({**defaults[0], **given_statements}, {**defaults[1], **given_transaction}, transport, sql)
        if sql == "service" and (shape.statements != SERVICE_STATEMENTS or any(shape.transaction.values())):
            raise ValueError(f"--sql service runs the service's statements: {SERVICE_STATEMENTS}, no transaction")
        return shape

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Shape:
        return cls.make(
            {kind: getattr(args, f"{kind.lower()}_statements") for kind in KINDS},
            {kind: getattr(args, f"{kind.lower()}_tx") for kind in KINDS},
            args.transport,
            args.sql,
        )

    def args(self) -> list[str]:
        """The flags that give a child process this shape."""
        flags = ["--transport", self.transport, "--sql", self.sql]
        for kind in KINDS:
            flags += [f"--{kind.lower()}-statements", str(self.statements[kind])]
            flags.append(f"--{kind.lower()}-tx" if self.transaction[kind] else f"--no-{kind.lower()}-tx")
        return flags

    def streamed(self, kind: str) -> bool:
        return self.transport == "stream" and kind in STREAMED

    def summary(self) -> dict[str, Any]:
        messages = sum(1 for kind in CALLS_PER_WF if self.streamed(kind))
        return {
            "transport": self.transport,
            "sql": self.sql,
            "rpcs_per_wf": len(CALLS_PER_WF) - messages,
            "stream_messages_per_wf": messages,
            "statements_per_wf": sum(self.statements[kind] for kind in CALLS_PER_WF),
            "round_trips_per_wf": sum(
                self.statements[kind] + (2 if self.transaction[kind] else 0) for kind in CALLS_PER_WF
            ),
            "statements": dict(self.statements),
            "transactions": dict(self.transaction),
        }


def add_shape_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transport", choices=TRANSPORTS, default="unary")
    parser.add_argument("--sql", choices=SQL_KINDS, default="select")
    for kind in KINDS:
        # Unset: the default of the --sql kind (STATEMENTS, or the service's).
        parser.add_argument(f"--{kind.lower()}-statements", type=int, default=None)
        parser.add_argument(f"--{kind.lower()}-tx", action=argparse.BooleanOptionalAction, default=None)


def _loop() -> None:
    import uvloop

    uvloop.install()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- session messages -------------------------------------------------------------


async def framed(
    queue: asyncio.Queue[bytes | None], busy: Callable[[int], bool] = lambda taken: False
) -> AsyncIterator[bytes]:
    """The queue's items as stream messages, until None: each message carries
    every item queued by the time it is written (length-prefixed frames).
    While `busy(items taken)` (others of the session are under way, whose
    answers bring more items soon) it lingers for them first, at most
    LINGER_S, as the service's session and client do."""
    while (item := await queue.get()) is not None:
        frames = [item]
        ended = False
        if busy(len(frames)):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LINGER_S):
                    while busy(len(frames)):
                        more = await queue.get()
                        if more is None:
                            ended = True
                            break
                        frames.append(more)
        while not ended and not queue.empty():
            more = queue.get_nowait()
            if more is None:
                ended = True
                break
            frames.append(more)
        yield b"".join(len(frame).to_bytes(4, "big") + frame for frame in frames)
        if ended:
            return


def unframed(message: bytes) -> list[bytes]:
    frames, at = [], 0
    while at < len(message):
        size = int.from_bytes(message[at : at + 4], "big")
        frames.append(message[at + 4 : at + 4 + size])
        at += 4 + size
    return frames


# -- server ---------------------------------------------------------------------


async def _service_statements(pool: ConnectionPool) -> tuple[list[Call], str, Callable[[bytes], tuple[Any, ...]]]:
    """The Save, Claim and Complete handlers of `--sql service`, and Load's
    statement: the service's own, bound by bench/floor_sql.py.

    Save's request is the instance id; Claim's the most tasks to claim (one
    byte) and the worker id, its reply the claimed instance ids (none:
    none ready); Complete's the step (one byte), the worker id and the
    instance id."""
    import floor_sql

    from sayiir_grpc.stores.continuation import COMPLETE_CONTINUED, CompletionBatch
    from sayiir_grpc.stores.dispatch import CLAIM_AVAILABLE_KEYED
    from sayiir_grpc.stores.snapshot_store import LOAD_SNAPSHOT, SAVE_SNAPSHOT_KEYED

    workflow = await floor_sql.workflow()
    completions = CompletionBatch(lambda: pool.connection(ACQUIRE_TIMEOUT_S))
    claims = itertools.count()
    saved: list[str] = [floor_sql.INSTANCE]
    worker_width = len(floor_sql.WORKER)

    async def save(request: bytes) -> bytes:
        instance = request.decode()
        async with pool.connection(ACQUIRE_TIMEOUT_S) as conn:
            await conn.fetchrow(SAVE_SNAPSHOT_KEYED, *workflow.save_args(instance))
        saved[0] = instance
        return b""

    async def claim(request: bytes) -> bytes:
        limit, worker = request[0], request[1:].decode()
        key = f"{worker}/{next(claims)}"
        # As the service's long poll's first look: one statement, its key
        # stored only when something was claimed.
        async with pool.connection(ACQUIRE_TIMEOUT_S) as conn:
            rows = await conn.fetch(
                CLAIM_AVAILABLE_KEYED,
                limit,
                None,
                worker,
                floor_sql.CLAIM_TTL_S,
                floor_sql.AGING_S,
                key,
                floor_sql.REQUEST_HASH,
                False,
            )
        # The claimed instance ids, each as wide as floor_sql.INSTANCE.
        return b"".join(row["instance_id"].encode() for row in rows)

    async def complete(request: bytes) -> bytes:
        step, worker, instance = (
            request[0],
            request[1 : 1 + worker_width].decode(),
            request[1 + worker_width :].decode(),
        )
        # The service's batch: the completions of one turn in one round trip.
        args = workflow.completion_args(step, instance, worker)
        row = await completions.submit(args)
        if row is None:
            # Its row was locked (a claim looking at it): the batch skipped
            # it, and the service would complete it alone; so does the floor.
            async with pool.connection(ACQUIRE_TIMEOUT_S) as conn:
                row = await conn.fetchrow(COMPLETE_CONTINUED, *args)
        if row is None:
            raise RuntimeError(f"completion {step} of {instance} wrote nothing")
        return b""

    return [save, claim, complete], LOAD_SNAPSHOT, lambda request: (saved[0],)


async def serve(url: str, pool_size: int, shape: Shape) -> None:
    import asyncpg
    import grpc

    # The service's own pool: its cost per acquire and release is the service's.
    pool = ConnectionPool(lambda: asyncpg.connect(url), pool_size, min_size=pool_size, max_lifetime=3600)
    await pool.open()
    # Load's connection of its own, as the service's read lane: a point read
    # never waits for a pooled connection behind the hot path.
    load_connection = await asyncpg.connect(url)
    load_lock = asyncio.Lock()
    load_durations: list[float] = []
    load_waits: list[float] = []  # of those, the wait for Load's connection

    def runner(kind: str) -> Call:
        count, in_tx = shape.statements[kind], shape.transaction[kind]

        async def run(request: bytes) -> bytes:
            async with pool.connection(ACQUIRE_TIMEOUT_S) as conn:
                if in_tx:
                    async with conn.transaction():
                        for _ in range(count):
                            await conn.fetchval(QUERY, request)
                else:
                    for _ in range(count):
                        await conn.fetchval(QUERY, request)
            return PAYLOAD

        return run

    load_query, load_args = QUERY, lambda request: (request,)
    if shape.sql == "service":
        runs, load_query, load_args = await _service_statements(pool)
    else:
        runs = [runner(kind) for kind in KINDS]

    def unary(run: Call) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def call(request: bytes, context: Any) -> bytes:
            return await run(request)

        return grpc.unary_unary_rpc_method_handler(call)

    async def session(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        """One worker's stream: a task per message, replies through this one writer."""
        replies: asyncio.Queue[bytes | None] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()
        under_way = 0

        async def handle(message: bytes) -> None:
            nonlocal under_way
            under_way += 1
            try:
                reply = await runs[message[ID_BYTES]](message[ID_BYTES + 1 :])
            finally:
                under_way -= 1
            replies.put_nowait(message[:ID_BYTES] + reply)

        async def read() -> None:
            try:
                async for message in requests:
                    for frame in unframed(message):
                        task = asyncio.create_task(handle(frame))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                await asyncio.gather(*pending)
            finally:
                replies.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            async for message in framed(replies, lambda taken: under_way > 0):
                yield message
            await reader  # raises what failed a handler, so the client sees the stream fail
        finally:
            reader.cancel()
            for task in list(pending):
                task.cancel()

    async def load(request: bytes, context: Any) -> bytes:
        started = time.monotonic()
        async with load_lock:
            load_waits.append(time.monotonic() - started)
            await load_connection.fetchrow(load_query, *load_args(request))
        load_durations.append(time.monotonic() - started)
        return PAYLOAD

    async def stats(request: bytes, context: Any) -> bytes:
        """The Load handlers' durations since the last Stats call, which resets them."""
        summary = {**latency_block(load_durations), "acquire": latency_block(load_waits)}
        load_durations.clear()
        load_waits.clear()
        return json.dumps(summary).encode()

    handlers = {kind: unary(run) for kind, run in zip(KINDS, runs, strict=True)}
    handlers["Session"] = grpc.stream_stream_rpc_method_handler(session)
    handlers["Load"] = grpc.unary_unary_rpc_method_handler(load)
    handlers["Stats"] = grpc.unary_unary_rpc_method_handler(stats)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Floor", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


# -- load client ----------------------------------------------------------------


class Session:
    """A worker's session stream on one channel: requests carry an id, replies are matched to waiting futures."""

    def __init__(self, channel: Any) -> None:
        self._outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._next_id = 0
        self.messages = 0
        self.requests = 0
        self._call = channel.stream_stream("/floor.Floor/Session")(self._requests())
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[bytes]:
        async for message in framed(self._outbox, self._awaiting_written):
            self.messages += 1
            yield message

    def _awaiting_written(self, taken: int) -> bool:
        """Are requests written and unanswered (their answers bring more requests)?"""
        return len(self._waiting) > self._outbox.qsize() + taken

    async def _read(self) -> None:
        try:
            async for message in self._call:
                for reply in unframed(message):
                    future = self._waiting.pop(int.from_bytes(reply[:ID_BYTES], "big"))
                    if not future.done():
                        future.set_result(reply[ID_BYTES:])
        except Exception as error:
            # A failed stream fails its waiting workflows, which the window reports.
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(error)
            raise

    async def request(self, kind: int, payload: bytes) -> bytes:
        self._next_id += 1
        self.requests += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = future
        self._outbox.put_nowait(self._next_id.to_bytes(ID_BYTES, "big") + bytes((kind,)) + payload)
        return await future

    def close(self) -> None:
        self._outbox.put_nowait(None)
        self._reader.cancel()


async def drive(
    port: int,
    inflight: int,
    channels: int,
    warmup: float,
    duration: float,
    shape: Shape,
    server_pid: int | None,
    database: str | None = None,
) -> None:
    """Keep `inflight` workflows going; print the window's JSON line, then go on until stdin closes."""
    import grpc

    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
    sessions = [Session(ch) for ch in chans] if shape.transport == "stream" else []

    def calls(k: int) -> list[Call]:
        channel = chans[k % channels]
        out: list[Call] = []
        for kind in CALLS_PER_WF:
            if shape.streamed(kind):
                out.append(functools.partial(sessions[k % channels].request, KINDS.index(kind)))
            else:
                stub: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/floor.Floor/{kind}")
                out.append(stub)
        return out

    done = 0

    async def workflow_loop(k: int) -> None:
        nonlocal done
        workflow = calls(k)
        while True:
            for call in workflow:
                await call(PAYLOAD)
            done += 1

    claims = 0

    async def service_loop(k: int) -> None:
        """Save WORKFLOWS_PER_CLAIM workflows, claim as many tasks (whichever
        are ready) in as few claims as it takes, complete their steps."""
        import floor_sql

        nonlocal done, claims
        save, claim, *steps = calls(k)
        worker = floor_sql.worker_id(f"{os.getpid()}-{k}").encode()
        width = len(floor_sql.INSTANCE)

        async def run_steps(instance: bytes) -> None:
            nonlocal done
            for step, complete in enumerate(steps):
                await complete(bytes((step,)) + worker + instance)
            done += 1

        numbers = itertools.count()
        while True:
            ids = [floor_sql.instance_id(f"{os.getpid()}-{k}", next(numbers)) for _ in range(WORKFLOWS_PER_CLAIM)]
            await asyncio.gather(*(save(instance.encode()) for instance in ids))
            claimed: list[bytes] = []
            while len(claimed) < WORKFLOWS_PER_CLAIM:
                claims += 1
                reply = await claim(bytes((WORKFLOWS_PER_CLAIM - len(claimed),)) + worker)
                claimed += [reply[at : at + width] for at in range(0, len(reply), width)]
                if not reply:
                    # Another loop's claim was faster: look again shortly.
                    await asyncio.sleep(0.001)
            await asyncio.gather(*(run_steps(instance) for instance in claimed))

    def server_cpu() -> float:
        return _cpu(server_pid) if server_pid else 0.0

    import common

    # The PostgreSQL backends serving `database`, when there is one.
    postgres = common.CpuMeter(None, database) if database else None
    if shape.sql == "service":
        tasks = [asyncio.create_task(service_loop(k)) for k in range(max(1, inflight // WORKFLOWS_PER_CLAIM))]
    else:
        tasks = [asyncio.create_task(workflow_loop(k)) for k in range(inflight)]
    await asyncio.sleep(warmup)

    def sent() -> tuple[int, int]:
        return sum(x.requests for x in sessions), sum(x.messages for x in sessions)

    before, claims_before, start, own, server_before = done, claims, time.monotonic(), os.times(), server_cpu()
    if postgres is not None:
        postgres.start()
    sent_before = sent()
    await asyncio.sleep(duration)
    after, claims_after, end, own_after, server_after = done, claims, time.monotonic(), os.times(), server_cpu()
    if postgres is not None:
        postgres.stop()
    sent_after = sent()
    failed = [repr(task.exception()) for task in tasks if task.done() and not task.cancelled() and task.exception()]
    window = {
        "workflows": after - before,
        "claims": claims_after - claims_before,
        "seconds": end - start,
        "client_cpu_s": (own_after.user + own_after.system) - (own.user + own.system),
        "server_cpu_s": server_after - server_before,
        "postgres_cpu_s": 0.0 if postgres is None else postgres.pg_cpu_s,
        "requests_sent": sent_after[0] - sent_before[0],
        "messages_sent": sent_after[1] - sent_before[1],
        "failed": failed[:3],
    }
    print(json.dumps(window), flush=True)
    # The load goes on while the probe measures Load; the parent closes stdin when it is done.
    await asyncio.to_thread(sys.stdin.readline)
    for task in tasks:
        task.cancel()
    for session in sessions:
        session.close()
    for ch in chans:
        await ch.close()


# -- load probe -----------------------------------------------------------------


async def probe(port: int, interval: float, duration: float) -> None:
    """Print "ready", wait for a line on stdin, then call Load every `interval` for `duration`."""
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        load: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/floor.Floor/Load")
        stats: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/floor.Floor/Stats")
        # A first call opens the connection; Stats forgets it.
        await load(PAYLOAD, timeout=30)
        await stats(b"", timeout=30)
        print("ready", flush=True)
        if not await asyncio.to_thread(sys.stdin.readline):
            return
        latencies: list[float] = []
        next_at = time.monotonic()
        end = next_at + duration
        while time.monotonic() < end:
            started = time.monotonic()
            await load(PAYLOAD, timeout=30)
            latencies.append(time.monotonic() - started)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        server = json.loads(await stats(b"", timeout=30))
    print(json.dumps({"server": server, "client": latency_block(latencies)}), flush=True)


# -- the measurement ------------------------------------------------------------


def _child(mode: str, *args: str, stdin: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, mode, *args],
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        text=True,
    )


def _line(proc: subprocess.Popen[str], what: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"floor {what} exited (code {proc.wait(10)}) before answering")
    return line.strip()


async def _service_database(admin_url: str) -> str:
    """A new database with the service's schema (the engine's tables and its own); its URL."""
    import asyncpg

    import common
    from sayiir_grpc.migrate import migrate

    url = await common.create_database(admin_url, "floor_sql")
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return url


async def _drop(admin_url: str, url: str) -> None:
    import common

    await common.drop_database(admin_url, url)


def measure(
    url: str,
    inflight: int = 32,
    warmup: float = 3.0,
    duration: float = 15.0,
    *,
    statements: Mapping[str, int] | None = None,
    transaction: Mapping[str, bool] | None = None,
    transport: str = "unary",
    sql: str = "select",
    probe_duration: float | None = None,
    probe_interval: float = 0.01,
    client_processes: int = 1,
) -> dict[str, Any]:
    """Run the floor server, load client and Load probe as processes: CPU ms per
    workflow of server and client, then Load's server-side latency under the same load.
    `probe_duration` None is bench/fleet.py's probe window, max(3 s, duration / 2); 0 skips it."""
    shape = Shape.make(statements, transaction, transport, sql)
    probe_s = max(3.0, duration / 2) if probe_duration is None else probe_duration
    database: str | None = None
    admin_url = url
    if shape.sql == "service":
        # The engine's tables, fresh: `url` is then the maintenance database.
        url = asyncio.run(_service_database(url))
        database = url.rpartition("/")[2]
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", "--url", url, *shape.args()],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    prober: subprocess.Popen[str] | None = None
    clients: list[subprocess.Popen[str]] = []
    try:
        port = str(int(_line(server, "server")))
        if probe_s > 0:
            prober = _child(
                "probe", "--port", port, "--interval", str(probe_interval), "--duration", str(probe_s), stdin=True
            )
            _line(prober, "probe")
        # `client_processes` load clients (the fleet's worker processes), the
        # workflows in flight shared among them; their windows start together.
        clients = [
            _child(
                "drive",
                "--port",
                port,
                "--inflight",
                str(inflight // client_processes),
                "--warmup",
                str(warmup),
                "--duration",
                str(duration),
                "--server-pid",
                str(server.pid),
                *(["--database", database] if database else []),
                # One channel per process, as a fleet worker has; one process keeps four.
                "--channels",
                str(CHANNELS if client_processes == 1 else 1),
                *shape.args(),
                stdin=True,
            )
            for _ in range(client_processes)
        ]
        windows = [json.loads(_line(client, "client")) for client in clients]
        if any(w["failed"] for w in windows):
            raise RuntimeError(f"floor workflows failed: {[w['failed'] for w in windows]}")
        window = {
            "workflows": sum(w["workflows"] for w in windows),
            "claims": sum(w["claims"] for w in windows),
            "seconds": windows[0]["seconds"],
            "client_cpu_s": sum(w["client_cpu_s"] for w in windows),
            # Each client read the server over its own window; the windows coincide.
            "server_cpu_s": windows[0]["server_cpu_s"],
            "postgres_cpu_s": windows[0]["postgres_cpu_s"],
            "requests_sent": sum(w["requests_sent"] for w in windows),
            "messages_sent": sum(w["messages_sent"] for w in windows),
        }
        probed: dict[str, Any] = {
            "server": {**latency_block([]), "acquire": latency_block([])},
            "client": latency_block([]),
        }
        if prober is not None:
            out, _ = prober.communicate("go\n", timeout=probe_s + 60)
            probed = json.loads(out.strip().splitlines()[-1])
        for client in clients:
            assert client.stdin is not None
            client.stdin.close()
            client.wait(30)
        workflows = max(1, window["workflows"])
        label = "bare grpc.aio + asyncpg, same round trips"
        if shape.sql == "service":
            label += " and the service's statements"
        if shape.transport == "stream":
            label += ", claims and completions on a session stream"
        summary = shape.summary()
        if shape.sql == "service":
            # Claims per workflow as measured (WORKFLOWS_PER_CLAIM, plus the
            # claims that came back empty or short), and the round trips with them.
            claims_per_wf = window["claims"] / workflows
            per_claim = shape.statements["Claim"]
            summary["claims_per_wf"] = round(claims_per_wf, 2)
            summary["round_trips_per_wf"] = round(summary["round_trips_per_wf"] - per_claim * (1 - claims_per_wf), 2)
        return {
            "label": label,
            "wf_per_s": round(window["workflows"] / window["seconds"], 1),
            **summary,
            "server_cpu_ms_per_wf": round(1000 * window["server_cpu_s"] / workflows, 2),
            "client_cpu_ms_per_wf": round(1000 * window["client_cpu_s"] / workflows, 2),
            # The backends of the floor's own database (`--sql service` only).
            "postgres_cpu_ms_per_wf": round(1000 * window["postgres_cpu_s"] / workflows, 2) if database else None,
            # Requests per session message, client to server (`stream` only).
            "session_requests_per_message": (
                round(window["requests_sent"] / window["messages_sent"], 2) if window["messages_sent"] else None
            ),
            "load_calls": probed["server"]["count"],
            "load_p50_ms": probed["server"]["p50_ms"],
            "load_p99_ms": probed["server"]["p99_ms"],
            "load_max_ms": probed["server"]["max_ms"],
            # How much of Load is the wait for its connection (the probe calls one at a time).
            "load_acquire_p50_ms": probed["server"]["acquire"]["p50_ms"],
            "load_acquire_p99_ms": probed["server"]["acquire"]["p99_ms"],
            "load_client_p50_ms": probed["client"]["p50_ms"],
            "load_client_p99_ms": probed["client"]["p99_ms"],
            "probe_window_s": probe_s,
        }
    finally:
        for proc in (prober, *clients):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        server.terminate()
        server.wait(10)
        if database is not None:
            asyncio.run(_drop(admin_url, url))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="measure", choices=["measure", "serve", "drive", "probe"])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--port", type=int)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--database", help="the database whose PostgreSQL backends' CPU the window counts")
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--channels", type=int, default=CHANNELS, help="channels of each load client")
    parser.add_argument("--client-processes", type=int, default=1, help="load clients sharing --inflight")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0, help="the CPU window, or the probe's in probe mode")
    parser.add_argument("--probe-duration", type=float, help="the Load probe's window (default max(3, duration/2))")
    parser.add_argument("--interval", type=float, default=0.01, help="between two Load calls of the probe")
    add_shape_flags(parser)
    args = parser.parse_args()
    shape = Shape.from_args(args)
    _loop()
    if args.mode == "serve":
        asyncio.run(serve(args.url, POOL_SIZE, shape))
    elif args.mode == "drive":
        asyncio.run(
            drive(
                args.port,
                args.inflight,
                args.channels,
                args.warmup,
                args.duration,
                shape,
                args.server_pid,
                args.database,
            )
        )
    elif args.mode == "probe":
        asyncio.run(probe(args.port, args.interval, args.duration))
    else:
        result = measure(
            args.url,
            args.inflight,
            args.warmup,
            args.duration,
            statements=shape.statements,
            transaction=shape.transaction,
            transport=shape.transport,
            sql=shape.sql,
            probe_duration=args.probe_duration,
            probe_interval=args.interval,
            client_processes=args.client_processes,
        )
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

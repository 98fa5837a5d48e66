"""`sayiir-grpc serve --workers N`: N processes on one address behave as one service."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import asyncpg

from sayiir_client import AtTask, GrpcBackend, TaskId, WorkflowSnapshot, connect

STARTED_RE = re.compile(r"process (\d+) of \d+ started \(pid (\d+)\)")


class Service:
    """A `serve --workers N` child process whose output is collected as it comes."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sayiir_grpc", "serve", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={
                **os.environ,
                "SAYIIR_LOG_FORMAT": "json",
                "SAYIIR_LOG_LEVEL": "warning",
                "SAYIIR_METRICS_LISTEN": "127.0.0.1:0",
            },
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60) -> list[re.Match[str]]:
        """The first `count` matches of `pattern` in the output, waiting for them."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [m for m in map(regex.search, self.lines) if m]
                if len(matches) >= count:
                    return matches[:count]
                left = deadline - time.monotonic()
                assert left > 0, f"no {count} x {pattern!r} in:\n{''.join(self.lines)}"
                self._changed.wait(min(left, 0.2))

    @property
    def address(self) -> str:
        return self.wait_for(r"sayiir-grpc listening on (\S+)")[0].group(1)

    @property
    def metrics_port(self) -> int:
        return int(self.wait_for(r"metrics on http://[^:]+:(\d+)/metrics")[0].group(1))

    def process_pids(self) -> dict[int, int]:
        """Process index -> pid of the latest start of each."""
        return {int(m.group(1)): int(m.group(2)) for m in map(STARTED_RE.search, list(self.lines)) if m}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def service(args: list[str], wait_ready: bool = True) -> Iterator[Service]:
    running = Service(args)
    try:
        if wait_ready:
            running.wait_for(r"sayiir-grpc listening on")
        yield running
    finally:
        running.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def established_connections(pid: int, port: int) -> int:
    """TCP connections accepted on `port` that process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def clients_on_every_process(
    stack: AsyncExitStack, running: Service, wanted_per_process: int = 1
) -> list[GrpcBackend]:
    """Open clients (each its own connection) until every process holds some of them."""
    address = running.address
    port = int(address.rpartition(":")[2])
    pids = list(running.process_pids().values())
    clients: list[GrpcBackend] = []
    for _ in range(60):
        clients.append(
            await stack.enter_async_context(connect(address, options=[("grpc.use_local_subchannel_pool", 1)]))
        )
        await clients[-1].list_snapshots()  # the connection is up
        if all(established_connections(pid, port) >= wanted_per_process for pid in pids):
            return clients
    raise AssertionError(f"connections never reached every process {pids}")


def at_task(instance_id: str) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "h", b"1")
    snapshot.update_position(AtTask(TaskId.sha256("t")))
    return snapshot


async def test_processes_share_one_address_and_behave_as_one_service(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    with service(["--workers", "2", "--database-url", url, "--pool-max-connections", "6"]) as running:
        assert len(running.process_pids()) == 2
        running.wait_for(r"2 processes serving; pools of 3 each")
        async with AsyncExitStack() as stack:
            clients = await clients_on_every_process(stack, running)
            # A hint committed through one process reaches the streams of every process.
            await clients[0].save_snapshot(at_task("crossing"))
            hints = await asyncio.gather(*(client.wait_for_wakeup(10) for client in clients))
            assert all(hint is not None and hint.instance_id == "crossing" for hint in hints), hints
            # Claims stay exclusive across the processes.
            for round_ in range(8):
                iid = f"contended-{round_}"
                await clients[round_ % len(clients)].save_snapshot(at_task(iid))
                claims = await asyncio.gather(
                    *(clients[i % len(clients)].claim_task(iid, TaskId.sha256("t"), f"w{i}", 30) for i in range(10))
                )
                assert len([c for c in claims if c is not None]) == 1
            # One metrics endpoint counts the calls of every process.
            samples = scrape(running.metrics_port)
            saves = samples['sayiir_grpc_calls_total{code="OK",method="SaveSnapshot"}']
            claims_made = samples['sayiir_grpc_calls_total{code="OK",method="ClaimTask"}']
            assert (saves, claims_made) == (9, 80)
            assert samples["sayiir_grpc_pool_connections_max"] == 6
            assert samples["sayiir_grpc_wakeup_streams"] == len(clients)


async def test_a_dead_process_is_restarted_and_the_service_keeps_serving(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    with service(["--workers", "2", "--database-url", url, "--pool-max-connections", "4"]) as running:
        address = running.address
        first = running.process_pids()
        os.kill(first[1], signal.SIGKILL)
        running.wait_for(rf"process 1 \(pid {first[1]}\) exited with code -9; restarting it")
        running.wait_for(STARTED_RE.pattern, count=3)
        replaced = running.process_pids()
        assert replaced[1] != first[1] and replaced[2] == first[2] and alive(replaced[1])
        port = int(address.rpartition(":")[2])
        # The replacement serves: new connections land on it too, once it
        # listens ("started" is logged before it has opened its pool).
        async with AsyncExitStack() as stack:
            deadline = time.monotonic() + 20
            attempt = 0
            while established_connections(replaced[1], port) == 0:
                if time.monotonic() > deadline:
                    raise AssertionError("the restarted process never got a connection")
                client = await stack.enter_async_context(
                    connect(address, watch_wakeups=False, options=[("grpc.use_local_subchannel_pool", 1)])
                )
                await client.save_snapshot(at_task(f"after-restart-{attempt}"))
                attempt += 1
                await asyncio.sleep(0.05)
        assert running.proc.poll() is None


async def test_processes_crashing_in_a_loop_stop_the_service_with_status_1(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    with service(["--workers", "2", "--database-url", url, "--pool-max-connections", "4"]) as running:
        for crash in range(3):
            pid = running.process_pids()[2]
            os.kill(pid, signal.SIGKILL)
            if crash < 2:
                running.wait_for(STARTED_RE.pattern, count=3 + crash)
        assert running.proc.wait(30) == 1
        running.wait_for(r"3 crashes in a row, stopping")
        assert not any(alive(pid) for pid in running.process_pids().values())


def test_a_process_that_cannot_start_stops_the_service_with_status_1() -> None:
    with service(
        ["--workers", "2", "--database-url", "postgresql://postgres@127.0.0.1:5432/no_such_db_x"], wait_ready=False
    ) as running:
        assert running.proc.wait(60) == 1
        running.wait_for(r"cannot start")
        assert not any(alive(pid) for pid in running.process_pids().values())


async def test_sigterm_drains_every_process(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    with service(["--workers", "2", "--database-url", url, "--pool-max-connections", "4"]) as running:
        pids = list(running.process_pids().values())
        async with connect(running.address, watch_wakeups=False) as client:
            await client.save_snapshot(at_task("held"))
            pg = await asyncpg.connect(url)
            try:
                # Hold the row: the call below waits on it, in flight when SIGTERM comes.
                locker = pg.transaction()
                await locker.start()
                await pg.execute("SELECT 1 FROM sayiir_workflow_snapshots WHERE instance_id = 'held' FOR UPDATE")
                call = asyncio.create_task(client.save_task_result("held", TaskId.sha256("t"), b'"done"'))
                for _ in range(100):
                    waiting = await pg.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'"
                    )
                    if waiting:
                        break
                    await asyncio.sleep(0.05)
                assert waiting == 1
                running.proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                await asyncio.sleep(1.0)
                assert running.proc.poll() is None  # still draining the held call
                await locker.rollback()
                await asyncio.wait_for(call, 10)  # the in-flight call finished
            finally:
                await pg.close()
        code = await asyncio.to_thread(running.proc.wait, 30)
        assert code == 0
        # Drained, not killed: well within the grace (10 s) after the held call ended.
        assert time.monotonic() - signalled < 8, running.lines
        assert not any("did not stop in time" in line for line in running.lines), running.lines
        assert not any(alive(pid) for pid in pids)

"""`sayiir-grpc serve --workers N`: N server processes behind one address.

One service process runs on one core (the GIL); N processes run on N. They
share nothing but PostgreSQL, exactly as replicas do (docs/scaling.md), so
N processes behave as one service:

- **One address.** The supervisor reserves the listen address with
  SO_REUSEPORT (resolving port 0 once) and every process binds it with
  SO_REUSEPORT too; the kernel spreads connections among them. A service not
  started by this supervisor never shares the address.
- **Pools.** `--pool-max-connections` is the whole service's budget: each
  process gets an equal share (at least 1) plus its one LISTEN connection.
- **Wakeups.** Each process has its own listener on the notification
  channel, so a hint committed through any process reaches the streams of
  every process.
- **Metrics.** Processes write prometheus_client's multiprocess files into a
  private temporary directory; the supervisor alone serves /metrics, summing
  counters and histograms over the processes (gauges as documented on each).
- **Embedded PostgreSQL** (no database URL) is started once, by the caller
  of the supervisor, before any process starts.
- **SIGTERM / SIGINT** drain every process (each stops as a single service
  does, within `--shutdown-grace`); the supervisor exits 0 once all are gone.
- **A process that dies** is restarted after a short pause, and counted in
  `sayiir-grpc process ... exited` lines. A process that dies within
  `CRASH_WINDOW_S` of its start is a crash; `MAX_CRASHES` crashes in a row
  (or any process failing to start at all) mean the service cannot run:
  the supervisor stops the others and exits 1, so a process manager sees the
  failure instead of a service that silently restarts forever.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from sayiir_grpc.config import Settings

CRASH_WINDOW_S = 10.0
MAX_CRASHES = 3
RESTART_PAUSE_S = 0.5
START_TIMEOUT_S = 120.0
# Beyond the drain grace: time for a process to close its pool and exit.
EXIT_MARGIN_S = 10.0


def share_for_one_process(settings: Settings, listen: str, workers: int) -> Settings:
    """The settings each of `workers` processes runs with."""
    pool_max = max(1, settings.pool_max_connections // workers)
    return dataclasses.replace(
        settings,
        workers=1,
        listen=listen,
        pool_max_connections=pool_max,
        pool_min_connections=min(settings.pool_min_connections, pool_max),
        metrics_listen="off",
    )


def reserve_address(listen: str) -> tuple[socket.socket, str]:
    """Bind (without listening) the address with SO_REUSEPORT; returns it with port 0 resolved.

    Holding the socket keeps the port ours while processes come and go, and
    makes a start on a port another program holds fail at once."""
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    family, kind, proto, _, address = socket.getaddrinfo(bare, int(port), type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock, f"{host}:{sock.getsockname()[1]}"


def _process_main(settings: Settings, database_url: str, ready: multiprocessing.connection.Connection) -> None:
    """One supervised server process (spawned: a fresh interpreter, no inherited gRPC state)."""
    import asyncpg

    from sayiir_grpc import migrate
    from sayiir_grpc.app import serve
    from sayiir_grpc.cli import run_event_loop
    from sayiir_grpc.log_setup import configure
    from sayiir_grpc.security import SecurityConfigError

    configure(settings.log_level, settings.log_format)

    def on_ready(port: int) -> None:
        ready.send(port)
        ready.close()

    from sayiir_grpc import offload

    try:
        run_event_loop(serve(settings, database_url, reuse_port=True, on_ready=on_ready))
    except KeyboardInterrupt:
        pass
    except (migrate.MigrationError, OSError, asyncpg.PostgresError, SecurityConfigError) as exc:
        print(f"sayiir-grpc: process {os.getpid()} cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        offload.shutdown()


@dataclass
class Slot:
    index: int
    process: BaseProcess
    started: float
    ready: multiprocessing.connection.Connection


class Supervisor:
    def __init__(self, settings: Settings, database_url: str) -> None:
        self.settings = settings
        self.database_url = database_url
        self.workers = settings.workers
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[Slot] = []
        self._stopping = False
        self._crashes = 0
        self._metrics_dir = ""
        self._child_settings = settings

    def _say(self, text: str) -> None:
        print(f"sayiir-grpc: {text}", flush=True)

    def _spawn(self, index: int) -> Slot:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_process_main,
            args=(self._child_settings, self.database_url, sender),
            name=f"sayiir-grpc-{index}",
        )
        process.start()
        sender.close()
        self._say(f"process {index} of {self.workers} started (pid {process.pid})")
        return Slot(index, process, time.monotonic(), receiver)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        """Start, supervise and finally drain the processes; the exit status of the service."""
        sock, listen = reserve_address(self.settings.listen)
        self._child_settings = share_for_one_process(self.settings, listen, self.workers)
        self._metrics_dir = tempfile.mkdtemp(prefix="sayiir-grpc-metrics-")
        # Read by prometheus_client when each spawned process imports it.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        wake_r, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        old_wakeup_fd = signal.set_wakeup_fd(wake_w.fileno())
        try:
            return self._supervise(listen, wake_r)
        finally:
            self._drain()
            signal.set_wakeup_fd(old_wakeup_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()
            sock.close()
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _supervise(self, listen: str, wake: socket.socket) -> int:
        self._slots = [self._spawn(i) for i in range(1, self.workers + 1)]
        if not self._await_ready(wake):
            return 0 if self._stopping else 1
        self._say(f"{self.workers} processes serving; pools of {self._child_settings.pool_max_connections} each")
        print(f"sayiir-grpc listening on {listen}", flush=True)
        if self.settings.metrics_listen != "off":
            port = self._serve_metrics()
            print(f"metrics on http://{self.settings.metrics_listen.rpartition(':')[0]}:{port}/metrics", flush=True)
        while not self._stopping:
            sentinels = [slot.process.sentinel for slot in self._slots]
            multiprocessing.connection.wait([*sentinels, wake], timeout=1.0)
            self._drain_wakeups(wake)
            for position, slot in enumerate(self._slots):
                if self._stopping or slot.process.is_alive():
                    continue
                if not self._replace(position, slot):
                    return 1
        return 0

    def _await_ready(self, wake: socket.socket) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = {slot.ready: slot for slot in self._slots}
        while pending and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._say(f"processes not ready within {START_TIMEOUT_S:.0f} s; stopping")
                return False
            sentinels = {slot.process.sentinel: slot for slot in pending.values()}
            woken = multiprocessing.connection.wait([*pending, *sentinels, wake], timeout=remaining)
            self._drain_wakeups(wake)
            for item in woken:
                if item in pending:
                    slot = pending.pop(item)
                    try:
                        slot.ready.recv()
                    except EOFError:
                        self._say(f"process {slot.index} failed to start; stopping")
                        return False
                elif item in sentinels:
                    slot = sentinels[item]
                    if slot.ready in pending and not slot.ready.poll():
                        self._say(f"process {slot.index} exited with code {slot.process.exitcode} at start; stopping")
                        return False
        return not self._stopping

    def _replace(self, position: int, slot: Slot) -> bool:
        """Restart a dead process; False when it is crashing in a loop."""
        from prometheus_client import multiprocess

        code = slot.process.exitcode
        lived = time.monotonic() - slot.started
        if slot.process.pid is not None:
            multiprocess.mark_process_dead(slot.process.pid, self._metrics_dir)
        slot.ready.close()
        self._crashes = self._crashes + 1 if lived < CRASH_WINDOW_S else 0
        if self._crashes >= MAX_CRASHES:
            self._say(f"process {slot.index} exited with code {code}; {self._crashes} crashes in a row, stopping")
            return False
        self._say(f"process {slot.index} (pid {slot.process.pid}) exited with code {code}; restarting it")
        time.sleep(RESTART_PAUSE_S)
        self._slots[position] = self._spawn(slot.index)
        return True

    def _serve_metrics(self) -> int:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, self._metrics_dir)
        host, _, port = self.settings.metrics_listen.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host, registry=registry)
        return int(server.server_port)

    @staticmethod
    def _drain_wakeups(wake: socket.socket) -> None:
        wake.setblocking(False)
        try:
            while wake.recv(64):
                pass
        except BlockingIOError:
            pass

    def _drain(self) -> None:
        """SIGTERM every live process, wait for them, kill what outlives the grace."""
        for slot in self._slots:
            if slot.process.is_alive():
                slot.process.terminate()
        deadline = time.monotonic() + self.settings.shutdown_grace + EXIT_MARGIN_S
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                self._say(f"process {slot.index} did not stop in time; killing it")
                slot.process.kill()
                slot.process.join()
            slot.ready.close()


def run(settings: Settings, database_url: str) -> int:
    return Supervisor(settings, database_url).run()

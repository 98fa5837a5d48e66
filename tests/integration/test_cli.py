"""The `sayiir-grpc` command as an operator runs it: a real child process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sayiir_client import WorkflowSnapshot, connect

LISTEN_RE = re.compile(r"sayiir-grpc listening on (\S+)")


@contextmanager
def running_service(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start `sayiir-grpc serve ...`, wait for its listen line, stop it at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sayiir_grpc", "serve", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SAYIIR_LOG_FORMAT": "json", "SAYIIR_METRICS_LISTEN": "127.0.0.1:0", **(env or {})},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        address = None
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = LISTEN_RE.search(line)
            if match:
                address = match.group(1)
                break
        assert address, f"service did not report its address:\n{''.join(lines)}"
        yield address, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_serve_with_a_database_url(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    with running_service(["--database-url", url]) as (address, proc):
        async with connect(address) as client:
            await client.save_snapshot(WorkflowSnapshot.new("cli-1", "h"))
            assert (await client.load_snapshot("cli-1")).instance_id == "cli-1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


@pytest.mark.embedded
async def test_serve_without_a_url_uses_embedded_postgres_that_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    with running_service(["--data-dir", str(data_dir)], env={"SAYIIR_DATABASE_URL": ""}) as (address, proc):
        async with connect(address) as client:
            await client.save_snapshot(WorkflowSnapshot.new("kept", "h"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    with running_service(["--data-dir", str(data_dir)], env={"SAYIIR_DATABASE_URL": ""}) as (address, _):
        async with connect(address) as client:
            assert (await client.load_snapshot("kept")).instance_id == "kept"


def test_invalid_setting_stops_the_start_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sayiir_grpc", "serve"],
        env={**os.environ, "SAYIIR_LISTEN": "not-an-address"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "SAYIIR_LISTEN" in result.stderr


def test_migrate_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sayiir_grpc", "migrate", "--database-url", "postgresql://postgres@127.0.0.1:1/none"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "sayiir-grpc:" in result.stderr


async def test_migrate_command_on_a_fresh_database(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sayiir_grpc", "migrate", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "applied 0001_sayiir_schema" in result.stdout


async def test_healthcheck_command(target: str) -> None:
    ok = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sayiir_grpc", "healthcheck", "--listen", target],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and "SERVING" in ok.stdout
    down = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sayiir_grpc", "healthcheck", "--listen", "127.0.0.1:1", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1


def _refusal(args: list[str], env: dict[str, str] | None = None, timeout: float = 90) -> str:
    """Run a command that must refuse: non-zero exit, one line on stderr, no traceback; returns the line."""
    result = subprocess.run(
        [sys.executable, "-m", "sayiir_grpc", *args],
        env={**os.environ, "SAYIIR_LOG_FORMAT": "json", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


async def test_a_second_service_on_an_address_in_use_fails_naming_it(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    first_url, second_url = await make_database(), await make_database()
    with running_service(["--database-url", first_url]) as (address, _proc):
        line = await asyncio.to_thread(
            _refusal, ["serve", "--listen", address, "--database-url", second_url, "--metrics-listen", "off"]
        )
        assert address in line and "SAYIIR_LISTEN" in line and "in use" in line
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        metrics = f"127.0.0.1:{busy.getsockname()[1]}"
        line = await asyncio.to_thread(
            _refusal, ["serve", "--listen", "127.0.0.1:0", "--database-url", second_url, "--metrics-listen", metrics]
        )
    assert metrics in line and "SAYIIR_METRICS_LISTEN" in line and "in use" in line


def test_check_never_prints_the_password() -> None:
    line = _refusal(["check", "--database-url", "postgresql://someone:Secret-Pass-42@127.0.0.1:1/nowhere"])
    assert "Secret-Pass-42" not in line and "***" in line


async def test_migrate_on_the_data_dir_of_a_running_service_is_one_line(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "pgdata")
    with running_service(["--data-dir", data_dir], env={"SAYIIR_DATABASE_URL": ""}, timeout=120):
        line = await asyncio.to_thread(_refusal, ["migrate", "--data-dir", data_dir])
    assert line.startswith("sayiir-grpc: ")

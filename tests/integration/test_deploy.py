"""The Dockerfile's command lines, run as the container would run them (no Docker engine needed).

The final stage's ENTRYPOINT + CMD is started with the stage's ENV and a fresh
database in SAYIIR_DATABASE_URL, 0.0.0.0 and the image's ports replaced by
127.0.0.1 and free ports; then the HEALTHCHECK command line must succeed and
/metrics must serve what the Grafana dashboard plots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from fixtures.dockerfile import Dockerfile

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PORTS = (50051, 9464)  # gRPC, metrics
LISTEN_RE = re.compile(r"sayiir-grpc listening on (\S+)")
METRIC_NAME = re.compile(r"\bsayiir_grpc_[a-z0-9_]+\b")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _localiser(ports: dict[int, int]) -> Callable[[str], str]:
    """0.0.0.0 -> 127.0.0.1 and each image port -> its free port, in one string."""
    pattern = re.compile(r":(\d+)\b")

    def local(text: str) -> str:
        text = text.replace("0.0.0.0", "127.0.0.1")
        return pattern.sub(lambda m: f":{ports.get(int(m.group(1)), int(m.group(1)))}", text)

    return local


def _resolve(argv: list[str], path: str) -> list[str]:
    found = shutil.which(argv[0], path=path)
    assert found, f"{argv[0]} not found on {path}"
    return [found, *argv[1:]]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


async def test_the_dockerfile_command_serves_and_passes_its_healthcheck(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    dockerfile = Dockerfile.read(ROOT / "Dockerfile")
    assert sorted(dockerfile.exposed_ports()) == sorted(IMAGE_PORTS)
    ports = {port: _free_port() for port in IMAGE_PORTS}
    grpc_port, metrics_port = ports[IMAGE_PORTS[0]], ports[IMAGE_PORTS[1]]
    local = _localiser(ports)

    # The container's environment: the image's ENV plus the database URL the
    # deployment provides; none of this machine's SAYIIR_* settings.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAYIIR_")}
    env.update({key: local(value) for key, value in dockerfile.env().items()})
    env["SAYIIR_DATABASE_URL"] = await make_database()
    env["PATH"] = path

    command = _resolve([local(arg) for arg in dockerfile.command_line()], path)
    healthcheck = dockerfile.healthcheck()
    assert healthcheck is not None
    check_command = _resolve([local(arg) for arg in healthcheck.command], path)

    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None

        async def listen_line() -> str:
            assert proc.stdout is not None
            while line := (await proc.stdout.readline()).decode():
                output.append(line)
                if match := LISTEN_RE.search(line):
                    return match.group(1)
            raise AssertionError("the service exited before listening:\n" + "".join(output))

        address = await asyncio.wait_for(listen_line(), 60)
        assert address == f"127.0.0.1:{grpc_port}", "".join(output)

        # Keep draining the service's output so it never blocks on a full pipe.
        async def drain() -> None:
            assert proc.stdout is not None
            while line := (await proc.stdout.readline()).decode():
                output.append(line)

        drainer = asyncio.create_task(drain())

        check = await asyncio.create_subprocess_exec(
            *check_command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        check_out, _ = await asyncio.wait_for(check.communicate(), 30)
        assert check.returncode == 0, check_out.decode()
        assert "SERVING" in check_out.decode()

        status, metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "sayiir-grpc.json").read_text())
        plotted = {
            name
            for panel in dashboard["panels"]
            for target in panel.get("targets", [])
            for name in METRIC_NAME.findall(target["expr"])
        }
        assert plotted
        # A histogram's _bucket series appears after its first observation;
        # its family's HELP line is there from the start.
        missing = {name for name in plotted if name.removesuffix("_bucket") not in metrics}
        assert not missing, f"/metrics lacks {sorted(missing)}"

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, "".join(output)
        await asyncio.wait_for(drainer, 10)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

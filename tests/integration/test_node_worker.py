"""The Node.js example worker (examples/node-worker) against the service.

Workflows are submitted with the Python client and run by the Node worker,
alone or in one fleet with Python workers. A workflow is a linear list of
named steps: task ids are sha256(step name), the definition hash is
sha256(workflow name), and `WORKFLOWS` mirrors the Node worker's registry
(a test checks the two agree).

The worker runs on the TypeScript client package (client/typescript), which
is installed and built first; then `npm ci` installs the example from its
committed package-lock.json, once per run. Node.js 20+ and npm must be
installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import start_service
from integration.node_package import install_client, node_and_npm, npm_run
from sayiir_client import (
    AtTask,
    Cancelled,
    Completed,
    DefinitionHash,
    Failed,
    GrpcBackend,
    SignalKind,
    SignalRequest,
    TaskId,
    WorkflowSnapshot,
    connect,
)
from sayiir_grpc.app import RunningServer

NODE_DIR = Path(__file__).resolve().parents[2] / "examples" / "node-worker"

# The Node registry's workflows (examples/node-worker/src/registry.mjs).
WORKFLOWS: dict[str, list[str]] = {
    "arith-v1": ["add-one", "double", "square"],
    "greet-v1": ["trim", "capitalize", "greet"],
    "fleet-v1": ["fleet-1", "fleet-2", "fleet-3", "fleet-4"],
    "nap-v1": ["nap", "after-nap"],
    "broken-v1": ["add-one", "explode", "double"],
}


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# -- the Node worker, as a subprocess -------------------------------------------


@pytest.fixture(scope="session")
def node_worker_dir() -> Path:
    """examples/node-worker with its dependencies installed: the built client package, then npm ci."""
    tools = node_and_npm()
    if isinstance(tools, str):
        pytest.fail(f"{tools} by tests/integration/test_node_worker.py", pytrace=False)
    _, npm = tools
    install_client(npm, build=True)
    npm_run(npm, NODE_DIR, "ci", "--no-audit", "--no-fund", "--loglevel=error")
    return NODE_DIR


class NodeWorker:
    """One `node src/main.mjs` process; its stdout events are collected."""

    def __init__(self, process: asyncio.subprocess.Process, worker_id: str) -> None:
        self.process = process
        self.worker_id = worker_id
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._changed = asyncio.Event()
        self._readers = [asyncio.create_task(self._read_events()), asyncio.create_task(self._read_stderr())]

    async def _read_events(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode().strip()
            if line:
                try:
                    self.events.append(json.loads(line))
                except json.JSONDecodeError:
                    self.events.append({"event": "non-json", "line": line})
                self._changed.set()
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.stderr.append(raw.decode().rstrip())

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    def describe(self) -> str:
        return f"{self.worker_id} events: {self.events[-20:]}\nstderr: {self.stderr[-20:]}"

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.returncode is not None:
                raise AssertionError(f"event not seen within {timeout} s; {self.describe()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    async def stop(self) -> int:
        """SIGTERM (a graceful stop), then SIGKILL if it hangs; the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for reader in self._readers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, 5)
        assert self.process.returncode is not None
        return self.process.returncode


@contextlib.asynccontextmanager
async def node_worker(
    node_dir: Path, target: str, worker_id: str, *options: str, env: dict[str, str] | None = None
) -> AsyncIterator[NodeWorker]:
    node = shutil.which("node")
    assert node is not None
    process = await asyncio.create_subprocess_exec(
        node,
        "src/main.mjs",
        "--target",
        target,
        "--worker-id",
        worker_id,
        "--poll-ms",
        "500",
        *options,
        cwd=node_dir,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    worker = NodeWorker(process, worker_id)
    try:
        await worker.wait_for(lambda e: e["event"] == "ready", 20)
        yield worker
    finally:
        code = await worker.stop()
    assert code == 0, f"the Node worker exited with {code}; {worker.describe()}"
    assert worker.of("stopped"), worker.describe()


# -- workflows -------------------------------------------------------------------


@pytest.fixture
def service_target(isolated_service: tuple[RunningServer, str]) -> str:
    """The module's own service (its database is emptied by `clean_backend`)."""
    return f"127.0.0.1:{isolated_service[0].port}"


async def submit(backend: GrpcBackend, instance_id: str, workflow: str, value: object) -> None:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, DefinitionHash.sha256(workflow), _json(value))
    snapshot.update_position(AtTask(TaskId.sha256(WORKFLOWS[workflow][0])))
    await backend.save_snapshot(snapshot)


async def wait_finished(backend: GrpcBackend, instance_ids: list[str], timeout: float) -> dict[str, WorkflowSnapshot]:
    """Each instance's snapshot once all of them are terminal (one listing per poll)."""
    deadline = time.monotonic() + timeout
    wanted = set(instance_ids)
    while True:
        running, _ = await backend.list_snapshots_page(None, 1000, ["InProgress", "Paused"])
        pending = wanted.intersection(running)
        if not pending:
            return {instance_id: await backend.load_snapshot(instance_id) for instance_id in instance_ids}
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} workflows unfinished after {timeout} s: {sorted(pending)[:5]}")
        await asyncio.sleep(0.1)


async def claim_count(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM sayiir_workflow_claims"))


def run_fleet_step(step: str, state: dict[str, Any]) -> dict[str, Any]:
    """The Python twin of the Node registry's fleet-N steps."""
    k = int(step.rpartition("-")[2])
    return {"n": state["n"] * 2 + k, "trail": [*state["trail"], step], "work_ms": state["work_ms"]}


def expected_fleet_output(n: int, work_ms: int) -> dict[str, Any]:
    state: dict[str, Any] = {"n": n, "trail": [], "work_ms": work_ms}
    for step in WORKFLOWS["fleet-v1"]:
        state = run_fleet_step(step, state)
    return state


# -- tests -----------------------------------------------------------------------


def test_python_mirror_matches_the_node_registry(node_worker_dir: Path) -> None:
    node = shutil.which("node")
    assert node is not None
    listed = subprocess.run(
        [node, "src/main.mjs", "--list"], cwd=node_worker_dir, capture_output=True, text=True, timeout=30, check=True
    )
    assert json.loads(listed.stdout) == {"workflows": WORKFLOWS}


async def test_node_worker_completes_workflows_submitted_from_python(
    node_worker_dir: Path, service_target: str, clean_backend: GrpcBackend, clean_pg: asyncpg.Connection
) -> None:
    backend = clean_backend
    # Some workflows wait before the worker starts (found by polling), the
    # rest are submitted while it runs (found through wakeups).
    arith = {f"arith-{x}": x for x in range(8)}
    for instance_id, x in list(arith.items())[:4]:
        await submit(backend, instance_id, "arith-v1", x)
    async with node_worker(node_worker_dir, service_target, "node-solo") as worker:
        for instance_id, x in list(arith.items())[4:]:
            await submit(backend, instance_id, "arith-v1", x)
        greet = {"greet-ada": "  ada ", "greet-grace": "grace"}
        for instance_id, text in greet.items():
            await submit(backend, instance_id, "greet-v1", text)
        await submit(backend, "broken-1", "broken-v1", 5)
        finished = await wait_finished(backend, [*arith, *greet, "broken-1"], timeout=30)

        for instance_id, x in arith.items():
            state = finished[instance_id].state
            assert isinstance(state, Completed), (instance_id, state, worker.describe())
            assert json.loads(state.final_output) == ((x + 1) * 2) ** 2
            # Every step's output is stored, as a Python worker would store it.
            outputs = [await backend.load_task_result(instance_id, TaskId.sha256(s)) for s in WORKFLOWS["arith-v1"]]
            assert [json.loads(o or b"null") for o in outputs] == [x + 1, (x + 1) * 2, ((x + 1) * 2) ** 2]
        assert {i: json.loads(finished[i].final_output_bytes() or b"") for i in greet} == {
            "greet-ada": "Hello, Ada!",
            "greet-grace": "Hello, Grace!",
        }
        broken = finished["broken-1"].state
        assert isinstance(broken, Failed)
        assert broken.error == "explode: exploded on 6"

        # Each step ran exactly once, and no claim is left behind.
        started = Counter((e["instance"], e["step"]) for e in worker.of("started"))
        assert set(started.values()) == {1}
        assert len(started) == len(arith) * 3 + len(greet) * 3 + 2
        assert await claim_count(clean_pg) == 0
        assert not worker.of("error") and not worker.of("claim-lost"), worker.describe()

        # Continue where you are: a lone worker is handed each workflow's
        # next step by completeTask, so only first steps come from the long poll.
        continued = {(e["instance"], e["step"]): e["continued"] for e in worker.of("claimed")}
        for instance_id in arith:
            steps = WORKFLOWS["arith-v1"]
            assert [continued[(instance_id, step)] for step in steps] == [False, True, True], worker.describe()


async def python_worker(target: str, worker_id: str, stop: asyncio.Event, ran: list[tuple[str, str, str]]) -> None:
    """The README's Python worker loop, for fleet-v1 workflows."""
    fleet = DefinitionHash.sha256("fleet-v1")
    steps = WORKFLOWS["fleet-v1"]
    by_id = {TaskId.sha256(name): index for index, name in enumerate(steps)}
    async with connect(target) as backend:
        await backend.start_wakeups()
        while not stop.is_set():
            await backend.wait_for_wakeup(timeout=0.2)
            for task in await backend.find_available_tasks(worker_id, limit=4):
                if task.workflow_definition_hash != fleet or task.task_id not in by_id:
                    continue
                claim = await backend.claim_task(task.instance_id, task.task_id, worker_id, ttl=30)
                if claim is None:
                    continue
                index = by_id[task.task_id]
                ran.append((task.instance_id, steps[index], worker_id))
                state = json.loads(task.input or b"null")
                await asyncio.sleep(state["work_ms"] / 1000)
                output = _json(run_fleet_step(steps[index], state))
                await backend.save_task_result(task.instance_id, task.task_id, output)
                snapshot = await backend.load_snapshot(task.instance_id)
                if index + 1 < len(steps):
                    snapshot.update_position(AtTask(TaskId.sha256(steps[index + 1])))
                else:
                    snapshot.mark_completed(output)
                assert await backend.save_snapshot_fenced(snapshot, task.task_id, worker_id)
                await backend.release_task_claim(task.instance_id, task.task_id, worker_id)


async def test_mixed_fleet_runs_each_of_200_tasks_exactly_once(
    node_worker_dir: Path, service_target: str, clean_backend: GrpcBackend, clean_pg: asyncpg.Connection
) -> None:
    backend = clean_backend
    work_ms = 15
    instances = {f"fleet-{i:03d}": i for i in range(50)}  # 50 workflows x 4 steps
    stop = asyncio.Event()
    ran: list[tuple[str, str, str]] = []
    async with (
        node_worker(node_worker_dir, service_target, "node-a", "--concurrency", "3") as node_a,
        node_worker(node_worker_dir, service_target, "node-b", "--concurrency", "3") as node_b,
    ):
        python_workers = [asyncio.create_task(python_worker(service_target, f"py-{i}", stop, ran)) for i in range(2)]
        try:
            for instance_id, n in instances.items():
                await submit(backend, instance_id, "fleet-v1", {"n": n, "trail": [], "work_ms": work_ms})
            finished = await wait_finished(backend, list(instances), timeout=60)
        finally:
            stop.set()
            await asyncio.gather(*python_workers)

    for instance_id, n in instances.items():
        output = finished[instance_id].final_output_bytes()
        assert output is not None, (instance_id, finished[instance_id].state)
        assert json.loads(output) == expected_fleet_output(n, work_ms)

    runs = ran + [(e["instance"], e["step"], e["worker"]) for w in (node_a, node_b) for e in w.of("started")]
    per_task = Counter((instance_id, step) for instance_id, step, _ in runs)
    expected_tasks = {(i, step) for i in instances for step in WORKFLOWS["fleet-v1"]}
    assert set(per_task) == expected_tasks
    assert len(runs) == 200, [task for task, count in per_task.items() if count > 1]
    per_worker = Counter(worker for _, _, worker in runs)
    assert per_worker["py-0"] + per_worker["py-1"] > 0, per_worker
    assert per_worker["node-a"] + per_worker["node-b"] > 0, per_worker
    assert await claim_count(clean_pg) == 0
    for worker in (node_a, node_b):
        assert not worker.of("error") and not worker.of("claim-lost"), worker.describe()


async def test_cancel_from_python_stops_a_workflow_the_node_worker_runs(
    node_worker_dir: Path, service_target: str, clean_backend: GrpcBackend, clean_pg: asyncpg.Connection
) -> None:
    backend = clean_backend
    async with node_worker(node_worker_dir, service_target, "node-cancel", "--signal-poll-ms", "100") as worker:
        await submit(backend, "napping", "nap-v1", {"ms": 30_000})
        await worker.wait_for(lambda e: e["event"] == "started" and e["instance"] == "napping", 15)

        began = time.monotonic()
        await backend.store_signal("napping", SignalKind.Cancel, SignalRequest("no time to rest", "pytest"))
        snapshot = (await wait_finished(backend, ["napping"], timeout=10))["napping"]
        assert time.monotonic() - began < 5  # the 30 s task was interrupted, not awaited

        state = snapshot.state
        assert isinstance(state, Cancelled), state
        assert (state.reason, state.cancelled_by) == ("no time to rest", "pytest")
        assert state.interrupted_at_task == TaskId.sha256("nap")
        await worker.wait_for(lambda e: e["event"] == "cancelled" and e["instance"] == "napping", 5)
        assert await backend.get_signal("napping", SignalKind.Cancel) is None
        assert [e["step"] for e in worker.of("started") if e["instance"] == "napping"] == ["nap"]

        # The worker carries on with other workflows.
        await submit(backend, "after-cancel", "arith-v1", 1)
        done = await wait_finished(backend, ["after-cancel"], timeout=15)
        assert json.loads(done["after-cancel"].final_output_bytes() or b"") == 16
        assert await claim_count(clean_pg) == 0


@pytest.fixture
def server_pki(tmp_path: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1."""
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for args in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
         "-subj", "/CN=node-worker-test-ca"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=server"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.pem", "-days", "1", "-extfile", "san.ext"],
    ):  # fmt: skip
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    return tmp_path


async def test_node_worker_with_tls_and_a_bearer_token(
    node_worker_dir: Path, make_database: Callable[[], Awaitable[str]], server_pki: Path
) -> None:
    """The worker against a service that requires TLS and a token (docs/security.md)."""
    token = "node-worker-token-0123456789"
    running = await start_service(
        await make_database(),
        tls_cert_file=str(server_pki / "server.pem"),
        tls_key_file=str(server_pki / "server.key"),
        auth_tokens=token,
    )
    target = f"127.0.0.1:{running.port}"
    ca = (server_pki / "ca.pem").read_bytes()
    try:
        async with connect(target, root_certificates=ca, token=token) as backend:
            await submit(backend, "secure-1", "arith-v1", 2)
            async with node_worker(
                node_worker_dir, target, "node-tls", "--tls-ca", str(server_pki / "ca.pem"), env={"SAYIIR_TOKEN": token}
            ) as worker:
                done = await wait_finished(backend, ["secure-1"], timeout=15)
                assert json.loads(done["secure-1"].final_output_bytes() or b"") == 36, worker.describe()
    finally:
        await running.stop(grace=1)

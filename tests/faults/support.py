"""What the fault tests share: a bounded worker load that keeps a ledger of
every acknowledged write, the verification of that ledger against the
database, and the figures each test records.

The load: each worker drives workflows of its own through the worker cycle
(save the position, claim the task, save its result, release the claim,
now and then load it back), `STEPS` tasks each, then completes them. A call
that fails with UNAVAILABLE is repeated until it is acknowledged (bounded by
a deadline), so at the end the database must hold exactly what the ledger
says; any other error, and any answer that contradicts the ledger, is
recorded as unexpected and fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc

from sayiir_client import AtTask, GrpcBackend, TaskId, WorkflowSnapshot
from sayiir_common.codec import JsonCodec
from sayiir_common.errors import BackendError, NotFoundError, UnavailableError
from sayiir_grpc.invariants import check_invariants
from sayiir_grpc.stores.history import blob_hash, encode_stripped

T = TypeVar("T")

STEPS = 4
TASKS = [TaskId.sha256(f"fault-step-{k}") for k in range(STEPS)]
DEFINITION = "fault-load-v1"
# An operation still refused after this long means the service did not recover.
RECOVERY_DEADLINE_S = 45.0
RESULTS_DIR = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Runs in a child process of its own: see ExternalPostgres.
_CONTROLLER = """
import sys
from pathlib import Path
from sayiir_grpc.embedded import EmbeddedPostgres

postgres = EmbeddedPostgres(Path(sys.argv[1]), port=int(sys.argv[2]))
try:
    for line in sys.stdin:
        command = line.strip()
        try:
            if command == "start":
                print("ok " + postgres.start(), flush=True)
            elif command == "stop":
                postgres.stop()
                print("ok stopped", flush=True)
            else:
                break
        except Exception as exc:
            print("error " + " ".join(str(exc).split()), flush=True)
finally:
    postgres.stop()
"""


class ExternalPostgres:
    """An `EmbeddedPostgres` driven from a helper process, on a fixed port.

    Not started from the test process itself: once gRPC runs in a process,
    the fork `EmbeddedPostgres` makes to start postgres under another user
    (a plain fork, since it changes uid) runs gRPC core's fork handlers in
    the child, which then dies with SIGSEGV about one start in three
    (reproduced with the service in-process; none with
    GRPC_ENABLE_FORK_SUPPORT=0). The helper has no gRPC, and starting it
    needs no uid change, so it is spawned without running those handlers.
    Closing its stdin (also when this process dies) stops the server.
    """

    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _CONTROLLER, str(data_dir), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _command(self, command: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if not answer.startswith("ok "):
            raise RuntimeError(f"embedded PostgreSQL {command} failed: {answer or 'controller exited'}")
        return answer[3:]

    async def start(self) -> str:
        return await asyncio.to_thread(self._command, "start")

    async def stop(self) -> None:
        await asyncio.to_thread(self._command, "stop")

    def close(self) -> None:
        """Stop the server and the helper (idempotent)."""
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            try:
                self._proc.wait(60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class WrongAnswer(AssertionError):
    """A call succeeded with an answer the ledger rules out."""


@dataclass
class Figures:
    """Counts of one test run, printed and written to bench/results/reliability/."""

    calls: int = 0
    succeeded: int = 0
    unavailable: int = 0
    not_found_on_repeat: int = 0
    faults_injected: int = 0
    acknowledged_writes: int = 0
    acknowledged_writes_checked: int = 0
    writes_lost: int = 0
    instances: int = 0
    unexpected: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self, name: str) -> None:
        data = asdict(self)
        data["unexpected"] = data["unexpected"][:20]
        record_figures(name, data)


def record_figures(name: str, data: dict[str, Any]) -> None:
    """Print a test's figures (visible with -s) and keep them for docs/reliability.md."""
    print(f"\n[reliability] {name}: {json.dumps(data, sort_keys=True)}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@dataclass
class Record:
    """The ledger of one instance: what the service acknowledged."""

    snapshot: WorkflowSnapshot
    saved_blob_hashes: list[bytes] = field(default_factory=list)
    results: dict[TaskId, bytes] = field(default_factory=dict)
    claims: int = 0
    releases: int = 0
    writes: int = 0


class Ledger:
    def __init__(self) -> None:
        self.records: dict[str, Record] = {}

    def writes(self) -> int:
        return sum(r.writes for r in self.records.values())


def is_unavailable(exc: BackendError) -> bool:
    """UNAVAILABLE, whichever class the client chose for it.

    The service names a database outage `UNAVAILABLE` with the error kind
    "Backend" (the Rust variant, as the protos document), and the client
    picks the class by kind first, so it raises a plain `BackendError` whose
    code is UNAVAILABLE rather than an `UnavailableError`.
    """
    return isinstance(exc, UnavailableError) or exc.code == grpc.StatusCode.UNAVAILABLE


def without_client_retries(client: GrpcBackend) -> GrpcBackend:
    """Let every UNAVAILABLE reach the load, which counts and repeats it itself."""
    if hasattr(client, "retry_delays"):
        client.retry_delays = ()
    return client


async def acknowledged(
    figures: Figures,
    what: str,
    call: Callable[[], Awaitable[T]],
    *,
    not_found_means_done: bool = False,
) -> T | None:
    """Repeat `call` on UNAVAILABLE until it succeeds; record anything else."""
    deadline = time.monotonic() + RECOVERY_DEADLINE_S
    attempt = 0
    while True:
        figures.calls += 1
        try:
            result = await call()
        except BackendError as exc:
            if not is_unavailable(exc):
                if not_found_means_done and attempt > 0 and isinstance(exc, NotFoundError):
                    # A repeated release whose first attempt went through.
                    figures.not_found_on_repeat += 1
                    figures.succeeded += 1
                    return None
                figures.unexpected.append(f"{what}: {type(exc).__name__} {exc.code}: {exc.message[:200]}")
                raise
            figures.unavailable += 1
            if time.monotonic() > deadline:
                figures.unexpected.append(f"{what}: still UNAVAILABLE after {RECOVERY_DEADLINE_S} s")
                raise
            attempt += 1
            await asyncio.sleep(min(0.02 * attempt, 0.5))
            continue
        figures.succeeded += 1
        return result


def expected_blob_hash(snapshot: WorkflowSnapshot) -> bytes:
    blob, _ = encode_stripped(JsonCodec(), snapshot)
    return blob_hash(blob)


async def drive_workflow(
    client: GrpcBackend, figures: Figures, ledger: Ledger, instance_id: str, worker_id: str
) -> None:
    """One workflow through the whole worker cycle, every write recorded once acknowledged."""
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, DEFINITION, b'"input"')
    record = ledger.records[instance_id] = Record(snapshot)
    figures.instances += 1

    async def save() -> None:
        await acknowledged(figures, f"save {instance_id}", lambda: client.save_snapshot(snapshot))
        record.saved_blob_hashes.append(expected_blob_hash(snapshot))
        record.writes += 1

    for step, task in enumerate(TASKS):
        snapshot.update_position(AtTask(task))
        await save()
        claim = await acknowledged(
            figures, f"claim {instance_id}", lambda task=task: client.claim_task(instance_id, task, worker_id, 60)
        )
        if claim is None or claim.worker_id != worker_id or claim.task_id != task:
            raise WrongAnswer(f"{instance_id}: the only worker was refused its claim on step {step}: {claim}")
        record.claims += 1
        record.writes += 1
        output = json.dumps({"instance": instance_id, "step": step}).encode()
        await acknowledged(
            figures,
            f"result {instance_id}",
            lambda task=task, output=output: client.save_task_result(instance_id, task, output),
        )
        snapshot.mark_task_completed(task, output)
        record.results[task] = output
        record.writes += 1
        await acknowledged(
            figures,
            f"release {instance_id}",
            lambda task=task: client.release_task_claim(instance_id, task, worker_id),
            not_found_means_done=True,
        )
        record.releases += 1
        record.writes += 1
        if step % 2 == 1:
            loaded = await acknowledged(figures, f"load {instance_id}", lambda: client.load_snapshot(instance_id))
            assert loaded is not None
            if loaded.state != snapshot.state:
                raise WrongAnswer(f"{instance_id}: loaded {loaded.state} after step {step}, expected {snapshot.state}")
    snapshot.mark_completed(record.results[TASKS[-1]])
    await save()


async def worker(client: GrpcBackend, figures: Figures, ledger: Ledger, number: int, stop: asyncio.Event) -> None:
    """Run workflows one after another until `stop` is set (the current one is finished)."""
    sequence = 0
    while not stop.is_set():
        instance_id = f"load-{number}-{sequence}-{os.urandom(3).hex()}"
        sequence += 1
        try:
            await drive_workflow(client, figures, ledger, instance_id, f"worker-{number}")
        except WrongAnswer as exc:
            figures.unexpected.append(str(exc))
            return
        except BackendError:
            return  # already recorded as unexpected


async def run_load(
    clients: list[GrpcBackend], figures: Figures, ledger: Ledger, seconds: float, faults: Callable[[], Awaitable[None]]
) -> None:
    """`len(clients)` workers for `seconds`, with `faults()` running alongside."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker(c, figures, ledger, i, stop)) for i, c in enumerate(clients)]
    try:
        fault_task = asyncio.create_task(faults())
        await asyncio.sleep(seconds)
        await fault_task
    finally:
        stop.set()
        # Each worker finishes its current workflow; bounded by the recovery deadline.
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), RECOVERY_DEADLINE_S + 30)
    figures.acknowledged_writes = ledger.writes()


async def verify(url: str, ledger: Ledger, figures: Figures) -> list[str]:
    """Every acknowledged write is in the database; the invariant checker is green.

    For each instance: every acknowledged save's blob is among its history
    rows (by hash: the service stores exactly that blob); every acknowledged
    task result is its stored output; the current snapshot's state is the
    last acknowledged one; no claim is left (every release was acknowledged).
    Returns the problems found (empty when none).
    """
    lost: list[str] = []
    problems: list[str] = []
    checked = 0
    conn = await asyncpg.connect(url)
    try:
        for instance_id, record in ledger.records.items():
            hashes = {
                bytes(r["data_hash"])
                for r in await conn.fetch(
                    "SELECT data_hash FROM sayiir_workflow_snapshot_history WHERE instance_id = $1", instance_id
                )
            }
            for index, expected in enumerate(record.saved_blob_hashes):
                checked += 1
                if expected not in hashes:
                    lost.append(f"{instance_id}: acknowledged save #{index} is not in the history")
            outputs = {
                TaskId(bytes(r["task_id"])): bytes(r["output"])
                for r in await conn.fetch(
                    "SELECT task_id, output FROM sayiir_workflow_tasks "
                    "WHERE instance_id = $1 AND status = 'completed' AND output IS NOT NULL",
                    instance_id,
                )
            }
            for task, output in record.results.items():
                checked += 1
                if outputs.get(task) != output:
                    lost.append(f"{instance_id}: acknowledged result of {task.to_hex()[:8]} is {outputs.get(task)!r}")
            row = await conn.fetchrow(
                "SELECT s.status, h.data FROM sayiir_workflow_snapshots s JOIN sayiir_workflow_snapshot_history h "
                "ON h.instance_id = s.instance_id AND h.version = s.history_version WHERE s.instance_id = $1",
                instance_id,
            )
            if row is None:
                lost.append(f"{instance_id}: no current snapshot")
                continue
            current = JsonCodec().decode(bytes(row["data"]))
            current.hydrate_task_outputs(outputs.items())
            if current.state != record.snapshot.state:
                lost.append(f"{instance_id}: current state {current.state} != acknowledged {record.snapshot.state}")
            checked += record.claims + record.releases
        left = await conn.fetchval(
            "SELECT count(*) FROM sayiir_workflow_claims WHERE instance_id = ANY($1::text[])", list(ledger.records)
        )
        if left:
            problems.append(f"{left} claim(s) left although every release was acknowledged")
        violations = await check_invariants(conn)
        problems.extend(f"invariant: {v}" for v in violations)
    finally:
        await conn.close()
    figures.acknowledged_writes_checked = checked
    figures.writes_lost = len(lost)
    return lost + problems

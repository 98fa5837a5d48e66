"""The WorkflowOperator service through its Python client (and raw gRPC for bad input)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from conftest import start_service
from fixtures.operator_seed import APPROVAL, STEP0, STEP0_OUTPUT, STEP1, STEP2, empty_tables, seed
from sayiir_client import (
    ActionResult,
    AtSignal,
    AtTask,
    DefinitionHash,
    GrpcBackend,
    NotFoundError,
    OperatorClient,
    TaskId,
    WorkflowAction,
    WorkflowFilter,
    WorkflowSnapshot,
    connect,
    connect_operator,
)
from sayiir_common.proto.sayiir.v1 import operator_pb2 as op_pb
from sayiir_common.proto.sayiir.v1 import operator_pb2_grpc as op_grpc
from sayiir_grpc.app import RunningServer
from sayiir_grpc.security import SecurityConfigError, load_tokens


@pytest.fixture(scope="module")
async def operator_service(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[tuple[RunningServer, str]]:
    url = await make_database()
    running = await start_service(url)
    yield running, url
    await running.stop(grace=1)


@pytest.fixture
async def seeded(operator_service: tuple[RunningServer, str]) -> AsyncIterator[tuple[GrpcBackend, OperatorClient]]:
    """Both clients, on tables holding exactly the seeded workflows."""
    running, url = operator_service
    await empty_tables(url)
    target = f"127.0.0.1:{running.port}"
    async with connect(target, watch_wakeups=False) as backend, connect_operator(target) as ops:
        await seed(backend)
        yield backend, ops


@pytest.fixture
async def db(operator_service: tuple[RunningServer, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(operator_service[1])
    yield conn
    await conn.close()


async def ids(ops: OperatorClient, where: WorkflowFilter | None = None) -> list[str]:
    return [w.instance_id async for w in ops.iter_workflows(where)]


async def test_list_filters(seeded: tuple[GrpcBackend, OperatorClient], db: asyncpg.Connection) -> None:
    _, ops = seeded
    assert await ids(ops) == ["op-a-01", "op-a-02", "op-b-01", "op-b-02", "op-c-01", "op-c-02"]
    assert await ids(ops, WorkflowFilter(statuses=("in_progress",))) == ["op-a-01", "op-a-02", "op-c-02"]
    assert await ids(ops, WorkflowFilter(statuses=("FAILED", "Completed"))) == ["op-b-01", "op-b-02"]
    assert await ids(ops, WorkflowFilter(definition_hash=DefinitionHash.sha256("def-c"))) == ["op-c-01", "op-c-02"]
    assert await ids(ops, WorkflowFilter(current_task_id=STEP1)) == ["op-a-01", "op-a-02"]
    assert await ids(ops, WorkflowFilter(tag="gpu")) == ["op-a-01"]
    assert await ids(ops, WorkflowFilter(error_contains="timeout")) == ["op-b-01"]
    # A literal match: LIKE wildcards in the text match nothing special.
    assert await ids(ops, WorkflowFilter(error_contains="%")) == []
    now = datetime.now(UTC)
    assert len(await ids(ops, WorkflowFilter(created_after=now - timedelta(hours=1)))) == 6
    assert await ids(ops, WorkflowFilter(created_before=now - timedelta(hours=1))) == []
    await db.execute(
        "UPDATE sayiir_workflow_snapshots SET updated_at = now() - interval '2 days' WHERE instance_id = 'op-b-02'"
    )
    assert await ids(ops, WorkflowFilter(updated_before=now - timedelta(days=1))) == ["op-b-02"]
    assert "op-b-02" not in await ids(ops, WorkflowFilter(updated_after=now - timedelta(days=1)))
    # Criteria combine with AND.
    assert await ids(ops, WorkflowFilter(statuses=("InProgress",), definition_hash=DefinitionHash.sha256("def-c"))) == [
        "op-c-02"
    ]


async def test_summary_fields(seeded: tuple[GrpcBackend, OperatorClient]) -> None:
    _, ops = seeded
    by_id = {w.instance_id: w async for w in ops.iter_workflows()}
    a1, a2, b1, c2 = by_id["op-a-01"], by_id["op-a-02"], by_id["op-b-01"], by_id["op-c-02"]
    assert a1.to_json()["definition_hash"] == DefinitionHash.sha256("def-a").to_hex()
    assert a1.current_task_id == STEP1.as_bytes() and a1.position == "AtTask"
    assert a1.task_tags == ("gpu",) and a1.task_priority == 2
    assert a1.claimed_by is None and a2.claimed_by == "worker-1"
    assert a2.claim_expires_at is not None and a2.claim_expires_at > datetime.now(UTC)
    assert b1.status == "Failed" and b1.error == "Payment gateway TIMEOUT" and b1.position is None
    assert c2.position == "AtSignal" and c2.current_task_id is None
    line = a1.to_json()
    assert list(line) == [
        "instance_id", "status", "definition_hash", "current_task_id", "position", "created_at", "updated_at",
        "error", "task_tags", "task_priority", "claimed_by", "claim_expires_at",
    ]  # fmt: skip
    assert line["created_at"].endswith("Z") and datetime.fromisoformat(line["created_at"]).tzinfo is not None


async def test_paging_across_pages(operator_service: tuple[RunningServer, str]) -> None:
    running, url = operator_service
    await empty_tables(url)
    target = f"127.0.0.1:{running.port}"
    async with connect(target, watch_wakeups=False) as backend, connect_operator(target) as ops:
        for i in range(25):
            await backend.save_snapshot(WorkflowSnapshot.new(f"page-{i:02d}", "paged"))
        pages = []
        after = None
        while True:
            page = await ops.list_workflows(limit=10, after=after)
            pages.append([w.instance_id for w in page.items])
            if page.after is None:
                break
            after = page.after
        assert [len(p) for p in pages] == [10, 10, 5]
        listed = [instance for page_ids in pages for instance in page_ids]
        assert listed == [f"page-{i:02d}" for i in range(25)]
        assert [w.instance_id async for w in ops.iter_workflows(page_size=7)] == listed


async def test_describe(seeded: tuple[GrpcBackend, OperatorClient]) -> None:
    _, ops = seeded
    a1 = await ops.describe_workflow("op-a-01")
    assert a1.summary.instance_id == "op-a-01"
    assert a1.buffered_events == {"approval": 2, "other": 1}
    assert [(t.task_id, t.output_bytes) for t in a1.completed_tasks] == [(STEP0.as_bytes(), len(STEP0_OUTPUT))]
    assert a1.completed_tasks[0].completed_at is not None
    [retry] = a1.retry_states
    assert (retry.task_id, retry.attempts, retry.last_error, retry.last_failed_worker) == (
        STEP1.as_bytes(), 1, "flaky disk", "worker-9",
    )  # fmt: skip
    assert a1.history_versions == 1
    assert a1.pending_signals == ()
    a2 = await ops.describe_workflow("op-a-02")
    pending = [s.to_json() for s in a2.pending_signals]
    assert pending == [{"kind": "Pause", "reason": "maintenance", "requested_by": "ops"}]
    document = a2.to_json()
    assert set(document) - set(a2.summary.to_json()) == {
        "pending_signals", "buffered_events", "completed_tasks", "history_versions",
    }  # fmt: skip
    with pytest.raises(NotFoundError):
        await ops.describe_workflow("no-such-workflow")


async def test_history_paged_and_one_version_decoded(seeded: tuple[GrpcBackend, OperatorClient]) -> None:
    backend, ops = seeded
    snapshot = await backend.load_snapshot("op-c-02")
    for i in range(4):
        snapshot.update_position(AtTask(TaskId.sha256(f"later-{i}")))
        await backend.save_snapshot(snapshot)
    first = await ops.workflow_history("op-c-02", limit=2)
    assert [v.version for v in first.items] == [1, 2] and first.after == 2
    everything = [v async for v in ops.iter_history("op-c-02", page_size=2)]
    assert [v.version for v in everything] == [1, 2, 3, 4, 5]
    assert everything[0].position == "AtSignal" and everything[1].position == "AtTask"
    assert everything[1].current_task_id == TaskId.sha256("later-0").as_bytes()
    assert all(v.size > 0 and len(v.sha256) == 32 and v.status == "InProgress" for v in everything)
    assert set(everything[0].to_json()) == {"version", "created_at", "status", "position", "size", "sha256"}
    entry, decoded = await ops.workflow_version("op-c-02", 1)
    assert entry.version == 1
    assert decoded.position() == AtSignal(APPROVAL, "approval", next_task_id=STEP2)
    with pytest.raises(NotFoundError):
        await ops.workflow_version("op-c-02", 99)
    with pytest.raises(NotFoundError):
        await ops.workflow_history("no-such-workflow")


async def test_actions_by_id(seeded: tuple[GrpcBackend, OperatorClient]) -> None:
    backend, ops = seeded
    # Unclaimed and running: cancelled at once. Completed: skipped. Missing: not found.
    result = await ops.cancel(["op-a-01", "op-b-02", "ghost"], reason="bad input", requested_by="alice")
    assert result == ActionResult(matched=3, applied=1, skipped=1, not_found=1)
    cancelled = await backend.load_snapshot("op-a-01")
    assert cancelled.state.kind == "Cancelled"
    assert (cancelled.state.reason, cancelled.state.cancelled_by) == ("bad input", "alice")  # type: ignore[union-attr]
    # Claimed: the request waits for its worker, who applies it at the task boundary.
    assert await ops.cancel(["op-a-02"]) == ActionResult(1, 1, 0, 0)
    assert (await backend.load_snapshot("op-a-02")).state.kind == "InProgress"
    assert str(await backend.check_control_signals("op-a-02")) == "ControlSignal.CANCELLED"
    # Pause, unpause.
    assert await ops.unpause(["op-c-01", "op-c-02"]) == ActionResult(2, 1, 1, 0)
    assert (await backend.load_snapshot("op-c-01")).state.kind == "InProgress"
    assert await ops.pause(["op-c-01"], reason="again") == ActionResult(1, 1, 0, 0)
    assert (await backend.load_snapshot("op-c-01")).state.kind == "Paused"
    # An event resumes the workflow parked at that signal.
    assert await ops.send_event(["op-c-02"], "approval", b'{"ok":true}') == ActionResult(1, 1, 0, 0)
    resumed = await backend.load_snapshot("op-c-02")
    assert resumed.current_task_id() == STEP2
    assert resumed.get_task_result(APPROVAL).output == b'{"ok":true}'  # type: ignore[union-attr]
    # An event to a finished workflow is refused (skipped), not buffered.
    assert await ops.send_event(["op-b-01"], "approval") == ActionResult(1, 0, 1, 0)
    # Delete takes any state.
    assert await ops.delete(["op-b-01", "op-b-02"]) == ActionResult(2, 2, 0, 0)
    with pytest.raises(NotFoundError):
        await backend.load_snapshot("op-b-01")


async def test_bulk_by_filter_with_dry_run_in_batches(operator_service: tuple[RunningServer, str]) -> None:
    running, url = operator_service
    await empty_tables(url)
    target = f"127.0.0.1:{running.port}"
    async with connect(target, watch_wakeups=False) as backend, connect_operator(target) as ops:
        for i in range(12):
            snapshot = WorkflowSnapshot.new(f"bulk-{i:02d}", "bulk-def")
            snapshot.update_position(AtTask(STEP1))
            if i % 4 == 0:
                snapshot.mark_completed(b"")
            await backend.save_snapshot(snapshot)
        where = WorkflowFilter(definition_hash=DefinitionHash.sha256("bulk-def"))
        dry = await ops.cancel(where, dry_run=True)
        assert dry == ActionResult(matched=12)
        assert await ids(ops, WorkflowFilter(statuses=("Cancelled",))) == []
        # Batches of 5: three calls, every instance in its own transaction.
        result = await ops.act(WorkflowAction.CANCEL, where, batch_size=5)
        assert result == ActionResult(matched=12, applied=9, skipped=3, not_found=0)
        assert len(await ids(ops, WorkflowFilter(statuses=("Cancelled",)))) == 9
        # A second pass finds only terminal workflows.
        assert await ops.cancel(where) == ActionResult(matched=12, applied=0, skipped=12)
        assert await ops.delete(WorkflowFilter(statuses=("Completed",)), dry_run=True) == ActionResult(matched=3)
        assert await ops.delete(WorkflowFilter(statuses=("Completed",))) == ActionResult(3, 3, 0, 0)
        assert len(await ids(ops)) == 9


async def test_claims(seeded: tuple[GrpcBackend, OperatorClient], db: asyncpg.Connection) -> None:
    backend, ops = seeded
    assert await backend.claim_task("op-a-01", STEP1, "worker-2", ttl=60) is not None
    await db.execute(
        "UPDATE sayiir_workflow_claims SET expires_at = now() - interval '1 minute' WHERE instance_id = 'op-a-01'"
    )
    claims = [c async for c in ops.iter_claims()]
    assert [(c.instance_id, c.worker_id, c.expired) for c in claims] == [
        ("op-a-01", "worker-2", True),
        ("op-a-02", "worker-1", False),
    ]
    assert [c.instance_id async for c in ops.iter_claims(expired_only=True)] == ["op-a-01"]
    assert [c.instance_id async for c in ops.iter_claims(worker_id="worker-1")] == ["op-a-02"]
    assert set(claims[0].to_json()) == {"instance_id", "task_id", "worker_id", "expires_at", "expired"}
    released = await ops.release_claim("op-a-02")
    assert (released.worker_id, released.task_id) == ("worker-1", STEP1.as_bytes())
    assert [c.instance_id async for c in ops.iter_claims()] == ["op-a-01"]
    # The worker whose claim was released finds it lost; another worker can claim.
    assert await backend.claim_task("op-a-02", STEP1, "worker-3", ttl=60) is not None
    with pytest.raises(NotFoundError):
        await ops.release_claim("op-b-01")


async def test_bad_input_is_invalid_argument_naming_the_field(operator_service: tuple[RunningServer, str]) -> None:
    running, _ = operator_service
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = op_grpc.WorkflowOperatorStub(channel)
        cases = [
            (stub.ListWorkflows, op_pb.ListWorkflowsRequest(filter=op_pb.WorkflowFilter(statuses=[42])), "statuses[0]"),
            (
                stub.ListWorkflows,
                op_pb.ListWorkflowsRequest(filter=op_pb.WorkflowFilter(definition_hash=b"short")),
                "filter.definition_hash",
            ),
            (stub.ListWorkflows, op_pb.ListWorkflowsRequest(filter=op_pb.WorkflowFilter(tag="")), "filter.tag"),
            (stub.ListWorkflows, op_pb.ListWorkflowsRequest(page_size=5000), "page_size"),
            (stub.DescribeWorkflow, op_pb.DescribeWorkflowRequest(), "instance_id"),
            (stub.GetWorkflowVersion, op_pb.GetWorkflowVersionRequest(instance_id="x", version=0), "version"),
            (
                stub.ActOnWorkflows,
                op_pb.ActOnWorkflowsRequest(instances=op_pb.InstanceIds(instance_ids=["x"])),
                "action",
            ),
            (stub.ActOnWorkflows, op_pb.ActOnWorkflowsRequest(action=op_pb.WORKFLOW_ACTION_CANCEL), "target"),
            (
                stub.ActOnWorkflows,
                op_pb.ActOnWorkflowsRequest(
                    action=op_pb.WORKFLOW_ACTION_SEND_EVENT, instances=op_pb.InstanceIds(instance_ids=["x"])
                ),
                "signal_name",
            ),
            (
                stub.ActOnWorkflows,
                op_pb.ActOnWorkflowsRequest(
                    action=op_pb.WORKFLOW_ACTION_DELETE, instances=op_pb.InstanceIds(instance_ids=[""])
                ),
                "instances.instance_ids[0]",
            ),
        ]
        for method, request, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await method(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
            assert field in (caught.value.details() or ""), (field, caught.value.details())
    with pytest.raises(ValueError, match="unknown status 'Sleeping'"):
        WorkflowFilter(statuses=("Sleeping",))


# -- roles ---------------------------------------------------------------------

READER, WORKER, OPERATOR, FULL = (f"{role}-token-0123456789" for role in ("reader", "worker", "operator", "full"))


async def test_token_roles(make_database: Callable[[], Awaitable[str]], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# roles\n{READER} reader\n{WORKER} worker\n{OPERATOR} Operator\n{FULL}\n")
    running = await start_service(await make_database(), auth_tokens_file=str(tokens))
    target = f"127.0.0.1:{running.port}"

    async def code_of(call: Awaitable[object]) -> str:
        try:
            await call
        except Exception as exc:  # the BackendError family
            return getattr(exc, "code", None).name  # type: ignore[union-attr]
        return "OK"

    try:
        async with connect(target, token=FULL, watch_wakeups=False) as full:
            await full.save_snapshot(WorkflowSnapshot.new("roles-1", "h"))
        for token, expected in (
            (READER, {"list": "OK", "describe": "OK", "load": "OK", "save": "PERMISSION_DENIED",
                      "cancel": "PERMISSION_DENIED", "claims": "OK"}),
            (WORKER, {"list": "PERMISSION_DENIED", "describe": "PERMISSION_DENIED", "load": "OK", "save": "OK",
                      "cancel": "PERMISSION_DENIED", "claims": "PERMISSION_DENIED"}),
            (OPERATOR, {"list": "OK", "describe": "OK", "load": "OK", "save": "OK", "cancel": "OK", "claims": "OK"}),
            (FULL, {"list": "OK", "describe": "OK", "load": "OK", "save": "OK", "cancel": "OK", "claims": "OK"}),
        ):  # fmt: skip
            async with (
                connect(target, token=token, watch_wakeups=False, retry_delays=()) as backend,
                connect_operator(target, token=token) as ops,
            ):
                got = {
                    "list": await code_of(ops.list_workflows()),
                    "describe": await code_of(ops.describe_workflow("roles-1")),
                    "load": await code_of(backend.load_snapshot("roles-1")),
                    "save": await code_of(backend.save_snapshot(WorkflowSnapshot.new("roles-2", "h"))),
                    "cancel": await code_of(ops.cancel(["roles-2"], dry_run=True)),
                    "claims": await code_of(ops.list_claims()),
                }
            assert got == expected, token
        # A token not configured at all is still unauthenticated.
        async with connect_operator(target, token="unknown-token-0123456789") as ops:
            assert await code_of(ops.list_workflows()) == "UNAUTHENTICATED"
    finally:
        await running.stop(grace=1)


def test_token_file_roles_are_checked(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{READER} admin\n")
    with pytest.raises(SecurityConfigError, match="unknown token role 'admin'"):
        load_tokens(str(tokens), None)
    tokens.write_text(f"{READER} reader extra\n")
    with pytest.raises(SecurityConfigError, match="TOKEN ROLE"):
        load_tokens(str(tokens), None)
    assert [t.role.value if t.role else None for t in load_tokens(None, f"{READER} reader,{FULL}")] == [
        "reader",
        None,
    ]

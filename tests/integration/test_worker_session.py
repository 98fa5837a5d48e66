"""WorkerSession: claims and completions as messages on one stream, each
answered as its unary call would be (servicers/worker_session.py, the
client's sayiir_client/session.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import grpc
import pytest

from conftest import start_service, submit_at
from sayiir_client import ClaimedTask, GrpcBackend, TaskId
from sayiir_client.session import WorkerSession
from sayiir_common.errors import InvalidArgumentError, NotFoundError, error_from_status
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as pb_grpc
from sayiir_grpc.app import RunningServer
from sayiir_grpc.servicers.worker_session import MAX_UNANSWERED

STEPS = [TaskId.sha256(f"step-{i}") for i in range(1, 4)]


async def submit(client: GrpcBackend, instance_id: str) -> None:
    await submit_at(client, instance_id, STEPS[0])


async def run_to_the_end(session: WorkerSession, worker: str, task: ClaimedTask | None) -> None:
    """Steps 1 and 2 continued on the session, step 3 completes the workflow."""
    for step, after in itertools.pairwise(STEPS):
        assert task is not None and task.task_id == step
        output = str(int(task.input or b"0") + 1).encode()
        completed, task = await session.complete_task_and_continue(task.instance_id, step, worker, output, after, 30)
        assert completed
    assert task is not None
    assert await session.complete_task(task.instance_id, STEPS[-1], worker, b"3")


async def test_a_workflow_runs_to_its_end_on_a_session(client: GrpcBackend) -> None:
    await submit(client, "one")
    async with client.worker_session() as session:
        (task,) = await session.claim_tasks("w1", 5, 30, wait=2)
        assert (task.instance_id, task.task_id, task.input) == ("one", STEPS[0], b"0")
        await run_to_the_end(session, "w1", task)
    loaded = await client.load_snapshot("one")
    assert loaded.state.kind == "Completed"
    assert await client.load_task_result("one", STEPS[1]) == b"2"


async def test_many_requests_in_flight_on_one_session_are_each_answered(client: GrpcBackend) -> None:
    names = [f"many-{i}" for i in range(24)]
    for name in names:
        await submit(client, name)
    async with client.worker_session() as session:
        claimed = await session.claim_available_tasks("w1", 100, 30)
        assert sorted(t.instance_id for t in claimed) == sorted(names)
        # Every workflow advances at once on the one stream; replies come back in any order.
        await asyncio.gather(*(run_to_the_end(session, "w1", task) for task in claimed))
    for name in names:
        assert (await client.load_snapshot(name)).state.kind == "Completed"


async def test_an_error_comes_back_as_its_exception_and_the_session_goes_on(client: GrpcBackend) -> None:
    await submit(client, "after-errors")
    async with client.worker_session() as session:
        with pytest.raises(NotFoundError):
            await session.complete_task("no-such-instance", STEPS[0], "w1", b"x")
        with pytest.raises(InvalidArgumentError) as refused:
            await session.claim_tasks("", 1, 30)
        assert refused.value.metadata["field"] == "worker_id"
        # The claim was lost: false, as the unary call answers.
        assert not await session.complete_task("after-errors", STEPS[0], "somebody-else", b"x")
        (task,) = await session.claim_tasks("w1", 1, 30)
        assert task.instance_id == "after-errors"


async def _exchange(channel: grpc.aio.Channel, requests: list[pb.WorkerSessionRequest]) -> list[pb.WorkerSessionReply]:
    """Send `requests` on a new raw stream, close it, and return every reply."""
    call = pb_grpc.TaskClaimStoreStub(channel).WorkerSession()
    for request in requests:
        await call.write(request)
    await call.done_writing()
    return [reply async for reply in call]


async def test_a_repeat_with_the_same_request_id_on_a_new_stream_replays_the_first_answer(
    client: GrpcBackend, isolated: tuple[RunningServer, str]
) -> None:
    await submit(client, "repeated")
    (_task,) = await client.claim_tasks("w1", 1, 30)
    complete = pb.CompleteTaskRequest(
        instance_id="repeated",
        task_id=STEPS[0].as_bytes(),
        worker_id="w1",
        output=b"1",
        next_task_id=STEPS[1].as_bytes(),
    )
    complete.claim_next_ttl.seconds = 30
    request = pb.WorkerSessionRequest(request_id=str(uuid.uuid4()), complete_task=complete)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated[0].port}") as channel:
        (first,) = await _exchange(channel, [request])
        # The first stream's answer was lost: the client sends it again on a new stream.
        (again,) = await _exchange(channel, [request])
    assert first.WhichOneof("result") == "complete_task" and first.complete_task.completed
    assert first.complete_task.next.task_id == STEPS[1].as_bytes()
    assert again == first
    conn = await asyncpg.connect(isolated[1])
    try:
        versions = await conn.fetchval(
            "SELECT count(*) FROM sayiir_workflow_snapshot_history WHERE instance_id = 'repeated'"
        )
    finally:
        await conn.close()
    assert versions == 2  # the submit and one completion: the repeat applied nothing


async def test_a_request_without_an_id_or_a_call_is_refused_naming_the_field(
    isolated: tuple[RunningServer, str],
) -> None:
    claim = pb.ClaimAvailableTasksRequest(worker_id="w1", limit=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated[0].port}") as channel:
        replies = await _exchange(
            channel,
            [
                pb.WorkerSessionRequest(request_id="", claim_available_tasks=claim),
                pb.WorkerSessionRequest(request_id="no-call"),
                pb.WorkerSessionRequest(request_id="x" * 129, claim_available_tasks=claim),
                pb.WorkerSessionRequest(request_id="fine", claim_available_tasks=claim),
            ],
        )
    by_id = {reply.request_id: reply for reply in replies}
    assert len(by_id) == 4
    for request_id, field in (("", "request_id"), ("no-call", "call"), ("x" * 129, "request_id")):
        error = error_from_status(by_id[request_id].error)
        assert isinstance(error, InvalidArgumentError), request_id
        assert error.metadata["field"] == field
    assert by_id["fine"].WhichOneof("result") == "claim_available_tasks"


async def test_a_message_that_does_not_parse_ends_the_stream_with_invalid_argument(
    isolated: tuple[RunningServer, str],
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated[0].port}") as channel:
        call = channel.stream_stream(
            "/sayiir.v1.TaskClaimStore/WorkerSession",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.WorkerSessionReply.FromString,
        )()
        await call.write(b"\xff\xff\xff\xff")
        await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in call:
                pass
    assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message of this method" in (ended.value.details() or "")


async def test_past_the_limit_of_unanswered_requests_a_request_is_refused(
    isolated: tuple[RunningServer, str],
) -> None:
    # Long polls stay unanswered for their whole wait: one more than the limit is refused at once.
    waits = [
        pb.WorkerSessionRequest(
            request_id=f"poll-{i}",
            claim_available_tasks=pb.ClaimAvailableTasksRequest(worker_id="w1", limit=1, worker_tags=["never"]),
        )
        for i in range(MAX_UNANSWERED + 1)
    ]
    for request in waits:
        request.claim_available_tasks.wait.FromMilliseconds(1500)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated[0].port}") as channel:
        replies = await _exchange(channel, waits)
    refused = [r for r in replies if r.WhichOneof("result") == "error"]
    assert len(replies) == MAX_UNANSWERED + 1
    assert [r.request_id for r in refused] == [f"poll-{MAX_UNANSWERED}"]
    assert error_from_status(refused[0].error).code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_stopping_server_answers_what_is_under_way_then_ends_the_session_unavailable(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    running = await start_service(await make_database(), pool_max_connections=4)
    stopped = False
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = pb_grpc.TaskClaimStoreStub(channel).WorkerSession()
            poll = pb.ClaimAvailableTasksRequest(worker_id="w1", limit=1)
            poll.wait.FromSeconds(30)
            await call.write(pb.WorkerSessionRequest(request_id="under-way", claim_available_tasks=poll))
            await asyncio.sleep(0.5)
            stopping = asyncio.create_task(running.stop(grace=5))
            reply = await asyncio.wait_for(call.read(), 5)
            assert reply.request_id == "under-way" and not reply.claim_available_tasks.tasks
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(call.read(), 5)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            await stopping
            stopped = True
    finally:
        if not stopped:
            await running.stop(grace=1)


async def test_the_client_repeats_unanswered_requests_on_a_new_stream(
    client: GrpcBackend, isolated: tuple[RunningServer, str]
) -> None:
    await submit(client, "survives")
    async with client.worker_session() as session:
        (_task,) = await session.claim_tasks("w1", 1, 30)
        # The stream breaks under the session (as when a proxy drops it).
        session._call.cancel()
        await asyncio.sleep(0.1)
        completed, following = await session.complete_task_and_continue("survives", STEPS[0], "w1", b"1", STEPS[1], 30)
        assert completed and following is not None and following.task_id == STEPS[1]


def flattened(replies: list[pb.WorkerSessionReply]) -> dict[str, pb.WorkerSessionReply]:
    return {one.request_id: one for reply in replies for one in (reply.batch or (reply,))}


async def test_a_batch_of_requests_is_answered_request_by_request(
    client: GrpcBackend, isolated: tuple[RunningServer, str]
) -> None:
    await submit(client, "batched")
    claim = pb.ClaimAvailableTasksRequest(worker_id="w1", limit=5, omit_snapshot=True)
    unknown = pb.CompleteTaskRequest(instance_id="nobody", task_id=STEPS[0].as_bytes(), worker_id="w1")
    batch = pb.WorkerSessionRequest(
        batch=[
            pb.WorkerSessionRequest(request_id="claim", claim_available_tasks=claim),
            pb.WorkerSessionRequest(request_id="unknown", complete_task=unknown),
            pb.WorkerSessionRequest(request_id="nested", batch=[pb.WorkerSessionRequest(request_id="inner")]),
        ]
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated[0].port}") as channel:
        replies = await _exchange(channel, [batch])
    by_id = flattened(replies)
    assert set(by_id) == {"claim", "unknown", "nested"}
    assert [t.instance_id for t in by_id["claim"].claim_available_tasks.tasks] == ["batched"]
    assert isinstance(error_from_status(by_id["unknown"].error), NotFoundError)
    nested = error_from_status(by_id["nested"].error)
    assert isinstance(nested, InvalidArgumentError) and nested.metadata["field"] == "batch"


async def test_a_busy_client_writes_its_ready_requests_as_one_message(
    client: GrpcBackend, isolated: tuple[RunningServer, str]
) -> None:
    names = [f"burst-{i}" for i in range(40)]
    for name in names:
        await submit(client, name)
    written: list[pb.WorkerSessionRequest] = []
    async with client.worker_session() as session:
        claimed = await session.claim_available_tasks("w1", 100, 30)
        call = session._call
        write = call.write

        async def counting(message: pb.WorkerSessionRequest) -> None:
            written.append(message)
            await write(message)

        call.write = counting
        # 40 completions at once: whatever is queued while a write is under way goes in the next message.
        await asyncio.gather(*(run_to_the_end(session, "w1", task) for task in claimed))
    requests = sum(len(m.batch) or 1 for m in written)
    assert requests == 40 * 3
    # The 40 first completions are queued in one turn of the loop: one message carries them.
    assert max(len(m.batch) for m in written) >= 20, [len(m.batch) for m in written]
    assert len(written) < requests, (len(written), requests)
    for name in names:
        assert (await client.load_snapshot(name)).state.kind == "Completed"


def continue_request(instance_id: str, request_id: str) -> pb.WorkerSessionRequest:
    """Complete STEPS[0] of `instance_id` for w1 and continue to STEPS[1]."""
    complete = pb.CompleteTaskRequest(
        instance_id=instance_id,
        task_id=STEPS[0].as_bytes(),
        worker_id="w1",
        output=b"1",
        next_task_id=STEPS[1].as_bytes(),
    )
    complete.claim_next_ttl.seconds = 30
    return pb.WorkerSessionRequest(request_id=request_id, complete_task=complete)


@contextlib.asynccontextmanager
async def claimed_with_slow_held(
    client: GrpcBackend, url: str, names: tuple[str, ...]
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """ "slow" and `names` submitted and claimed by w1, slow's snapshot row
    locked by another connection; yields the release of that lock."""
    for name in ("slow", *names):
        await submit(client, name)
    assert len(await client.claim_tasks("w1", 1 + len(names), 30)) == 1 + len(names)
    holder = await asyncpg.connect(url)
    try:
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT 1 FROM sayiir_workflow_snapshots WHERE instance_id = 'slow' FOR UPDATE")
        yield held.commit
    finally:
        await holder.close()


def step_on(session: WorkerSession, name: str) -> asyncio.Task[tuple[bool, ClaimedTask | None]]:
    """Complete STEPS[0] of `name` on `session`, continuing to STEPS[1]."""
    return asyncio.create_task(session.complete_task_and_continue(name, STEPS[0], "w1", b"1", STEPS[1], 30))


async def _batch_with_a_held_row(
    client: GrpcBackend, isolated: tuple[RunningServer, str], hold_s: float
) -> list[tuple[float, list[str]]]:
    """A batch of two completions, "quick" and "slow"; slow's row is locked
    for `hold_s`. Each reply message: when it came (seconds after the batch
    was written) and the request ids it answers."""
    batch = pb.WorkerSessionRequest(batch=[continue_request("quick", "quick"), continue_request("slow", "slow")])
    loop = asyncio.get_running_loop()
    async with (
        claimed_with_slow_held(client, isolated[1], ("quick",)) as release,
        grpc.aio.insecure_channel(f"127.0.0.1:{isolated[0].port}") as channel,
    ):
        call = pb_grpc.TaskClaimStoreStub(channel).WorkerSession()
        written = loop.time()
        await call.write(batch)

        async def replies() -> list[tuple[float, list[str]]]:
            return [
                (loop.time() - written, [one.request_id for one in (reply.batch or (reply,))]) async for reply in call
            ]

        reading = asyncio.create_task(replies())
        await asyncio.sleep(hold_s)
        await release()
        await call.done_writing()
        return await reading


async def test_a_ready_reply_waits_a_moment_for_the_other_answers_of_its_batch(
    client: GrpcBackend, isolated: tuple[RunningServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sayiir_grpc.servicers import worker_session

    # A linger longer than the held row: both answers go as one message.
    monkeypatch.setattr(worker_session, "LINGER_S", 5.0)
    messages = await _batch_with_a_held_row(client, isolated, 0.3)
    assert [sorted(ids) for _, ids in messages] == [["quick", "slow"]], messages
    assert 0.3 <= messages[0][0] < 5.0


async def test_a_ready_reply_waits_no_longer_than_the_linger(
    client: GrpcBackend, isolated: tuple[RunningServer, str]
) -> None:
    # The default linger is milliseconds: the quick answer does not wait for the held row.
    messages = await _batch_with_a_held_row(client, isolated, 0.5)
    assert [ids for _, ids in messages] == [["quick"], ["slow"]]
    assert messages[0][0] < 0.3 <= messages[1][0]


async def test_a_request_waits_for_the_answers_under_way_so_that_requests_share_a_message(
    client: GrpcBackend, isolated: tuple[RunningServer, str]
) -> None:
    async with (
        claimed_with_slow_held(client, isolated[1], ("quick", "other")) as release,
        client.worker_session(linger=1.0) as session,
    ):
        slow = step_on(session, "slow")
        await asyncio.sleep(0.1)  # written: it waits for its row
        quick = step_on(session, "quick")
        await asyncio.sleep(0.05)
        other = step_on(session, "other")
        await asyncio.sleep(0.3)
        # Both wait for slow's answer (it would bring more requests), not their own.
        assert not quick.done() and not other.done()
        await release()
        for done in await asyncio.gather(slow, quick, other):
            assert done[0]
        assert (session.messages_written, session.requests_written) == (2, 3)


async def test_a_request_waits_no_longer_than_its_linger(
    client: GrpcBackend, isolated: tuple[RunningServer, str]
) -> None:
    async with (
        claimed_with_slow_held(client, isolated[1], ("quick",)) as release,
        client.worker_session(linger=0.05) as session,
    ):
        slow = step_on(session, "slow")
        await asyncio.sleep(0.1)
        # Answered while slow still waits for its row: the linger ended it.
        assert (await step_on(session, "quick"))[0]
        assert not slow.done()
        await release()
        assert (await slow)[0]


async def test_a_linger_out_of_range_is_refused(client: GrpcBackend) -> None:
    with pytest.raises(ValueError, match="linger"):
        client.worker_session(linger=-1)

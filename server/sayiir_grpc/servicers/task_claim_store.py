"""The TaskClaimStore and TaskResultStore services.

Logic and SQL: `sayiir_grpc.stores.task_claim_store` (claims, fenced writes),
`...dispatch` (finding work), `...task_result_store`, and `sayiir_grpc.wakeup`
for the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import grpc
import structlog

from sayiir_common import checks, convert
from sayiir_common.aio import wait_until_set
from sayiir_common.codec import SnapshotCodec
from sayiir_common.errors import ClaimLostError
from sayiir_common.ids import TaskId
from sayiir_common.model import AvailableTask
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as rpc_pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as rpc_grpc
from sayiir_grpc import limits
from sayiir_grpc.db import Database
from sayiir_grpc.errors import abort
from sayiir_grpc.idempotency import idempotent, one_statement_or_none, request_hash, request_key
from sayiir_grpc.observability import Metrics
from sayiir_grpc.servicers import Context, rpc, worker_session
from sayiir_grpc.stores import claim_replay, continuation, dispatch, task_result_store
from sayiir_grpc.stores import task_claim_store as store
from sayiir_grpc.stores.continuation import KeyRecord, NextTask
from sayiir_grpc.tracing import adopt_caller_trace
from sayiir_grpc.wakeup import WakeupHub

log = structlog.get_logger(__name__)

MAX_LIMIT = 1000
DEFAULT_AGING_S = 300.0
MAX_WAIT_S = 300.0
# A long poll looks again this often even without a hint: hints are best
# effort, and a claim that expires wakes nobody.
LONG_POLL_RECHECK_S = 1.0
# A long poll answers this long before the call's deadline, so the answer
# (and any task claimed) reaches the worker instead of a DEADLINE_EXCEEDED.
DEADLINE_MARGIN_S = 0.25


def aging_from(
    request: rpc_pb.FindAvailableTasksRequest | rpc_pb.ClaimAvailableTasksRequest | rpc_pb.CompleteTaskRequest,
) -> float:
    """The aging interval of a dispatch call or of a continued claim's fairness check, in seconds."""
    if not request.HasField("aging_interval"):
        return DEFAULT_AGING_S
    return checks.positive_seconds("aging_interval", request.aging_interval)


ClaimRequest = (
    rpc_pb.ClaimTaskRequest
    | rpc_pb.ReleaseTaskClaimRequest
    | rpc_pb.ExtendTaskClaimRequest
    | rpc_pb.CompleteTaskRequest
)


def claim_key(request: ClaimRequest) -> tuple[str, TaskId, str]:
    """The (instance_id, task_id, worker_id) a claim call names, each checked."""
    return (
        checks.check_instance_id("instance_id", request.instance_id),
        checks.task_id_from("task_id", request.task_id),
        checks.check_worker_id("worker_id", request.worker_id),
    )


def dispatch_args(
    request: rpc_pb.FindAvailableTasksRequest | rpc_pb.ClaimAvailableTasksRequest,
) -> tuple[str, int, float, list[str]]:
    """(worker_id, limit, aging interval in seconds, worker tags) of a dispatch call, each checked."""
    return (
        checks.check_worker_id("worker_id", request.worker_id),
        checks.check_limit("limit", request.limit, MAX_LIMIT),
        aging_from(request),
        checks.check_tags("worker_tags", list(request.worker_tags)),
    )


def wait_from(request: rpc_pb.ClaimAvailableTasksRequest, context: Context) -> float:
    """How long a claim call may wait for a task: its `wait`, cut to the deadline."""
    if not request.HasField("wait"):
        return 0.0
    wait = request.wait.seconds + request.wait.nanos / 1e9
    if wait < 0:
        raise checks.InvalidField("wait", "must not be negative")
    if wait > MAX_WAIT_S:
        raise checks.InvalidField("wait", f"must be at most {int(MAX_WAIT_S)} seconds")
    remaining = context.time_remaining()
    if remaining is not None:
        wait = min(wait, remaining - DEADLINE_MARGIN_S)
    return max(wait, 0.0)


def ttl_from(request: rpc_pb.ClaimTaskRequest | rpc_pb.ClaimAvailableTasksRequest) -> float | None:
    return checks.positive_seconds("ttl", request.ttl) if request.HasField("ttl") else None


CompletionArgs = tuple[str, TaskId, str, bytes, NextTask | None, bytes | None, tuple[float, float] | None]


def completion_args(request: rpc_pb.CompleteTaskRequest) -> CompletionArgs:
    """(instance, task, worker, output, next task, final output, claim_next) of a CompleteTask, each checked."""
    instance_id, task_id, worker_id = claim_key(request)
    next_task = None
    next_id = checks.optional_task_id(request, "next_task_id")
    if next_id is not None:
        priority = None
        if request.HasField("next_task_priority"):
            priority = checks.check_priority("next_task_priority", request.next_task_priority)
        tags = checks.check_tags("next_task_tags", list(request.next_task_tags))
        next_task = (next_id, priority, tags)
    final = request.final_output if request.HasField("final_output") else None
    claim_next = None
    if request.HasField("claim_next_ttl"):
        if next_task is None:
            raise checks.InvalidField("claim_next_ttl", "needs next_task_id")
        claim_next = (checks.positive_seconds("claim_next_ttl", request.claim_next_ttl), aging_from(request))
    return instance_id, task_id, worker_id, request.output, next_task, final, claim_next


def completion_reply(completed: bool, following: AvailableTask | None) -> rpc_pb.CompleteTaskResponse:
    response = rpc_pb.CompleteTaskResponse(completed=completed)
    if following is not None:
        response.next.CopyFrom(convert.available_task_to_proto(following, with_snapshot=False))
    return response


# The reply of a completion that released its claim (nothing follows), serialized once.
COMPLETED_REPLY = completion_reply(True, None).SerializeToString()


class TaskClaimStoreServicer(rpc_grpc.TaskClaimStoreServicer):
    def __init__(
        self,
        db: Database,
        codec: SnapshotCodec,
        hub: WakeupHub,
        metrics: Metrics | None = None,
        sweep_in_claims: bool = True,
    ) -> None:
        self.db = db
        self.codec = codec
        self.hub = hub
        self.metrics = metrics
        # False when this process sweeps in the background (RunningServer._sweep_loop).
        self.sweep_in_claims = sweep_in_claims
        # The snapshots of workflows this process continued (stores.continuation).
        self.continued = continuation.ContinuationCache()
        # Their completions, a turn of the event loop's at a time, in one round trip.
        self.completions = continuation.CompletionBatch(db.connection)

    @rpc
    @idempotent(rpc_pb.ClaimTaskResponse)
    async def ClaimTask(self, request: rpc_pb.ClaimTaskRequest, context: Context) -> rpc_pb.ClaimTaskResponse:
        instance_id, task_id, worker_id = claim_key(request)
        claim = await store.claim_task(self.db, instance_id, task_id, worker_id, ttl_from(request))
        if claim is None:
            return rpc_pb.ClaimTaskResponse()
        if self.metrics is not None:
            self.metrics.claims_granted.inc()
        return rpc_pb.ClaimTaskResponse(claim=convert.task_claim_to_proto(claim))

    @rpc
    @idempotent(rpc_pb.ReleaseTaskClaimResponse)
    async def ReleaseTaskClaim(
        self, request: rpc_pb.ReleaseTaskClaimRequest, context: Context
    ) -> rpc_pb.ReleaseTaskClaimResponse:
        instance_id, task_id, worker_id = claim_key(request)
        with self._counting_lost():
            await store.release_task_claim(self.db, instance_id, task_id, worker_id)
        return rpc_pb.ReleaseTaskClaimResponse()

    @rpc
    @idempotent(rpc_pb.ExtendTaskClaimResponse)
    async def ExtendTaskClaim(
        self, request: rpc_pb.ExtendTaskClaimRequest, context: Context
    ) -> rpc_pb.ExtendTaskClaimResponse:
        instance_id, task_id, worker_id = claim_key(request)
        ttl = checks.positive_seconds("ttl", checks.require(request, "ttl"))
        with self._counting_lost():
            await store.extend_task_claim(self.db, instance_id, task_id, worker_id, ttl)
        return rpc_pb.ExtendTaskClaimResponse()

    @rpc
    async def FindAvailableTasks(
        self, request: rpc_pb.FindAvailableTasksRequest, context: Context
    ) -> rpc_pb.FindAvailableTasksResponse:
        worker_id, limit, aging, tags = dispatch_args(request)
        tasks = await dispatch.find_available_tasks(self.db, self.codec, worker_id, limit, aging, tags)
        response = rpc_pb.FindAvailableTasksResponse()
        fit = await limits.add_fitting_tasks(response.tasks, tasks)
        response.more_ready = fit < len(tasks)
        return response

    @rpc
    async def FindHintedTask(
        self, request: rpc_pb.FindHintedTaskRequest, context: Context
    ) -> rpc_pb.FindHintedTaskResponse:
        hint = convert.wakeup_hint_from_proto(checks.require(request, "hint"))
        task = await dispatch.find_hinted_task(self.db, self.codec, hint.instance_id, hint.task_id)
        if task is None:
            return rpc_pb.FindHintedTaskResponse()
        return rpc_pb.FindHintedTaskResponse(task=convert.available_task_to_proto(task))

    @rpc
    @idempotent(rpc_pb.SaveSnapshotFencedResponse)
    async def SaveSnapshotFenced(
        self, request: rpc_pb.SaveSnapshotFencedRequest, context: Context
    ) -> rpc_pb.SaveSnapshotFencedResponse:
        snapshot = adopt_caller_trace(convert.snapshot_from_proto(checks.require(request, "snapshot")), context)
        task_id = checks.task_id_from("task_id", request.task_id)
        worker_id = checks.check_worker_id("worker_id", request.worker_id)
        written = await store.save_snapshot_fenced(self.db, self.codec, snapshot, task_id, worker_id)
        if not written and self.metrics is not None:
            self.metrics.claims_lost.inc()
        return rpc_pb.SaveSnapshotFencedResponse(written=written)

    @rpc
    async def ClaimAvailableTasks(
        self, request: rpc_pb.ClaimAvailableTasksRequest, context: Context
    ) -> rpc_pb.ClaimAvailableTasksResponse:
        return await self.claim_available_tasks(request, context)

    async def claim_available_tasks(
        self, request: rpc_pb.ClaimAvailableTasksRequest, context: Context
    ) -> rpc_pb.ClaimAvailableTasksResponse:
        """ClaimAvailableTasks, as a call or as a session request."""
        _, _, _, tags = dispatch_args(request)
        wait = wait_from(request, context)
        if wait > 0:
            # A long poll claims at once (a busy fleet finds work: one
            # statement, no readiness check first); finding nothing, it
            # waits outside any transaction (no connection held), then
            # claims again under the same key, which the first look left
            # free (`dispatch.CLAIM_AVAILABLE_KEYED`, $8).
            deadline = asyncio.get_running_loop().time() + wait
            claimed = await self._claim_available(request, context, key_if_empty=False)
            if claimed.tasks:
                return claimed
            await self._wait_until_ready(tags, deadline - asyncio.get_running_loop().time())
        return await self._claim_available(request, context)

    async def _claim_available(
        self, request: rpc_pb.ClaimAvailableTasksRequest, context: Context, key_if_empty: bool = True
    ) -> rpc_pb.ClaimAvailableTasksResponse:
        """A keyed claim is one statement with its key (`dispatch.CLAIM_AVAILABLE_KEYED`);
        a repeat of the key, or an unknown outcome, takes the transaction path."""
        key = request_key(context)
        if key is not None:
            claimed = await one_statement_or_none(
                "ClaimAvailableTasks", self._claim(request, (key, request_hash(request)), key_if_empty)
            )
            if claimed is not None:
                return claimed
        return await self._claim_in_transaction(request, context)

    async def _replay_claim(
        self, outline: rpc_pb.ClaimAvailableTasksResponse, request: rpc_pb.ClaimAvailableTasksRequest
    ) -> rpc_pb.ClaimAvailableTasksResponse:
        """A repeated keyed claim: the tasks of its stored outline that the worker still holds."""
        worker_id = checks.check_worker_id("worker_id", request.worker_id)
        tasks = await dispatch.claimed_again(self.db, self.codec, outline, worker_id)
        return await self._claimed_reply(request, worker_id, tasks)

    @idempotent(
        rpc_pb.ClaimAvailableTasksResponse,
        name=claim_replay.CLAIM_RPC,
        also_named=(claim_replay.CLAIM_RPC_FULL_REPLY,),
        stored_as=claim_replay.outline_of,
        replay=_replay_claim,
    )
    async def _claim_in_transaction(
        self, request: rpc_pb.ClaimAvailableTasksRequest, context: Context
    ) -> rpc_pb.ClaimAvailableTasksResponse:
        return await self._claim(request, None)

    async def _claim(
        self, request: rpc_pb.ClaimAvailableTasksRequest, key: tuple[str, bytes] | None, key_if_empty: bool = True
    ) -> rpc_pb.ClaimAvailableTasksResponse:
        worker_id, limit, aging, tags = dispatch_args(request)
        ttl = ttl_from(request)
        # The light form's snapshots are not sent: each is kept for its
        # task's completion in one statement (stores.continuation).
        continued = self.continued if request.omit_snapshot else None
        tasks = await dispatch.claim_available_tasks(
            self.db, self.codec, worker_id, limit, ttl, aging, tags, self.sweep_in_claims, continued, key, key_if_empty
        )
        response = await self._claimed_reply(request, worker_id, tasks)
        if self.metrics is not None and response.tasks:
            self.metrics.claims_granted.inc(len(response.tasks))
        return response

    async def _claimed_reply(
        self, request: rpc_pb.ClaimAvailableTasksRequest, worker_id: str, tasks: list[AvailableTask]
    ) -> rpc_pb.ClaimAvailableTasksResponse:
        """The reply carrying the leading `tasks` that fit; the claims of the others are given back."""
        response = rpc_pb.ClaimAvailableTasksResponse()
        fit = await limits.add_fitting_tasks(response.tasks, tasks, with_snapshot=not request.omit_snapshot)
        response.more_ready = fit < len(tasks)
        if fit < len(tasks):
            # In the call's transaction, the claims left out are never
            # committed; after the one statement, they are released (and a
            # repeat answers only the tasks still held: claim_replay).
            await dispatch.release_claims(self.db, [t.instance_id for t in tasks[fit:]], worker_id)
        return response

    async def _wait_until_ready(self, tags: list[str], wait: float) -> None:
        """Until a task these tags may take is ready, or `wait` seconds pass.

        Each ready task wakes one waiting call of this process (its hint);
        with no hint the readiness is looked at again every
        LONG_POLL_RECHECK_S (hints are best effort). The claim that follows
        may still come back empty when another worker was faster."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not self.hub.stopping:
            # Registered before looking: a hint committed meanwhile still wakes us.
            waiter = self.hub.wait_for_task(tags)
            try:
                if await dispatch.any_ready(self.db, tags):
                    return
                left = deadline - loop.time()
                if left <= 0:
                    return
                if await wait_until_set(waiter.woken, min(left, LONG_POLL_RECHECK_S)):
                    # A hint names a task just made ready for these tags: claim
                    # at once rather than look again (one statement less).
                    return
            finally:
                self.hub.stop_waiting(waiter)

    @rpc
    async def CompleteTask(self, request: rpc_pb.CompleteTaskRequest, context: Context) -> rpc_pb.CompleteTaskResponse:
        return await self.complete_task(request, context)

    async def complete_task(self, request: rpc_pb.CompleteTaskRequest, context: Context) -> rpc_pb.CompleteTaskResponse:
        """CompleteTask, as a call or as a session request.

        A workflow this process continued for the worker is completed in one
        statement on the snapshot it wrote (`stores.continuation`); anything
        that statement cannot decide takes the transaction path, which
        decides it as always. Only a keyed call takes the one statement: a
        lost answer is then resolved by the key like any other."""
        args = completion_args(request)
        key = request_key(context)
        # Checked first: a workflow the cache does not hold costs no hash and no statement here.
        if key is not None and args[0] in self.continued:
            # The reply stored with the key when the claim moves is the reply itself: built once.
            moved: list[rpc_pb.CompleteTaskResponse] = []

            def outcome(following: AvailableTask | None) -> bytes:
                if following is None:
                    return COMPLETED_REPLY
                moved.append(completion_reply(True, following))
                return moved[-1].SerializeToString()

            record = KeyRecord(key, request_hash(request), outcome)
            done = await one_statement_or_none(
                "CompleteTask",
                continuation.complete_continued(self.completions, self.codec, self.continued, *args, record=record),
            )
            if done is not None:
                if self.metrics is not None:
                    self.metrics.completions.labels("one_statement").inc()
                completed, following = done
                return self._count_completion(completed, following, moved[-1] if following and moved else None)
        if self.metrics is not None:
            self.metrics.completions.labels("transaction").inc()
        return await self._complete_in_transaction(request, context)

    @idempotent(rpc_pb.CompleteTaskResponse, name="CompleteTask")
    async def _complete_in_transaction(
        self, request: rpc_pb.CompleteTaskRequest, context: Context
    ) -> rpc_pb.CompleteTaskResponse:
        done = await store.complete_task(self.db, self.codec, *completion_args(request), cache=self.continued)
        return self._count_completion(*done)

    def _count_completion(
        self, completed: bool, following: AvailableTask | None, built: rpc_pb.CompleteTaskResponse | None = None
    ) -> rpc_pb.CompleteTaskResponse:
        """The reply (`built` when it already is), with the claim metrics counted."""
        if self.metrics is not None:
            if not completed:
                self.metrics.claims_lost.inc()
            elif following is not None:
                self.metrics.claims_granted.inc()
        return built if built is not None else completion_reply(completed, following)

    async def WorkerSession(
        self, requests: AsyncIterator[rpc_pb.WorkerSessionRequest], context: Context
    ) -> AsyncIterator[rpc_pb.WorkerSessionReply]:
        async for reply in worker_session.serve(self, requests, context):
            yield reply

    async def WatchWakeups(
        self, request: rpc_pb.WatchWakeupsRequest, context: Context
    ) -> AsyncIterator[rpc_pb.WakeupEvent]:
        try:
            tags = checks.check_tags("worker_tags", list(request.worker_tags))
        except checks.InvalidField as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), "InvalidArgument", {"field": exc.field})
        subscription = self.hub.subscribe(tags)
        try:
            yield rpc_pb.WakeupEvent(subscribed=rpc_pb.Subscribed())
            while True:
                hint = await subscription.queue.get()
                if hint is None:  # the server is shutting down
                    return
                yield rpc_pb.WakeupEvent(hint=convert.wakeup_hint_to_proto(hint))
        except asyncio.CancelledError:
            return
        finally:
            self.hub.unsubscribe(subscription)

    @contextlib.contextmanager
    def _counting_lost(self) -> Iterator[None]:
        try:
            yield
        except ClaimLostError:
            if self.metrics is not None:
                self.metrics.claims_lost.inc()
            raise


class TaskResultStoreServicer(rpc_grpc.TaskResultStoreServicer):
    def __init__(self, db: Database, codec: SnapshotCodec) -> None:
        self.db = db
        self.codec = codec

    @rpc
    async def LoadTaskResult(
        self, request: rpc_pb.LoadTaskResultRequest, context: Context
    ) -> rpc_pb.LoadTaskResultResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        task_id = checks.task_id_from("task_id", request.task_id)
        output = await task_result_store.load_task_result(self.db, instance_id, task_id)
        return rpc_pb.LoadTaskResultResponse() if output is None else rpc_pb.LoadTaskResultResponse(output=output)

"""`GrpcBackend`: the store protocols implemented over the gRPC service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import duration_pb2

from sayiir_common import convert
from sayiir_common.aio import wait_until_set
from sayiir_common.calls import (
    DEFAULT_RETRY_DELAYS,
    DEFAULT_TIMEOUT_S,
    REQUEST_ID_METADATA,
    Retry,
    call_rpc,
    open_channel,
)
from sayiir_common.errors import error_from_rpc
from sayiir_common.ids import TaskId
from sayiir_common.model import (
    AvailableTask,
    ClaimedTask,
    ControlSignal,
    SignalKind,
    SignalRequest,
    TaskClaim,
    TaskWakeupHint,
    WorkflowSnapshot,
)
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as sig_pb
from sayiir_common.proto.sayiir.v1 import signal_store_pb2_grpc as sig_grpc
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as rpc_pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2_grpc as rpc_grpc
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as claim_grpc

if TYPE_CHECKING:
    from sayiir_client.session import WorkerSession

# Hints kept for wait_for_wakeup between calls; past this the oldest go.
WAKEUP_BUFFER = 10_000

# The call helpers live in sayiir_common.calls (the operator command line uses
# them too); these names stay importable from here.
__all__ = [
    "DEFAULT_RETRY_DELAYS",
    "DEFAULT_TIMEOUT_S",
    "REQUEST_ID_METADATA",
    "GrpcBackend",
    "Retry",
    "call_rpc",
    "connect",
    "open_channel",
]


def _kind(kind: SignalKind | str) -> sig_pb.SignalKind:
    return convert.SIGNAL_KIND_TO_PROTO[SignalKind(kind)]


Seconds = timedelta | float | int


def _duration(value: Seconds) -> duration_pb2.Duration:
    return convert.duration_to_proto(value.total_seconds() if isinstance(value, timedelta) else float(value))


def _seconds(value: Seconds | None) -> float:
    if value is None:
        return 0.0
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _task_id(value: TaskId | bytes | str) -> bytes:
    return TaskId.coerce(value).as_bytes()


class GrpcBackend:
    """A remote Sayiir backend.

    Implements `SnapshotStore`, `SignalStore`, `TaskClaimStore` and
    `TaskResultStore`.

    Every method raises the `BackendError` family (`NotFoundError`, ...)
    rather than raw gRPC errors.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    ) -> None:
        self.channel = channel
        self.timeout = timeout
        self._snapshots = rpc_grpc.SnapshotStoreStub(channel)
        self._signals = sig_grpc.SignalStoreStub(channel)
        self._claims = claim_grpc.TaskClaimStoreStub(channel)
        self._results = claim_grpc.TaskResultStoreStub(channel)
        self.retry_delays = retry_delays
        self._wakeup_queue: asyncio.Queue[TaskWakeupHint] | None = None
        self._wakeup_task: asyncio.Task[None] | None = None

    async def _call(self, method: Any, request: Any, *, retry: Retry, extra_time: float = 0.0) -> Any:
        """One unary call (`extra_time` lengthens the deadline: a long poll may wait that long)."""
        timeout = None if self.timeout is None else self.timeout + extra_time
        return await call_rpc(method, request, retry=retry, timeout=timeout, retry_delays=self.retry_delays)

    def _stream(self, method: Any, request: Any) -> Any:
        """Open one server-streaming RPC (a stub method).

        Never retried here: a broken stream ends `wakeups()` with
        `UnavailableError`, and the next `wait_for_wakeup` opens a new one.
        """
        return method(request)

    # -- SnapshotStore -------------------------------------------------------

    async def save_snapshot(self, snapshot: WorkflowSnapshot) -> None:
        await self.save_snapshot_written(snapshot)

    async def save_snapshot_written(self, snapshot: WorkflowSnapshot) -> bool:
        """Like `save_snapshot`; False when the stored snapshot was terminal and kept."""
        request = rpc_pb.SaveSnapshotRequest(snapshot=convert.snapshot_to_proto(snapshot))
        response = await self._call(self._snapshots.SaveSnapshot, request, retry=Retry.SAFE)
        return bool(response.written)

    async def save_task_result(self, instance_id: str, task_id: TaskId | bytes | str, output: bytes) -> None:
        request = rpc_pb.SaveTaskResultRequest(instance_id=instance_id, task_id=_task_id(task_id), output=bytes(output))
        await self._call(self._snapshots.SaveTaskResult, request, retry=Retry.SAFE)

    async def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        request = rpc_pb.LoadSnapshotRequest(instance_id=instance_id)
        response = await self._call(self._snapshots.LoadSnapshot, request, retry=Retry.SAFE)
        return convert.snapshot_from_proto(response.snapshot)

    async def delete_snapshot(self, instance_id: str) -> None:
        request = rpc_pb.DeleteSnapshotRequest(instance_id=instance_id)
        await self._call(self._snapshots.DeleteSnapshot, request, retry=Retry.DONE_IF_NOT_FOUND)

    async def list_snapshots(self) -> list[str]:
        ids: list[str] = []
        after: str | None = None
        while True:
            page, after = await self.list_snapshots_page(after, 1000)
            ids.extend(page)
            if after is None:
                return ids

    async def list_snapshots_page(
        self, after: str | None = None, limit: int = 1000, statuses: Sequence[str] = ()
    ) -> tuple[list[str], str | None]:
        """One page of ids after `after`; returns (ids, cursor for the next page or None)."""
        request = rpc_pb.ListSnapshotsRequest(
            after_instance_id=after or "",
            page_size=limit,
            statuses=[convert.STATUS_TO_PROTO[s] for s in statuses],
        )
        response = await self._call(self._snapshots.ListSnapshots, request, retry=Retry.SAFE)
        return list(response.instance_ids), (response.next_after_instance_id or None)

    # -- SignalStore ---------------------------------------------------------

    async def store_signal(
        self, instance_id: str, kind: SignalKind | str, request: SignalRequest | None = None
    ) -> None:
        """Record a cancel or pause request (replaces an earlier one of that kind)."""
        message = convert.signal_request_to_proto(request or SignalRequest())
        store = sig_pb.StoreSignalRequest(instance_id=instance_id, kind=_kind(kind), request=message)
        await self._call(self._signals.StoreSignal, store, retry=Retry.SAFE)

    async def get_signal(self, instance_id: str, kind: SignalKind | str) -> SignalRequest | None:
        request = sig_pb.GetSignalRequest(instance_id=instance_id, kind=_kind(kind))
        response = await self._call(self._signals.GetSignal, request, retry=Retry.SAFE)
        if not response.HasField("request"):
            return None
        return convert.signal_request_from_proto(response.request, "request")

    async def clear_signal(self, instance_id: str, kind: SignalKind | str) -> None:
        request = sig_pb.ClearSignalRequest(instance_id=instance_id, kind=_kind(kind))
        await self._call(self._signals.ClearSignal, request, retry=Retry.SAFE)

    async def send_event(self, instance_id: str, signal_name: str, payload: bytes) -> bool:
        """Deliver an event; True when it resumed a workflow parked at that signal."""
        request = sig_pb.SendEventRequest(instance_id=instance_id, signal_name=signal_name, payload=bytes(payload))
        response = await self._call(self._signals.SendEvent, request, retry=Retry.KEYED)
        return bool(response.resumed)

    async def consume_event(self, instance_id: str, signal_name: str) -> bytes | None:
        request = sig_pb.ConsumeEventRequest(instance_id=instance_id, signal_name=signal_name)
        response = await self._call(self._signals.ConsumeEvent, request, retry=Retry.KEYED)
        return response.payload if response.HasField("payload") else None

    async def check_and_cancel(self, instance_id: str, interrupted_at_task: TaskId | bytes | str | None = None) -> bool:
        request = sig_pb.CheckAndCancelRequest(instance_id=instance_id)
        if interrupted_at_task is not None:
            request.interrupted_at_task = _task_id(interrupted_at_task)
        return bool((await self._call(self._signals.CheckAndCancel, request, retry=Retry.KEYED)).cancelled)

    async def check_and_pause(self, instance_id: str) -> bool:
        request = sig_pb.CheckAndPauseRequest(instance_id=instance_id)
        return bool((await self._call(self._signals.CheckAndPause, request, retry=Retry.KEYED)).paused)

    async def check_control_signals(
        self, instance_id: str, interrupted_at_task: TaskId | bytes | str | None = None
    ) -> ControlSignal | None:
        request = sig_pb.CheckControlSignalsRequest(instance_id=instance_id)
        if interrupted_at_task is not None:
            request.interrupted_at_task = _task_id(interrupted_at_task)
        response = await self._call(self._signals.CheckControlSignals, request, retry=Retry.KEYED)
        return convert.PROTO_TO_CONTROL_SIGNAL[response.signal]

    async def unpause(self, instance_id: str) -> WorkflowSnapshot:
        request = sig_pb.UnpauseRequest(instance_id=instance_id)
        response = await self._call(self._signals.Unpause, request, retry=Retry.KEYED)
        return convert.snapshot_from_proto(response.snapshot)

    # -- TaskClaimStore --------------------------------------------------------

    async def claim_task(
        self, instance_id: str, task_id: TaskId | bytes | str, worker_id: str, ttl: Seconds | None = None
    ) -> TaskClaim | None:
        """Claim the current task; None when someone else holds it or it is not current."""
        request = claim_pb.ClaimTaskRequest(instance_id=instance_id, task_id=_task_id(task_id), worker_id=worker_id)
        if ttl is not None:
            request.ttl.CopyFrom(_duration(ttl))
        response = await self._call(self._claims.ClaimTask, request, retry=Retry.SAFE)
        return convert.task_claim_from_proto(response.claim) if response.HasField("claim") else None

    async def release_task_claim(self, instance_id: str, task_id: TaskId | bytes | str, worker_id: str) -> None:
        request = claim_pb.ReleaseTaskClaimRequest(
            instance_id=instance_id, task_id=_task_id(task_id), worker_id=worker_id
        )
        await self._call(self._claims.ReleaseTaskClaim, request, retry=Retry.DONE_IF_NOT_FOUND)

    async def extend_task_claim(
        self, instance_id: str, task_id: TaskId | bytes | str, worker_id: str, ttl: Seconds
    ) -> None:
        request = claim_pb.ExtendTaskClaimRequest(
            instance_id=instance_id, task_id=_task_id(task_id), worker_id=worker_id, ttl=_duration(ttl)
        )
        await self._call(self._claims.ExtendTaskClaim, request, retry=Retry.SAFE)

    async def find_available_tasks(
        self,
        worker_id: str,
        limit: int = 10,
        aging_interval: Seconds = timedelta(minutes=5),
        worker_tags: Sequence[str] = (),
    ) -> list[AvailableTask]:
        request = claim_pb.FindAvailableTasksRequest(
            worker_id=worker_id, limit=limit, aging_interval=_duration(aging_interval), worker_tags=list(worker_tags)
        )
        response = await self._call(self._claims.FindAvailableTasks, request, retry=Retry.SAFE)
        return [convert.available_task_from_proto(t) for t in response.tasks]

    async def claim_available_tasks(
        self,
        worker_id: str,
        limit: int = 10,
        ttl: Seconds | None = 30.0,
        aging_interval: Seconds = timedelta(minutes=5),
        worker_tags: Sequence[str] = (),
        *,
        wait: Seconds | None = None,
    ) -> list[AvailableTask]:
        """Fast path: find ready tasks and claim them for `worker_id` in one call.

        With `wait`, a call that finds nothing waits on the server (long
        poll) up to that long for a task, then claims and returns it."""
        request = self._claim_request(worker_id, limit, ttl, aging_interval, worker_tags, wait)
        response = await self._call(
            self._claims.ClaimAvailableTasks, request, retry=Retry.KEYED, extra_time=_seconds(wait)
        )
        return [convert.available_task_from_proto(t) for t in response.tasks]

    async def claim_tasks(
        self,
        worker_id: str,
        limit: int = 10,
        ttl: Seconds | None = 30.0,
        *,
        wait: Seconds | None = None,
        aging_interval: Seconds = timedelta(minutes=5),
        worker_tags: Sequence[str] = (),
    ) -> list[ClaimedTask]:
        """`claim_available_tasks` in the light form a worker loop needs: no
        snapshots are sent or decoded (task id, input, definition hash,
        trace parent, version)."""
        request = self._claim_request(worker_id, limit, ttl, aging_interval, worker_tags, wait)
        request.omit_snapshot = True
        response = await self._call(
            self._claims.ClaimAvailableTasks, request, retry=Retry.KEYED, extra_time=_seconds(wait)
        )
        return [convert.claimed_task_from_proto(t) for t in response.tasks]

    @staticmethod
    def _claim_request(
        worker_id: str,
        limit: int,
        ttl: Seconds | None,
        aging_interval: Seconds,
        worker_tags: Sequence[str],
        wait: Seconds | None,
    ) -> claim_pb.ClaimAvailableTasksRequest:
        request = claim_pb.ClaimAvailableTasksRequest(
            worker_id=worker_id, limit=limit, aging_interval=_duration(aging_interval), worker_tags=list(worker_tags)
        )
        if ttl is not None:
            request.ttl.CopyFrom(_duration(ttl))
        if wait is not None:
            request.wait.CopyFrom(_duration(wait))
        return request

    @staticmethod
    def complete_task_request(
        instance_id: str,
        task_id: TaskId | bytes | str,
        worker_id: str,
        output: bytes,
        next_task_id: TaskId | bytes | str | None = None,
        *,
        final_output: bytes | None = None,
        next_task_priority: int | None = None,
        next_task_tags: Sequence[str] = (),
        claim_next: tuple[Seconds, Seconds] | None = None,
    ) -> claim_pb.CompleteTaskRequest:
        """The CompleteTask request of `complete_task` (with `claim_next` =
        (ttl, aging interval): of `complete_task_and_continue`)."""
        request = claim_pb.CompleteTaskRequest(
            instance_id=instance_id,
            task_id=_task_id(task_id),
            worker_id=worker_id,
            output=bytes(output),
            next_task_tags=list(next_task_tags),
        )
        if next_task_id is not None:
            request.next_task_id = _task_id(next_task_id)
        if next_task_priority is not None:
            request.next_task_priority = next_task_priority
        if final_output is not None:
            request.final_output = bytes(final_output)
        if claim_next is not None:
            request.claim_next_ttl.CopyFrom(_duration(claim_next[0]))
            request.aging_interval.CopyFrom(_duration(claim_next[1]))
        return request

    async def complete_task(
        self,
        instance_id: str,
        task_id: TaskId | bytes | str,
        worker_id: str,
        output: bytes,
        next_task_id: TaskId | bytes | str | None = None,
        *,
        final_output: bytes | None = None,
        next_task_priority: int | None = None,
        next_task_tags: Sequence[str] = (),
    ) -> bool:
        """Fast path: record the output, advance to `next_task_id` (or complete), release; one transaction.

        False, with nothing written, when the claim was lost.
        """
        request = self.complete_task_request(
            instance_id,
            task_id,
            worker_id,
            output,
            next_task_id,
            final_output=final_output,
            next_task_priority=next_task_priority,
            next_task_tags=next_task_tags,
        )
        return bool((await self._call(self._claims.CompleteTask, request, retry=Retry.KEYED)).completed)

    async def complete_task_and_continue(
        self,
        instance_id: str,
        task_id: TaskId | bytes | str,
        worker_id: str,
        output: bytes,
        next_task_id: TaskId | bytes | str,
        ttl: Seconds = 30.0,
        *,
        next_task_priority: int | None = None,
        next_task_tags: Sequence[str] = (),
        aging_interval: Seconds = timedelta(minutes=5),
    ) -> tuple[bool, ClaimedTask | None]:
        """`complete_task`, keeping the workflow: the claim moves to
        `next_task_id` (lifetime `ttl`) in the same transaction.

        Returns (completed, the next task claimed for this worker). The next
        task is None when the service gives the turn to a ready task of
        another workflow that outranks it (the claim is then released and
        the task dispatched as usual), or when the claim was lost (completed
        False, nothing written)."""
        request = self.complete_task_request(
            instance_id,
            task_id,
            worker_id,
            output,
            next_task_id,
            next_task_priority=next_task_priority,
            next_task_tags=next_task_tags,
            claim_next=(ttl, aging_interval),
        )
        response = await self._call(self._claims.CompleteTask, request, retry=Retry.KEYED)
        following = convert.claimed_task_from_proto(response.next) if response.HasField("next") else None
        return bool(response.completed), following

    def worker_session(self, *, linger: Seconds | None = None) -> WorkerSession:
        """A `WorkerSession`: `claim_tasks`, `claim_available_tasks`,
        `complete_task` and `complete_task_and_continue` as messages on one
        stream (the worker path at a fraction of the cost of calls). Use it
        as `async with backend.worker_session() as session:`; one session
        serves any number of tasks of the process.

        `linger`: how long a request made while others await their answers
        waits for more to share its message (never longer than until
        those requests are all queued again); by default 6 ms; 0: never."""
        from sayiir_client.session import WorkerSession

        fixed = None if linger is None else _seconds(linger)
        if fixed is not None and not 0.0 <= fixed <= 1.0:
            raise ValueError(f"linger must be 0 to 1 second, not {fixed}")
        # No request: the session writes its requests on the open stream.
        return WorkerSession(self, lambda: self._stream(self._claims.WorkerSession, None), fixed)

    async def find_hinted_task(self, hint: TaskWakeupHint) -> AvailableTask | None:
        request = claim_pb.FindHintedTaskRequest(hint=convert.wakeup_hint_to_proto(hint))
        response = await self._call(self._claims.FindHintedTask, request, retry=Retry.SAFE)
        return convert.available_task_from_proto(response.task) if response.HasField("task") else None

    async def save_snapshot_fenced(
        self, snapshot: WorkflowSnapshot, task_id: TaskId | bytes | str, worker_id: str
    ) -> bool:
        """Save only while `worker_id` holds the live claim; False when fenced off."""
        request = claim_pb.SaveSnapshotFencedRequest(
            snapshot=convert.snapshot_to_proto(snapshot), task_id=_task_id(task_id), worker_id=worker_id
        )
        return bool((await self._call(self._claims.SaveSnapshotFenced, request, retry=Retry.SAFE)).written)

    async def wakeups(self, worker_tags: Sequence[str] = ()) -> AsyncIterator[TaskWakeupHint]:
        """Task-ready hints as they happen, for tasks these tags allow.

        Ends when the server shuts down; raises `UnavailableError` if the
        connection breaks. Hints are best effort: poll now and then too.
        """
        call = self._stream(self._claims.WatchWakeups, claim_pb.WatchWakeupsRequest(worker_tags=list(worker_tags)))
        try:
            async for event in call:
                if event.HasField("hint"):
                    yield convert.wakeup_hint_from_proto(event.hint)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    def __aiter__(self) -> AsyncIterator[TaskWakeupHint]:
        """`async for hint in backend:` is `backend.wakeups()`."""
        return self.wakeups()

    async def wait_for_wakeup(
        self, timeout: Seconds, worker_tags: Sequence[str] | None = None
    ) -> TaskWakeupHint | None:
        """The next hint, or None after `timeout` (Rust `wait_for_wakeup`).

        Hints are collected in the background from the moment the backend
        connected (see `start_wakeups`), so a hint committed while the
        worker was busy is still returned. With `worker_tags`, hints for
        tasks those tags do not allow are skipped.
        """
        await self.start_wakeups()
        assert self._wakeup_queue is not None
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
        allowed = None if worker_tags is None else set(worker_tags)
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(remaining, 0)):
                    hint = await self._wakeup_queue.get()
            except TimeoutError:
                return None
            if not allowed or set(hint.tags) <= allowed:
                return hint

    def drop_wakeups(self) -> int:
        """Forget the hints collected so far (after a poll that saw them anyway); how many."""
        dropped = 0
        while self._wakeup_queue is not None and not self._wakeup_queue.empty():
            self._wakeup_queue.get_nowait()
            dropped += 1
        return dropped

    async def start_wakeups(self, ready_timeout: float = 10.0) -> None:
        """Start collecting hints in the background (idempotent).

        Returns once the server confirmed the subscription, so every hint
        committed afterwards reaches `wait_for_wakeup`.
        """
        if self._wakeup_task is not None and not self._wakeup_task.done():
            return
        self._wakeup_queue = asyncio.Queue(maxsize=WAKEUP_BUFFER)
        ready = asyncio.Event()
        self._wakeup_task = asyncio.create_task(self._collect_wakeups(self._wakeup_queue, ready))
        await wait_until_set(ready, ready_timeout)

    async def _collect_wakeups(self, queue: asyncio.Queue[TaskWakeupHint], ready: asyncio.Event) -> None:
        call = self._stream(self._claims.WatchWakeups, claim_pb.WatchWakeupsRequest())
        try:
            async for event in call:
                if event.HasField("subscribed"):
                    ready.set()
                    continue
                if queue.full():  # keep the newest hints; the oldest are the stalest
                    queue.get_nowait()
                queue.put_nowait(convert.wakeup_hint_from_proto(event.hint))
        except grpc.aio.AioRpcError:
            pass  # the next wait_for_wakeup starts a new stream
        finally:
            ready.set()
            call.cancel()

    async def _stop_wakeup_stream(self) -> None:
        if self._wakeup_task is not None:
            self._wakeup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._wakeup_task
            self._wakeup_task = None

    # -- TaskResultStore -------------------------------------------------------

    async def load_task_result(self, instance_id: str, task_id: TaskId | bytes | str) -> bytes | None:
        """The stored output of a task; None for unknown tasks or instances."""
        request = claim_pb.LoadTaskResultRequest(instance_id=instance_id, task_id=_task_id(task_id))
        response = await self._call(self._results.LoadTaskResult, request, retry=Retry.SAFE)
        return response.output if response.HasField("output") else None

    async def close(self) -> None:
        await self._stop_wakeup_stream()
        await self.channel.close()


@asynccontextmanager
async def connect(
    target: str = "127.0.0.1:50051",
    *,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    options: Sequence[tuple[str, Any]] = (),
    watch_wakeups: bool = True,
    token: str | None = None,
    tls: bool = False,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
) -> AsyncIterator[GrpcBackend]:
    """Open a channel to the service; yields a `GrpcBackend`, closes it on exit.

    With `watch_wakeups` (the default, as the Rust backend listens from
    connect on), task-ready hints are collected from the start for
    `wait_for_wakeup`; pass False for short-lived admin clients.
    `token` is sent as a bearer token; `tls` (or any certificate) makes the
    channel TLS, with `certificate_chain` and `private_key` for mutual TLS.
    """
    channel = open_channel(
        target,
        token=token,
        tls=tls,
        root_certificates=root_certificates,
        certificate_chain=certificate_chain,
        private_key=private_key,
        options=options,
    )
    backend = GrpcBackend(channel, timeout=timeout, retry_delays=retry_delays)
    try:
        if watch_wakeups:
            await backend.start_wakeups()
        yield backend
    finally:
        await backend.close()

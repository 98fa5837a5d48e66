"""A worker's session: its claims and completions on one stream.

`GrpcBackend.worker_session()` opens a `WorkerSession` (the `WorkerSession`
RPC). Its methods are those of the backend's worker path, with the same
arguments and results; each is a message on the session's stream instead
of a unary call, which costs the worker and the service a fraction of a
call. Requests run concurrently: any number of tasks of one process may
share one session.

Each request carries a fresh `request_id`, its idempotency key: when the
stream breaks, the requests still unanswered are sent again, with the same
ids, on a new stream (the service answers a repeat with the first outcome),
with the backend's retry delays, as `Retry.KEYED` unary calls are.

Every stream message costs both processes far more than a request inside it
(a wakeup of each process, the HTTP/2 frame, gRPC's completion queue), so a
busy session carries several requests per message. A request made while
other requests of the session await their replies waits a moment for more to
join it (its *linger*): at most DEFAULT_LINGER_S, and never longer than
until every request awaiting a reply is queued again. A session with one
request at a time never lingers; under load a step waits a few
milliseconds more and the worker and the service spend less CPU per
request. `worker_session(linger=0)` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc

from sayiir_client.backend import Seconds, _seconds
from sayiir_common import convert
from sayiir_common.errors import BackendError, UnavailableError, error_from_rpc, error_from_status
from sayiir_common.ids import TaskId
from sayiir_common.model import AvailableTask, ClaimedTask
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_pb

if TYPE_CHECKING:
    from sayiir_client.backend import GrpcBackend

# The most requests one message carries (the service answers at most 256
# unanswered requests of a stream at once).
MAX_BATCH = 64

# The longest a request waits for others to join its message. A busy
# worker's step takes tens of milliseconds (most of it waiting for a CPU):
# a few more let two or three requests share a message. A linger under
# MIN_LINGER_S is not worth its timer.
DEFAULT_LINGER_S = 0.006
MIN_LINGER_S = 0.0005

# Every session request is retried as a `Retry.KEYED` call: it has its key
# (request_id), so a repeat is answered with the first outcome.


class _Broken(Exception):
    """The stream ended before the request's reply came."""

    def __init__(self, cause: BackendError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class WorkerSession:
    """One `WorkerSession` stream and the requests waiting on it."""

    def __init__(self, backend: GrpcBackend, open_stream: Callable[[], Any], linger: float | None = None) -> None:
        self._backend = backend
        self._open_stream = open_stream
        self._linger_s = DEFAULT_LINGER_S if linger is None else linger
        # Requests answered soon (not long polls) still awaiting their reply,
        # queued or written; the writer lingers only while some are written.
        self._answered_soon = 0
        self._queued_more = asyncio.Event()
        # request_ids: one random prefix per session and a counter (unique
        # without a system call per request).
        self._ids = map(f"{uuid.uuid4()}-{{}}".format, itertools.count())
        # What the session has written: messages and the requests in them.
        self.messages_written = 0
        self.requests_written = 0
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        # request_id -> (the stream it was sent on, its reply's future)
        self._pending: dict[str, tuple[Any, asyncio.Future[claim_pb.WorkerSessionReply]]] = {}
        # Requests waiting for the stream's writer (`_write_out`), and the writer.
        self._outbox: list[claim_pb.WorkerSessionRequest] = []
        self._writer: asyncio.Task[None] | None = None
        self._writer_call: Any = None
        self._closed = False

    async def __aenter__(self) -> WorkerSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the worker path ----------------------------------------------------

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
        """`GrpcBackend.claim_available_tasks`, on the session."""
        request = self._backend._claim_request(worker_id, limit, ttl, aging_interval, worker_tags, wait)
        reply = await self._request("claim_available_tasks", request, extra_time=_seconds(wait))
        return [convert.available_task_from_proto(t) for t in reply.tasks]

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
        """`GrpcBackend.claim_tasks` (the light form), on the session."""
        request = self._backend._claim_request(worker_id, limit, ttl, aging_interval, worker_tags, wait)
        request.omit_snapshot = True
        reply = await self._request("claim_available_tasks", request, extra_time=_seconds(wait))
        return [convert.claimed_task_from_proto(t) for t in reply.tasks]

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
        """`GrpcBackend.complete_task`, on the session."""
        request = self._backend.complete_task_request(
            instance_id,
            task_id,
            worker_id,
            output,
            next_task_id,
            final_output=final_output,
            next_task_priority=next_task_priority,
            next_task_tags=next_task_tags,
        )
        return bool((await self._request("complete_task", request)).completed)

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
        """`GrpcBackend.complete_task_and_continue`, on the session."""
        request = self._backend.complete_task_request(
            instance_id,
            task_id,
            worker_id,
            output,
            next_task_id,
            next_task_priority=next_task_priority,
            next_task_tags=next_task_tags,
            claim_next=(ttl, aging_interval),
        )
        reply = await self._request("complete_task", request)
        following = convert.claimed_task_from_proto(reply.next) if reply.HasField("next") else None
        return bool(reply.completed), following

    async def close(self) -> None:
        """Close the stream once the requests under way are answered."""
        self._closed = True
        call, reader = self._call, self._reader
        if call is None or reader is None:
            return
        try:
            writer = self._writer
            if writer is not None:
                await writer
            await call.done_writing()
            await reader
        except (grpc.aio.AioRpcError, asyncio.CancelledError, grpc.aio.UsageError):
            reader.cancel()

    # -- the stream ---------------------------------------------------------

    async def _request(self, kind: str, message: Any, *, extra_time: float = 0.0) -> Any:
        """Send one request and return its reply's `kind` field; raise its error.

        Repeated with the same `request_id` on a new stream when the stream
        breaks, or when the service answers UNAVAILABLE, up to the backend's
        retry delays.
        """
        request = claim_pb.WorkerSessionRequest(request_id=next(self._ids))
        getattr(request, kind).CopyFrom(message)
        timeout = self._backend.timeout
        delays: Sequence[float] = self._backend.retry_delays
        attempt = 0
        while True:
            try:
                reply = await self._exchange(
                    request, None if timeout is None else timeout + extra_time, soon=extra_time == 0.0
                )
                if reply.WhichOneof("result") != "error":
                    return getattr(reply, kind)
                error = error_from_status(reply.error)
            except _Broken as broken:
                error = broken.cause
            if error.code != grpc.StatusCode.UNAVAILABLE or attempt >= len(delays):
                raise error
            await asyncio.sleep(delays[attempt])
            attempt += 1

    async def _exchange(self, request: claim_pb.WorkerSessionRequest, timeout: float | None, soon: bool) -> Any:
        """`soon`: not a long poll (answered as soon as the service has run it)."""
        if self._closed:
            raise BackendError("the worker session is closed", grpc.StatusCode.FAILED_PRECONDITION)
        call = self._ensure_stream()
        waiter: asyncio.Future[claim_pb.WorkerSessionReply] = asyncio.get_running_loop().create_future()
        self._pending[request.request_id] = (call, waiter)
        if soon:
            self._answered_soon += 1
        try:
            self._send(call, request)
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise BackendError(
                f"no answer on the worker session within {timeout} s", grpc.StatusCode.DEADLINE_EXCEEDED
            ) from None
        finally:
            self._pending.pop(request.request_id, None)
            if soon:
                self._answered_soon -= 1
                self._queued_more.set()

    def _ensure_stream(self) -> Any:
        if self._call is None:
            self._call = self._open_stream()
            self._outbox = []
            self._reader = asyncio.create_task(self._read(self._call))
        return self._call

    def _send(self, call: Any, request: claim_pb.WorkerSessionRequest) -> None:
        """Queue `request` for `call`'s writer, started when none is writing."""
        self._outbox.append(request)
        self._queued_more.set()
        if self._writer is None or self._writer.done() or self._writer_call is not call:
            # A writer of a broken stream stops at its next turn.
            self._writer_call = call
            self._writer = asyncio.create_task(self._write_out(call))

    async def _write_out(self, call: Any) -> None:
        """Write the queued requests: all those queued while a write was under
        way go as one message (a batch), so a busy worker pays one stream
        message for several requests; a busy session lingers first (see the
        module)."""
        await self._linger()
        while self._outbox and self._call is call:
            ready, self._outbox = self._outbox[:MAX_BATCH], self._outbox[MAX_BATCH:]
            message = ready[0] if len(ready) == 1 else claim_pb.WorkerSessionRequest(batch=ready)
            self.messages_written += 1
            self.requests_written += len(ready)
            try:
                await call.write(message)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                # The stream is gone: its waiters fail, and are repeated on a new one.
                self._broken(call, exc)
                return

    def _awaiting_written(self) -> bool:
        """Are requests that will be answered soon written and unanswered
        (their answers are likely to bring more requests)?"""
        return self._answered_soon > len(self._outbox)

    async def _linger(self) -> None:
        if self._linger_s < MIN_LINGER_S or not self._awaiting_written():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._linger_s):
                while self._awaiting_written() and len(self._outbox) < MAX_BATCH:
                    self._queued_more.clear()
                    await self._queued_more.wait()

    async def _read(self, call: Any) -> None:
        try:
            while True:
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    self._broken(call, None)
                    return
                for one in reply.batch or (reply,):
                    sent = self._pending.get(one.request_id)
                    if sent is not None and sent[0] is call and not sent[1].done():
                        sent[1].set_result(one)
        except grpc.aio.AioRpcError as exc:
            self._broken(call, exc)
        except asyncio.CancelledError:
            self._broken(call, None)
            raise

    def _broken(self, call: Any, exc: BaseException | None) -> None:
        """The stream `call` ended: every request still waiting on it is failed (and repeated elsewhere)."""
        if self._call is call:
            self._call = None
        if isinstance(exc, grpc.aio.AioRpcError):
            cause = error_from_rpc(exc)
        else:
            cause = UnavailableError("the worker session's stream ended", grpc.StatusCode.UNAVAILABLE)
        for sent_on, waiter in self._pending.values():
            if sent_on is call and not waiter.done():
                waiter.set_exception(_Broken(cause))

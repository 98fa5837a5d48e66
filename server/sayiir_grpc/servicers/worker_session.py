"""WorkerSession: a worker's ClaimAvailableTasks and CompleteTask as messages
on one stream.

A unary call costs the server (and the worker) several times what a message
on an open stream costs: a new HTTP/2 stream, headers both ways, a call
object, the interceptors. A fleet makes one claim and one completion per
step, so the session carries those as messages; each runs exactly as its
unary call (the same servicer method, its idempotency key the request's
`request_id`), and each finished request is answered at once, in any order.

The stream lives as long as the worker: it ends when the client closes it
(after the answers still owed), on a message that does not parse (the only
error that ends it: no `request_id` to answer), or when the server stops
(answers owed are sent, then UNAVAILABLE: the client sends its unanswered
requests again, with the same ids, on a new stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc
import structlog
from google.protobuf.message import Message

from sayiir_common import checks
from sayiir_common.errors import InvalidArgumentError, ResourceExhaustedError, UnavailableError, status_details
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as rpc_pb
from sayiir_grpc.errors import abort, error_metadata, status_for
from sayiir_grpc.idempotency import SESSION_REQUEST_KEY
from sayiir_grpc.observability import Metrics, Undecodable
from sayiir_grpc.servicers import Context
from sayiir_grpc.wakeup import WakeupHub

log = structlog.get_logger(__name__)

# Unanswered requests of one stream; past it a request is answered
# RESOURCE_EXHAUSTED without running (a worker never needs more in flight
# than it runs tasks at once, plus its long poll).
MAX_UNANSWERED = 256

REQUEST_ID_FIELD = "request_id"

# A reply to a batching client that is ready while others of the session
# are under way (not long polls) waits for them, at most LINGER_S, so that
# they go as one message: requests of one batch usually finish within a
# few milliseconds of each other, and each message costs both processes
# far more than a reply inside it. A client that sends one request at a
# time never batches, and never waits.
LINGER_S = 0.006


class SessionServicer(Protocol):
    """What a session needs of the TaskClaimStore servicer."""

    hub: WakeupHub
    metrics: Metrics | None

    def claim_available_tasks(
        self, request: rpc_pb.ClaimAvailableTasksRequest, context: Context
    ) -> Awaitable[rpc_pb.ClaimAvailableTasksResponse]: ...

    def complete_task(
        self, request: rpc_pb.CompleteTaskRequest, context: Context
    ) -> Awaitable[rpc_pb.CompleteTaskResponse]: ...


# The call each request kind runs, by its `oneof call` field (also the
# reply's field): the RPC it stands for (its metrics label) and the servicer
# method.
_CALLS: dict[str, tuple[str, Callable[[SessionServicer], Callable[[Any, Context], Awaitable[Message]]]]] = {
    "claim_available_tasks": ("ClaimAvailableTasks", lambda s: s.claim_available_tasks),
    "complete_task": ("CompleteTask", lambda s: s.complete_task),
}


async def answer(
    servicer: SessionServicer, message: rpc_pb.WorkerSessionRequest, context: Context
) -> rpc_pb.WorkerSessionReply:
    """Run one request as its unary call; its reply, or the status that call would end with."""
    reply = rpc_pb.WorkerSessionReply(request_id=message.request_id)
    kind = message.WhichOneof("call")
    method = _CALLS[kind][0] if kind is not None else "WorkerSession"
    request: Any = getattr(message, kind) if kind is not None else message
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        key = checks.check_request_key(REQUEST_ID_FIELD, message.request_id)
        if kind is None:
            raise checks.InvalidField("call", "must be set: claim_available_tasks or complete_task")
        # This task's own context: the key reaches @idempotent for this request only.
        SESSION_REQUEST_KEY.set(key)
        result = await _CALLS[kind][1](servicer)(request, context)
        getattr(reply, kind).CopyFrom(result)
    except Exception as exc:
        code, text, error_kind = status_for(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("unexpected error", method=method, session=True)
        reply.error = status_details(code, text, error_kind, error_metadata(exc, request))
    finally:
        if servicer.metrics is not None:
            servicer.metrics.observe_call(method, code.name, time.perf_counter() - started)
    return reply


def is_long_poll(message: rpc_pb.WorkerSessionRequest) -> bool:
    claim = message.claim_available_tasks
    return message.HasField("claim_available_tasks") and claim.HasField("wait") and claim.wait.ToNanoseconds() > 0


def refused(message: rpc_pb.WorkerSessionRequest, error: Exception) -> rpc_pb.WorkerSessionReply:
    """The reply to a request refused without running, with the status `status_for` gives `error`."""
    code, text, kind = status_for(error)
    details = status_details(code, text, kind, error_metadata(error, message))
    return rpc_pb.WorkerSessionReply(request_id=message.request_id, error=details)


def too_many(message: rpc_pb.WorkerSessionRequest) -> rpc_pb.WorkerSessionReply:
    text = f"more than {MAX_UNANSWERED} unanswered requests on this session; wait for answers before sending more"
    return refused(message, ResourceExhaustedError(text))


def refused_nested(message: rpc_pb.WorkerSessionRequest) -> rpc_pb.WorkerSessionReply:
    return refused(message, checks.InvalidField("batch", "a request of a batch may not carry a batch of its own"))


class _Session:
    """What the reading side tells the writing side of one session."""

    def __init__(self) -> None:
        self.replies: deque[rpc_pb.WorkerSessionReply] = deque()
        self.wake = asyncio.Event()
        # Requests not yet answered, counted down before the reply is queued,
        # so the last reply taken can tell that nothing else is owed.
        self.owed = 0
        self.read_all = False
        self.stopping = False
        self.broken: BaseException | None = None
        self.malformed: str | None = None
        # Replies go batched once the client has sent a batch (it reads them).
        self.batching = False
        # Owed requests that are not long polls.
        self.owed_soon = 0

    def post(self, reply: rpc_pb.WorkerSessionReply) -> None:
        self.replies.append(reply)
        self.wake.set()

    def should_linger(self) -> bool:
        return self.batching and self.owed_soon > 0

    async def wait_for_siblings(self) -> None:
        """Wait until nothing answered soon is owed, up to LINGER_S."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_S):
                while self.owed_soon and not (self.stopping or self.broken):
                    self.wake.clear()
                    await self.wake.wait()

    def next_message(self) -> rpc_pb.WorkerSessionReply:
        """The replies ready now, as one message (batched when the client batches)."""
        replies = self.replies
        if not self.batching or len(replies) == 1:
            return replies.popleft()
        ready = [replies.popleft() for _ in range(min(len(replies), MAX_UNANSWERED))]
        return rpc_pb.WorkerSessionReply(batch=ready)


async def serve(
    servicer: SessionServicer, requests: AsyncIterator[Any], context: Context
) -> AsyncIterator[rpc_pb.WorkerSessionReply]:
    """The session's replies: one per request, each as soon as it is ready."""
    session = _Session()
    running: set[asyncio.Task[None]] = set()

    async def run(message: rpc_pb.WorkerSessionRequest, soon: bool) -> None:
        try:
            reply = await answer(servicer, message, context)
        finally:
            session.owed -= 1
            if soon:
                session.owed_soon -= 1
        session.post(reply)

    def start(message: rpc_pb.WorkerSessionRequest) -> None:
        if message.batch:
            session.post(refused_nested(message))
        elif session.owed >= MAX_UNANSWERED:
            session.post(too_many(message))
        else:
            session.owed += 1
            soon = not is_long_poll(message)
            session.owed_soon += 1 if soon else 0
            task = asyncio.create_task(run(message, soon))
            running.add(task)
            task.add_done_callback(running.discard)

    async def read() -> None:
        try:
            async for message in requests:
                if isinstance(message, Undecodable):
                    session.malformed = message.error
                    break
                if message.batch:
                    session.batching = True
                    for item in message.batch:
                        start(item)
                else:
                    start(message)
        except Exception as exc:  # the stream broke: end the session with it
            session.broken = exc
        session.read_all = True
        session.wake.set()

    async def watch_stop() -> None:
        await servicer.hub.stopped.wait()
        session.stopping = True
        session.wake.set()

    reader = asyncio.create_task(read())
    watcher = asyncio.create_task(watch_stop())
    finished = False
    try:
        while True:
            if session.replies:
                if session.should_linger():
                    await session.wait_for_siblings()
                yield session.next_message()
                continue
            if session.broken is not None:
                raise session.broken
            if session.stopping or (session.read_all and session.owed == 0):
                break
            session.wake.clear()
            await session.wake.wait()
        finished = True
    finally:
        watcher.cancel()
        reader.cancel()
        if not finished:
            # The client went away (or the stream broke): as with a unary
            # call whose caller left, the requests under way are cancelled.
            for task in list(running):
                task.cancel()
    malformed = session.malformed
    if malformed is not None:
        await abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"a session message is not a valid message of this method (WorkerSessionRequest): {malformed}",
            InvalidArgumentError.kind,
            {"field": "request"},
        )
    if servicer.hub.stopping:
        # Answer what is under way (a long poll returns at once when the
        # server stops), then tell the client to go on elsewhere.
        if running:
            await asyncio.wait(set(running))
        while session.replies:
            yield session.next_message()
        await abort(
            context,
            grpc.StatusCode.UNAVAILABLE,
            "the server is stopping: send the unanswered requests again, with the same request_id, on a new stream",
            UnavailableError.kind,
        )

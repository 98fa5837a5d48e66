"""Every mutating call runs as one transaction, and answers a repeat of its key.

`@idempotent(Reply)` wraps a mutating servicer method. The call, with every
statement its store functions run, becomes one PostgreSQL transaction
(`Database.one_transaction`). When the client sends an idempotency key (the
`x-request-id` metadata, one per logical call and reused on its retries),
the serialized reply is stored under the key in that same transaction; a
repeat of the key answers the stored reply without running the call again.

What each failure then means:

- lost before COMMIT was sent: nothing was written, the call is run again
  here (up to twice) and, if that fails too, answered UNAVAILABLE: safe to
  retry;
- lost while COMMIT was under way: with a key, the call is run again and
  finds its stored outcome (or that it never committed); without a key the
  outcome is unknown and the answer is UNKNOWN (`OutcomeUnknownError`),
  which no client retries blindly;
- a refusal (NotFound, ClaimLost, ...) writes nothing and stores nothing: a
  repeat runs again.

The same key with another method or another request is refused with
INVALID_ARGUMENT naming `x-request-id`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

import asyncpg
import grpc
import structlog

from sayiir_common.checks import InvalidField, check_request_key
from sayiir_common.errors import OutcomeUnknownError, UnavailableError
from sayiir_grpc.db import RETRY_DELAYS, Database
from sayiir_grpc.errors import is_transient
from sayiir_grpc.stores import idempotency as store

log = structlog.get_logger(__name__)

REQUEST_KEY_METADATA = "x-request-id"


class _Message(Protocol):
    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


Reply = TypeVar("Reply", bound=Any)
Context = grpc.aio.ServicerContext[Any, Any]
Method = Callable[[Any, Any, Context], Awaitable[Reply]]


# The key of a worker session's request (its checked `request_id`), set in
# the task that runs it: one stream carries many requests, so the key cannot
# come from the stream's metadata.
SESSION_REQUEST_KEY: ContextVar[str | None] = ContextVar("sayiir_session_request_key", default=None)


def request_key(context: Context) -> str | None:
    """The call's idempotency key, or None; INVALID_ARGUMENT when malformed."""
    in_session = SESSION_REQUEST_KEY.get()
    if in_session is not None:
        return in_session
    for name, value in context.invocation_metadata() or ():
        if name == REQUEST_KEY_METADATA:
            return check_request_key(REQUEST_KEY_METADATA, value)
    return None


def request_hash(request: _Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


def idempotent(reply_type: Callable[[], Reply], name: str | None = None) -> Callable[[Method[Reply]], Method[Reply]]:
    """Run the method as one transaction, keyed by `x-request-id` when sent.

    Stored keys name their call by `name` (default: the method's name); a
    repeat must name the same call, so a stored name never changes.
    """

    def decorate(method: Method[Reply]) -> Method[Reply]:
        rpc = name or method.__name__

        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: Context) -> Reply:
            db: Database = self.db
            key = request_key(context)
            fingerprint = request_hash(request) if key is not None else b""

            async def body(conn: asyncpg.Connection) -> Reply:
                if key is not None:
                    stored = await store.lookup(conn, key)
                    if stored is not None:
                        return _replay(reply_type, stored, rpc, fingerprint)
                reply = await method(self, request, context)
                if key is not None:
                    await store.record(conn, key, rpc, fingerprint, reply.SerializeToString())
                return reply

            attempt = 0
            while True:
                try:
                    return await db.one_transaction(rpc, body)
                except asyncpg.UniqueViolationError as exc:
                    if key is None or exc.table_name != "sayiir_grpc_idempotency_keys":
                        raise
                    # A concurrent call with the same key committed first: run
                    # again, which answers its stored outcome.
                    if attempt >= len(RETRY_DELAYS):
                        raise
                except OutcomeUnknownError as exc:
                    if key is None:
                        raise
                    if attempt >= len(RETRY_DELAYS):
                        # With its key, a later repeat is safe: say so.
                        raise UnavailableError(
                            f"{rpc}: database unavailable; repeat with the same x-request-id"
                        ) from exc

                except Exception as exc:
                    # Lost before COMMIT: nothing was written, running again is safe.
                    if not is_transient(exc) or attempt >= len(RETRY_DELAYS):
                        raise
                log.warning("call repeated after a database failure", rpc=rpc, keyed=key is not None)
                await asyncio.sleep(RETRY_DELAYS[attempt])
                attempt += 1

        return wrapper

    return decorate


def _replay(reply_type: Callable[[], Reply], stored: store.StoredOutcome, rpc: str, fingerprint: bytes) -> Reply:
    if stored.rpc != rpc or stored.request_hash != fingerprint:
        raise InvalidField(
            REQUEST_KEY_METADATA,
            f"this key was already used for another request ({stored.rpc}); send a new key for each logical call",
        )
    reply = reply_type()
    reply.ParseFromString(stored.outcome)
    return reply

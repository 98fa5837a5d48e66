"""Every mutating call runs as one transaction, and answers a repeat of its key.

`@idempotent(Reply)` wraps a mutating servicer method. The call, with every
statement its store functions run, becomes one PostgreSQL transaction
(`Database.one_transaction`). When the client sends an idempotency key (the
`x-request-id` metadata, one per logical call and reused on its retries),
the serialized reply is stored under the key in that same transaction; a
repeat of the key answers the stored reply without applying the call again.

The key is checked optimistically, since almost every keyed call is a
first attempt: the first run does not look the key up (one round trip
less), it runs the method and stores the reply. Two things can reveal that
the key already has a stored outcome (an earlier attempt that committed, or
a concurrent one that committed first):

- the INSERT of the reply fails with a unique violation: the run is rolled
  back and the call run again, looking the key up first, which answers the
  stored reply;
- the method refuses (NotFound, ClaimLost, ...), perhaps because the earlier
  attempt already did the work (a repeated ReleaseTaskClaim finds the claim
  gone): the key is looked up in the same transaction before the refusal is
  answered, and a stored outcome is answered instead, with nothing of this
  run written (or, if a PostgreSQL error had aborted the transaction, the
  call is run again looking the key up first).

Every rerun (after these, or after a database failure) looks the key up
first and runs the method only when nothing is stored under it.

What each failure then means:

- lost before COMMIT was sent: nothing was written, the call is run again
  here (up to twice) and, if that fails too, answered UNAVAILABLE: safe to
  retry;
- lost while COMMIT was under way: with a key, the call is run again and
  finds its stored outcome (or that it never committed); without a key the
  outcome is unknown and the answer is UNKNOWN (`OutcomeUnknownError`),
  which no client retries blindly;
- a refusal (NotFound, ClaimLost, ...) writes nothing and stores nothing: a
  repeat runs again (and answers the stored outcome if another attempt
  with the key committed meanwhile).

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
from sayiir_common.errors import BackendError, OutcomeUnknownError, UnavailableError
from sayiir_grpc.db import RETRY_DELAYS, Database
from sayiir_grpc.errors import is_transient
from sayiir_grpc.stores import idempotency as store

log = structlog.get_logger(__name__)

REQUEST_KEY_METADATA = "x-request-id"
KEY_TABLE = "sayiir_grpc_idempotency_keys"

# The service's refusals: raised by Python code, so the transaction is still
# usable (unless a swallowed PostgreSQL error aborted it: `_raise_if_stored`).
REFUSALS = (BackendError, InvalidField)


class _Message(Protocol):
    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


Reply = TypeVar("Reply", bound=Any)
Context = grpc.aio.ServicerContext[Any, Any]
Method = Callable[[Any, Any, Context], Awaitable[Reply]]


# The key of a worker session's request (its checked `request_id`), set in
# the task that runs it: one stream carries many requests, so the key cannot
# come from the stream's metadata.
SESSION_REQUEST_KEY: ContextVar[str | None] = ContextVar("sayiir_session_request_key", default=None)


# Set by `one_statement_or_none` for the transaction path that follows it
# in the same task, read (and cleared) by `@idempotent`'s first run.
_KEY_MAY_BE_STORED: ContextVar[bool] = ContextVar("sayiir_key_may_be_stored", default=False)


class _StoredOutcomeFound(Exception):
    """A refused first run found the key's stored outcome; raised to roll the run back."""

    def __init__(self, stored: store.StoredOutcome) -> None:
        super().__init__("stored outcome found")
        self.stored = stored


class _LookUpFirst(Exception):
    """A refused first run could not look its key up (the transaction was aborted)."""


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


Outcome = TypeVar("Outcome")


async def one_statement_or_none(rpc: str, attempt: Awaitable[Outcome | None]) -> Outcome | None:
    """Run a keyed call's one-statement path (its writes and its key in one
    autocommit statement); None sends the call down its keyed transaction
    path: when the statement could not decide, when the key is already
    stored (a repeat), or when the outcome is unknown (the transaction path
    answers the last two with the stored outcome, or runs the call once)."""
    try:
        return await attempt
    except Exception as exc:
        if not isinstance(exc, asyncpg.UniqueViolationError) and not is_transient(exc):
            raise
        log.info("one-statement path left to the transaction path", rpc=rpc, error=type(exc).__name__)
        # The key is stored (a repeat) or may be (an unknown outcome): the
        # transaction path looks it up before running anything.
        _KEY_MAY_BE_STORED.set(True)
        return None


# What a repeat is answered with, from the stored reply (parsed), the
# servicer and the request: for a reply stored in outline (`stored_as`).
Replay = Callable[[Any, Reply, Any], Awaitable[Reply]]


def idempotent(
    reply_type: Callable[[], Reply],
    name: str | None = None,
    stored_as: Callable[[Reply], bytes] | None = None,
    replay: Replay[Reply] | None = None,
    also_named: tuple[str, ...] = (),
) -> Callable[[Method[Reply]], Method[Reply]]:
    """Run the method as one transaction, keyed by `x-request-id` when sent.

    Stored keys name their call by `name` (default: the method's name); a
    repeat must name the same call, so a stored name never changes, except
    with the form of what is stored (then the old name goes in
    `also_named`, still answered). The stored outcome is the serialized
    reply, or `stored_as(reply)` (a reply of the same type, in outline); a
    repeat is answered with the stored reply, or with what `replay` makes
    of it.
    """

    def decorate(method: Method[Reply]) -> Method[Reply]:
        rpc = name or method.__name__
        names = (rpc, *also_named)

        async def replayed(servicer: Any, stored: store.StoredOutcome, request: Any, fingerprint: bytes) -> Reply:
            reply = _replay(reply_type, stored, names, fingerprint)
            return reply if replay is None else await replay(servicer, reply, request)

        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: Context) -> Reply:
            db: Database = self.db
            key = request_key(context)
            fingerprint = request_hash(request) if key is not None else b""
            # False for the optimistic first run; every rerun looks the key up
            # first, and so does a call that a one-statement path left
            # because its key may be stored already.
            look_up_first = _KEY_MAY_BE_STORED.get()
            _KEY_MAY_BE_STORED.set(False)

            async def body(conn: asyncpg.Connection) -> Reply:
                if key is not None and look_up_first:
                    stored = await store.lookup(conn, key)
                    if stored is not None:
                        return await replayed(self, stored, request, fingerprint)
                try:
                    reply = await method(self, request, context)
                except REFUSALS:
                    if key is not None and not look_up_first:
                        await _raise_if_stored(conn, key)
                    raise
                if key is not None:
                    outcome = reply.SerializeToString() if stored_as is None else stored_as(reply)
                    await store.record(conn, key, rpc, fingerprint, outcome)
                return reply

            attempt = 0
            while True:
                try:
                    return await db.one_transaction(rpc, body)
                except _StoredOutcomeFound as found:
                    # The refusal came from an earlier attempt that committed: its reply
                    # is the answer. (Raised, not returned: whatever the refused run
                    # wrote before refusing is rolled back.)
                    return await replayed(self, found.stored, request, fingerprint)
                except _LookUpFirst:
                    # Not a database failure: no delay, no retry used up (happens once).
                    look_up_first = True
                    continue
                except asyncpg.UniqueViolationError as exc:
                    if key is None or exc.table_name != KEY_TABLE:
                        raise
                    if not look_up_first:
                        # The optimistic run found the key taken (by an earlier attempt,
                        # or a concurrent one that committed first): answer its outcome.
                        look_up_first = True
                        continue
                    # A concurrent call with the same key committed between our
                    # lookup and our insert: run again, which answers its outcome.
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
                # Reruns look up first, as every run did before: after a lost
                # COMMIT the earlier run may well have committed.
                look_up_first = True

        return wrapper

    return decorate


async def _raise_if_stored(conn: asyncpg.Connection, key: str) -> None:
    """Before a first run's refusal is answered: was it caused by an earlier attempt that committed?"""
    try:
        stored = await store.lookup(conn, key)
    except asyncpg.InFailedSQLTransactionError:
        raise _LookUpFirst from None
    if stored is not None:
        raise _StoredOutcomeFound(stored)


def _replay(
    reply_type: Callable[[], Reply], stored: store.StoredOutcome, names: tuple[str, ...], fingerprint: bytes
) -> Reply:
    if stored.rpc not in names or stored.request_hash != fingerprint:
        raise InvalidField(
            REQUEST_KEY_METADATA,
            f"this key was already used for another request ({stored.rpc}); send a new key for each logical call",
        )
    reply = reply_type()
    reply.ParseFromString(stored.outcome)
    return reply

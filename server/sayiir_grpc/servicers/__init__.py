"""Thin gRPC servicers: decode the request, call a store function, encode.

`rpc` wraps every handler so that any exception becomes the status chosen by
`sayiir_grpc.errors.status_for`, with the error kind in the trailers (`errors.abort`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog

from sayiir_grpc.errors import abort, error_metadata, status_for

log = structlog.get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Req, Context], Awaitable[Resp]]


def rpc(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Req, context: Context) -> Resp:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message, kind = status_for(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("unexpected error", method=handler.__name__)
            await abort(context, code, message, kind, error_metadata(exc, request))

    return wrapper

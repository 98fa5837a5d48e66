"""TLS, mutual TLS and bearer-token authentication.

Tokens come from a file (one per line, `#` comments) and/or the
SAYIIR_AUTH_TOKENS variable (comma-separated). Every call must carry
`authorization: Bearer <token>`; a missing or unknown token gets
UNAUTHENTICATED. The comparison runs in constant time against every
configured token, so timing tells nothing about how close a guess was.
The health service stays open: load balancers and orchestrators probe it
without credentials.

A token may name a role after it (`TOKEN reader`, `TOKEN worker`,
`TOKEN operator`); a token without one has full access. A call the role
does not allow gets PERMISSION_DENIED (the table: `allowed` below and
docs/security.md).
"""

from __future__ import annotations

import enum
import hmac
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from sayiir_common.proto.sayiir.v1 import (
    operator_pb2,
    signal_store_pb2,
    snapshot_store_pb2,
    task_claim_store_pb2,
)
from sayiir_grpc.errors import abort

AUTH_METADATA = "authorization"
UNAUTHENTICATED_MESSAGE = "a valid bearer token is required"
# The ErrorInfo reasons of refused tokens (not Rust BackendError variants).
DENIED_KINDS = {
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
}
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


class SecurityConfigError(ValueError):
    """TLS or token settings that cannot work; the message names the setting."""


class Role(enum.Enum):
    READER = "reader"
    WORKER = "worker"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Token:
    secret: bytes
    # None: a token listed without a role, with full access.
    role: Role | None = None


def _service(module: Any, name: str) -> str:
    full_name: str = module.DESCRIPTOR.services_by_name[name].full_name
    return full_name


def _methods(module: Any, service: str, *names: str) -> set[str]:
    descriptor = module.DESCRIPTOR.services_by_name[service]
    return {f"/{descriptor.full_name}/{descriptor.methods_by_name[n].name}" for n in names}


# The store services a worker uses; a worker role may call all of them.
WORKER_SERVICES = frozenset(
    {
        _service(snapshot_store_pb2, "SnapshotStore"),
        _service(signal_store_pb2, "SignalStore"),
        _service(task_claim_store_pb2, "TaskClaimStore"),
        _service(task_claim_store_pb2, "TaskResultStore"),
    }
)
# What a reader may call: the operator's reads and the store's loads. Nothing
# that writes, claims or consumes.
READER_METHODS = frozenset(
    _methods(
        operator_pb2,
        "WorkflowOperator",
        "ListWorkflows",
        "DescribeWorkflow",
        "ListWorkflowHistory",
        "GetWorkflowVersion",
        "ListClaims",
    )
    | _methods(snapshot_store_pb2, "SnapshotStore", "LoadSnapshot", "ListSnapshots")
    | _methods(signal_store_pb2, "SignalStore", "GetSignal")
    | _methods(task_claim_store_pb2, "TaskResultStore", "LoadTaskResult")
)
# Server reflection only describes the API: every authenticated role may use it.
REFLECTION_PREFIX = "/grpc.reflection."


def allowed(role: Role | None, method: str) -> bool:
    """Whether a token of `role` may call `method` (`/package.Service/Method`)."""
    if role is None or role is Role.OPERATOR or method.startswith(REFLECTION_PREFIX):
        return True
    if role is Role.READER:
        return method in READER_METHODS
    return method.split("/")[1] in WORKER_SERVICES


def _parse_token(text: str, source: str) -> Token:
    parts = text.split()
    if len(parts) > 2:
        raise SecurityConfigError(f"{source}: a token line is `TOKEN` or `TOKEN ROLE`, got {len(parts)} words")
    secret = parts[0]
    if len(secret) < 16:
        raise SecurityConfigError("every auth token must be at least 16 characters (SAYIIR_AUTH_TOKENS*)")
    if len(parts) == 1:
        return Token(secret.encode())
    try:
        return Token(secret.encode(), Role(parts[1].lower()))
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise SecurityConfigError(f"{source}: unknown token role {parts[1]!r} (one of {roles})") from None


def load_tokens(tokens_file: str | None, tokens: str | None) -> list[Token]:
    found: list[Token] = []
    if tokens_file:
        try:
            lines = Path(tokens_file).read_text().splitlines()
        except OSError as exc:
            raise SecurityConfigError(f"SAYIIR_AUTH_TOKENS_FILE cannot be read: {exc.strerror}") from None
        found += [
            _parse_token(line, "SAYIIR_AUTH_TOKENS_FILE")
            for line in lines
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if tokens:
        found += [_parse_token(t, "SAYIIR_AUTH_TOKENS") for t in tokens.split(",") if t.strip()]
    return found


def server_credentials(
    cert_file: str | None, key_file: str | None, client_ca_file: str | None
) -> grpc.ServerCredentials | None:
    """TLS credentials, requiring client certificates when a client CA is given."""
    if not cert_file and not key_file:
        if client_ca_file:
            raise SecurityConfigError("SAYIIR_TLS_CLIENT_CA_FILE needs SAYIIR_TLS_CERT_FILE and SAYIIR_TLS_KEY_FILE")
        return None
    if not (cert_file and key_file):
        raise SecurityConfigError("SAYIIR_TLS_CERT_FILE and SAYIIR_TLS_KEY_FILE go together")

    def read(path: str, setting: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise SecurityConfigError(f"{setting} cannot be read: {exc.strerror}") from None

    chain = read(cert_file, "SAYIIR_TLS_CERT_FILE")
    key = read(key_file, "SAYIIR_TLS_KEY_FILE")
    client_ca = read(client_ca_file, "SAYIIR_TLS_CLIENT_CA_FILE") if client_ca_file else None
    check_tls_files(cert_file, key_file, client_ca_file)
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc).replace("_", " ").lower()


def check_tls_files(cert_file: str, key_file: str, client_ca_file: str | None) -> None:
    """Refuse, naming the setting, what gRPC would only refuse as "Failed to bind"."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            probe.load_verify_locations(cert_file)
        except ssl.SSLError:
            raise SecurityConfigError(
                f"SAYIIR_TLS_CERT_FILE holds no usable PEM certificate ({_ssl_reason(exc)})"
            ) from None
        raise SecurityConfigError(
            f"SAYIIR_TLS_KEY_FILE is not the private key of SAYIIR_TLS_CERT_FILE ({_ssl_reason(exc)})"
        ) from None
    if client_ca_file:
        try:
            context.load_verify_locations(client_ca_file)
        except ssl.SSLError as exc:
            raise SecurityConfigError(
                f"SAYIIR_TLS_CLIENT_CA_FILE holds no usable PEM certificate ({_ssl_reason(exc)})"
            ) from None


def matching_token(presented: bytes, tokens: list[Token]) -> Token | None:
    found = None
    for token in tokens:  # no early exit: the time taken does not depend on which token matched
        if hmac.compare_digest(presented, token.secret) and found is None:
            found = token
    return found


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        if details.method in OPEN_METHODS:
            return await continuation(details)
        presented = b""
        for key, value in details.invocation_metadata or ():
            if key == AUTH_METADATA:
                text = value if isinstance(value, str) else value.decode("latin-1")
                scheme, _, credential = text.partition(" ")
                if scheme.lower() == "bearer":
                    presented = credential.strip().encode()
        token = matching_token(presented, self.tokens) if presented else None
        if token is None:
            return _deny(await continuation(details), grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        if not allowed(token.role, details.method):
            role = token.role.value if token.role else ""
            message = f"the {role} role may not call {details.method}"
            return _deny(await continuation(details), grpc.StatusCode.PERMISSION_DENIED, message)
        return await continuation(details)


def unparsed(data: bytes) -> None:
    """The deserializer of a refused call: the body is never parsed."""
    return None


def _deny(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler that refuses the call without deserializing its request.

    The token is checked from the metadata alone: a caller without one
    costs the service the received bytes (bounded by the message limit),
    never the memory and time of parsing them.
    """
    kind = DENIED_KINDS[code]

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort(context, code, message, kind)

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort(context, code, message, kind)
        yield None  # pragma: no cover - abort raises

    if handler is None:
        return None
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=unparsed, response_serializer=handler.response_serializer
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=unparsed, response_serializer=handler.response_serializer
        )
    if handler.stream_stream is not None:

        async def bidi(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await abort(context, code, message, kind)
            yield None  # pragma: no cover

        return grpc.stream_stream_rpc_method_handler(
            bidi, request_deserializer=unparsed, response_serializer=handler.response_serializer
        )
    return None

"""TLS, mutual TLS and bearer-token authentication.

Tokens come from a file (one per line, `#` comments) and/or the
SAYIIR_AUTH_TOKENS variable (comma-separated). Every call must carry
`authorization: Bearer <token>`; a missing or unknown token gets
UNAUTHENTICATED. The comparison runs in constant time against every
configured token, so timing tells nothing about how close a guess was.
The health service stays open: load balancers and orchestrators probe it
without credentials.
"""

from __future__ import annotations

import hmac
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from sayiir_grpc.errors import abort

AUTH_METADATA = "authorization"
# The ErrorInfo reason of a refused token (not a Rust BackendError variant).
UNAUTHENTICATED_KIND = "Unauthenticated"
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


class SecurityConfigError(ValueError):
    """TLS or token settings that cannot work; the message names the setting."""


def load_tokens(tokens_file: str | None, tokens: str | None) -> list[bytes]:
    found: list[str] = []
    if tokens_file:
        try:
            lines = Path(tokens_file).read_text().splitlines()
        except OSError as exc:
            raise SecurityConfigError(f"SAYIIR_AUTH_TOKENS_FILE cannot be read: {exc.strerror}") from None
        found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if tokens:
        found += [t.strip() for t in tokens.split(",") if t.strip()]
    for token in found:
        if len(token) < 16:
            raise SecurityConfigError("every auth token must be at least 16 characters (SAYIIR_AUTH_TOKENS*)")
    return [t.encode() for t in found]


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


def _token_ok(presented: bytes, tokens: list[bytes]) -> bool:
    ok = False
    for token in tokens:  # no early exit: the time taken does not depend on which token matched
        ok |= hmac.compare_digest(presented, token)
    return ok


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: list[bytes]) -> None:
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
        if presented and _token_ok(presented, self.tokens):
            return await continuation(details)
        return _deny(await continuation(details))


def _unread(data: bytes) -> None:
    """The deserializer of a refused call: the body is never parsed."""
    return None


async def _unauthenticated(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await abort(context, grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required", UNAUTHENTICATED_KIND)


def _deny(handler: Any) -> Any:
    """A handler that refuses the call without deserializing its request.

    The token is checked from the metadata alone: a caller without one
    costs the service the received bytes (bounded by the message limit),
    never the memory and time of parsing them.
    """

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await _unauthenticated(context)

    async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await _unauthenticated(context)
        yield None  # pragma: no cover - abort raises

    if handler is None:
        return None
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=_unread, response_serializer=handler.response_serializer
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=_unread, response_serializer=handler.response_serializer
        )
    if handler.stream_stream is not None:

        async def bidi(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await _unauthenticated(context)
            yield None  # pragma: no cover

        return grpc.stream_stream_rpc_method_handler(
            bidi, request_deserializer=_unread, response_serializer=handler.response_serializer
        )
    return None

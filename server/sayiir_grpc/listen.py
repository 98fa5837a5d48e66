"""Binding the service's addresses, and saying which setting chose one in use.

gRPC sets SO_REUSEPORT by default, so a second service on a busy address
would start and silently share it (clients split between two databases).
The service binds without it: an address in use stops the start with one
line naming the address and its setting. `reuse_port=True` is for the
processes of one service sharing its address on purpose.
"""

from __future__ import annotations

import errno
import socket

import grpc


class ListenError(OSError):
    """An address cannot be bound; the message names it and its setting."""


LISTEN_SETTING = "SAYIIR_LISTEN / --listen"
METRICS_SETTING = "SAYIIR_METRICS_LISTEN / --metrics-listen"


def reuse_port_option(reuse_port: bool) -> tuple[str, int]:
    return ("grpc.so_reuseport", 1 if reuse_port else 0)


def bind_grpc(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Bind `address` (the server was built with `reuse_port_option`); returns the port."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc's "Failed to bind to address ..."
        port = 0
    if port == 0:
        raise ListenError(f"cannot listen on {address} ({LISTEN_SETTING}): the address is in use or not available")
    return port


def refused(address: str, setting: str, exc: OSError) -> ListenError:
    reason = "the address is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    return ListenError(f"cannot listen on {address} ({setting}): {reason}")


def ensure_free(address: str, setting: str) -> None:
    """Refuse an address some process listens on, before anything starts.

    A probe bind, as a server binds (SO_REUSEADDR: a port left in TIME_WAIT
    is free; one with a listener is not). Port 0 is always free.
    """
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    if port == 0:
        return
    try:
        found = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # the real bind reports it
    family, kind, proto, _, sockaddr = found[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise refused(address, setting, exc) from None

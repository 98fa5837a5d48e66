"""The client's calls: every RPC of the proto has a client method that states its
retry decision, and each logical call carries one idempotency key."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

import sayiir_client.backend as backend_module
import sayiir_common.operator_client as operator_module
from sayiir_client.backend import REQUEST_ID_METADATA, GrpcBackend, Retry
from sayiir_common import proto
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as rpc_pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_pb

# The client modules that call RPCs: GrpcBackend (the stores) and
# OperatorClient (WorkflowOperator, through the same call helper, call_rpc).
CLIENT_SOURCES = [Path(module.__file__).read_text() for module in (backend_module, operator_module)]


def proto_rpcs() -> dict[str, bool]:
    """Every RPC of every service in sayiir_common.proto: "Service.Method" -> server streaming."""
    rpcs: dict[str, bool] = {}
    for info in pkgutil.walk_packages(proto.__path__, f"{proto.__name__}."):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpcs[f"{service.name}.{method.name}"] = method.server_streaming
    return rpcs


class CallSites(ast.NodeVisitor):
    """What backend.py calls: `self._call(self._stub.Method, ..., retry=Retry.X)` and `self._stream(...)`."""

    def __init__(self) -> None:
        self.stub_services: dict[str, str] = {}  # "_snapshots" -> "SnapshotStore"
        self.unary: dict[str, list[str | None]] = {}  # "_snapshots.SaveSnapshot" -> retry decisions
        self.streams: set[str] = set()

    def visit_Assign(self, node: ast.Assign) -> None:
        target, value = node.targets[0], node.value
        if (
            isinstance(target, ast.Attribute)
            and isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr.endswith("Stub")
        ):
            self.stub_services[target.attr] = value.func.attr.removesuffix("Stub")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("_call", "_stream") and node.args:
            method = node.args[0]
            assert isinstance(method, ast.Attribute) and isinstance(method.value, ast.Attribute), ast.unparse(node)
            name = f"{method.value.attr}.{method.attr}"
            if func.attr == "_stream":
                self.streams.add(name)
            else:
                retry = next((k.value for k in node.keywords if k.arg == "retry"), None)
                decision = None
                if isinstance(retry, ast.Attribute) and ast.unparse(retry.value) == "Retry":
                    decision = retry.attr
                self.unary.setdefault(name, []).append(decision)
        self.generic_visit(node)

    def rpc(self, site: str) -> str:
        stub, method = site.split(".")
        return f"{self.stub_services[stub]}.{method}"


@pytest.fixture(scope="module")
def sites() -> CallSites:
    visitor = CallSites()
    for source in CLIENT_SOURCES:
        visitor.visit(ast.parse(source))
    return visitor


def test_the_proto_has_services_to_check() -> None:
    rpcs = proto_rpcs()
    assert {"SnapshotStore.SaveSnapshot", "TaskClaimStore.WatchWakeups", "TaskResultStore.LoadTaskResult"} <= set(rpcs)


def test_every_unary_rpc_has_a_client_call_with_a_retry_decision(sites: CallSites) -> None:
    called = {sites.rpc(site): decisions for site, decisions in sites.unary.items()}
    for name, streaming in proto_rpcs().items():
        if streaming:
            continue
        assert name in called, f"{name} has no client method calling it through _call"
        for decision in called[name]:
            assert decision in Retry.__members__, f"{name}: retry=Retry.<decision> missing at a call site"


def test_every_streaming_rpc_is_opened_through_the_stream_helper(sites: CallSites) -> None:
    streams = {sites.rpc(site) for site in sites.streams}
    for name, streaming in proto_rpcs().items():
        if streaming:
            assert name in streams, f"{name} is a stream but GrpcBackend never opens it through _stream"


def test_the_client_calls_no_rpc_the_proto_lacks(sites: CallSites) -> None:
    rpcs = proto_rpcs()
    for site in [*sites.unary, *sites.streams]:
        assert sites.rpc(site) in rpcs, f"{site} is not an RPC of the proto"


def test_a_call_without_a_retry_decision_is_detected() -> None:
    # The checker itself: a call site missing `retry=` must be reported.
    visitor = CallSites()
    visitor.visit(
        ast.parse(
            "class B:\n"
            "    def __init__(self, channel):\n"
            "        self._snapshots = rpc_grpc.SnapshotStoreStub(channel)\n"
            "    async def load(self, r):\n"
            "        return await self._call(self._snapshots.LoadSnapshot, r)\n"
        )
    )
    assert visitor.unary == {"_snapshots.LoadSnapshot": [None]}
    assert visitor.rpc("_snapshots.LoadSnapshot") == "SnapshotStore.LoadSnapshot"


# -- the idempotency key -------------------------------------------------------


def _unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


class FlakyMethod:
    """A stub method that fails with UNAVAILABLE `failures` times, recording each attempt's metadata."""

    def __init__(self, response: Any, failures: int) -> None:
        self.response = response
        self.failures = failures
        self.request_ids: list[str] = []

    async def __call__(self, request: Any, *, timeout: float | None, metadata: Any) -> Any:
        self.request_ids.append(dict(metadata)[REQUEST_ID_METADATA])
        if len(self.request_ids) <= self.failures:
            raise _unavailable()
        return self.response


@pytest.fixture
async def backend() -> Any:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    client = GrpcBackend(channel, retry_delays=(0.0, 0.0, 0.0))
    yield client
    await client.close()


async def test_retries_of_one_call_share_its_request_id_and_calls_differ(backend: GrpcBackend) -> None:
    method = FlakyMethod(rpc_pb.ListSnapshotsResponse(instance_ids=["a"]), failures=2)
    backend._snapshots.ListSnapshots = method  # type: ignore[method-assign]
    assert await backend.list_snapshots_page() == (["a"], None)
    assert len(method.request_ids) == 3 and len(set(method.request_ids)) == 1
    assert uuid.UUID(method.request_ids[0]).version == 4
    await backend.list_snapshots_page()
    assert len(method.request_ids) == 4 and method.request_ids[3] != method.request_ids[0]


async def test_a_keyed_call_is_retried_with_its_key(backend: GrpcBackend) -> None:
    """CompleteTask would report "not applied" if repeated blindly; the server answers a repeat of its key."""
    method = FlakyMethod(claim_pb.CompleteTaskResponse(completed=True), failures=1)
    backend._claims.CompleteTask = method  # type: ignore[method-assign]
    assert await backend.complete_task("wf", b"\x01" * 32, "w", b"out") is True
    assert len(method.request_ids) == 2 and method.request_ids[0] == method.request_ids[1]

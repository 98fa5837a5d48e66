"""Every error carries google.rpc.Status details with a google.rpc.ErrorInfo.

Read the standard way (grpcio-status), as generic tooling and clients in
other languages do: reason = the variant name, domain = sayiir.v1, metadata
naming the field or the instance. The Python client reads the variant from
these details.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from sayiir_client import (
    CannotPauseError,
    GrpcBackend,
    InvalidArgumentError,
    NotFoundError,
    SignalKind,
    WorkflowSnapshot,
)
from sayiir_common.errors import STATUS_DETAILS_METADATA, error_from_rpc
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as sig_pb
from sayiir_common.proto.sayiir.v1 import signal_store_pb2_grpc as sig_grpc
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as snap_pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2_grpc as snap_grpc


@pytest.fixture
async def channel(target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield channel


async def _info(call: grpc.aio.UnaryUnaryCall) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    status = await rpc_status.aio.from_call(call)
    assert status is not None, "no grpc-status-details-bin trailer"
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    trailing = dict(await call.trailing_metadata() or ())
    return await call.code(), info, trailing


async def test_not_found_names_the_instance(channel: grpc.aio.Channel) -> None:
    stub = snap_grpc.SnapshotStoreStub(channel)
    code, info, trailing = await _info(stub.LoadSnapshot(snap_pb.LoadSnapshotRequest(instance_id="nowhere")))
    assert code == grpc.StatusCode.NOT_FOUND
    assert (info.reason, info.domain, dict(info.metadata)) == ("NotFound", "sayiir.v1", {"instance_id": "nowhere"})
    assert trailing["sayiir-error"] == "NotFound"


async def test_invalid_argument_names_the_field(channel: grpc.aio.Channel) -> None:
    stub = snap_grpc.SnapshotStoreStub(channel)
    code, info, _ = await _info(stub.ListSnapshots(snap_pb.ListSnapshotsRequest(page_size=10**6)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.reason == "InvalidArgument" and info.metadata["field"] == "page_size"


async def test_cannot_pause_is_its_own_reason(channel: grpc.aio.Channel, backend: GrpcBackend) -> None:
    snapshot = WorkflowSnapshot.new("details-done", "h")
    snapshot.mark_completed(b'"x"')
    await backend.save_snapshot(snapshot)
    stub = sig_grpc.SignalStoreStub(channel)
    request = sig_pb.StoreSignalRequest(instance_id="details-done", kind=sig_pb.SIGNAL_KIND_PAUSE)
    code, info, _ = await _info(stub.StoreSignal(request))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "CannotPause" and info.metadata["instance_id"] == "details-done"
    with pytest.raises(CannotPauseError):
        await backend.store_signal("details-done", SignalKind.PAUSE)


async def test_undecodable_request_carries_both_trailers(channel: grpc.aio.Channel) -> None:
    raw = channel.unary_unary("/sayiir.v1.SnapshotStore/LoadSnapshot")
    code, info, trailing = await _info(raw(b"\xff\xff\xff\xff"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert trailing["sayiir-error"] == "InvalidArgument" and info.reason == "InvalidArgument"


async def test_the_client_reads_the_variant_from_the_details(backend: GrpcBackend) -> None:
    with pytest.raises(NotFoundError) as missing:
        await backend.load_snapshot("details-missing")
    assert missing.value.metadata == {"instance_id": "details-missing"}
    with pytest.raises(InvalidArgumentError) as invalid:
        await backend.load_snapshot("")
    assert invalid.value.metadata["field"] == "instance_id"


def test_details_alone_choose_the_class() -> None:
    """Without the sayiir-error trailer (another server, a proxy that drops it), the details decide."""
    info = error_details_pb2.ErrorInfo(reason="CannotPause", domain="sayiir.v1")
    status = status_pb2.Status(code=grpc.StatusCode.FAILED_PRECONDITION.value[0], message="no")
    status.details.add().Pack(info)

    class Failed(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.FAILED_PRECONDITION

        def details(self) -> str:
            return "no"

        def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
            return ((STATUS_DETAILS_METADATA, status.SerializeToString()),)

    assert type(error_from_rpc(Failed())) is CannotPauseError

"""`GrpcBackend`: the store protocols implemented over the gRPC service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc

from sayiir_client import convert
from sayiir_client._proto.sayiir.v1 import signal_store_pb2 as sig_pb
from sayiir_client._proto.sayiir.v1 import signal_store_pb2_grpc as sig_grpc
from sayiir_client._proto.sayiir.v1 import snapshot_pb2 as pb
from sayiir_client._proto.sayiir.v1 import snapshot_store_pb2 as rpc_pb
from sayiir_client._proto.sayiir.v1 import snapshot_store_pb2_grpc as rpc_grpc
from sayiir_client.errors import error_from_rpc
from sayiir_client.ids import TaskId
from sayiir_client.model import ControlSignal, SignalKind, SignalRequest, Timestamp, WorkflowSnapshot

DEFAULT_TIMEOUT_S = 30.0

_STATUS_NAMES = {
    "InProgress": pb.SNAPSHOT_STATUS_IN_PROGRESS,
    "Completed": pb.SNAPSHOT_STATUS_COMPLETED,
    "Failed": pb.SNAPSHOT_STATUS_FAILED,
    "Cancelled": pb.SNAPSHOT_STATUS_CANCELLED,
    "Paused": pb.SNAPSHOT_STATUS_PAUSED,
}
_KINDS = {SignalKind.CANCEL: sig_pb.SIGNAL_KIND_CANCEL, SignalKind.PAUSE: sig_pb.SIGNAL_KIND_PAUSE}
_CONTROL = {
    sig_pb.CONTROL_SIGNAL_NONE: None,
    sig_pb.CONTROL_SIGNAL_CANCELLED: ControlSignal.CANCELLED,
    sig_pb.CONTROL_SIGNAL_PAUSED: ControlSignal.PAUSED,
}


def _kind(kind: SignalKind | str) -> sig_pb.SignalKind:
    return _KINDS[SignalKind(kind)]


def _optional_id(task_id: TaskId | bytes | str | None) -> bytes | None:
    return None if task_id is None else TaskId.coerce(task_id).as_bytes()


class GrpcBackend:
    """A remote Sayiir backend. Implements `SnapshotStore` and `SignalStore`.

    Every method raises the `BackendError` family (`NotFoundError`, ...)
    rather than raw gRPC errors.
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.channel = channel
        self.timeout = timeout
        self._snapshots = rpc_grpc.SnapshotStoreStub(channel)
        self._signals = sig_grpc.SignalStoreStub(channel)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    # -- SnapshotStore -------------------------------------------------------

    async def save_snapshot(self, snapshot: WorkflowSnapshot) -> None:
        await self.save_snapshot_written(snapshot)

    async def save_snapshot_written(self, snapshot: WorkflowSnapshot) -> bool:
        """Like `save_snapshot`; False when the stored snapshot was terminal and kept."""
        request = rpc_pb.SaveSnapshotRequest(snapshot=convert.snapshot_to_proto(snapshot))
        response = await self._call(self._snapshots.SaveSnapshot, request)
        return bool(response.written)

    async def save_task_result(self, instance_id: str, task_id: TaskId | bytes | str, output: bytes) -> None:
        request = rpc_pb.SaveTaskResultRequest(
            instance_id=instance_id, task_id=TaskId.coerce(task_id).as_bytes(), output=bytes(output)
        )
        await self._call(self._snapshots.SaveTaskResult, request)

    async def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        response = await self._call(self._snapshots.LoadSnapshot, rpc_pb.LoadSnapshotRequest(instance_id=instance_id))
        return convert.snapshot_from_proto(response.snapshot)

    async def delete_snapshot(self, instance_id: str) -> None:
        await self._call(self._snapshots.DeleteSnapshot, rpc_pb.DeleteSnapshotRequest(instance_id=instance_id))

    async def list_snapshots(self) -> list[str]:
        ids: list[str] = []
        after: str | None = None
        while True:
            page, after = await self.list_snapshots_page(after, 1000)
            ids.extend(page)
            if after is None:
                return ids

    async def list_snapshots_page(
        self, after: str | None = None, limit: int = 1000, statuses: Sequence[str] = ()
    ) -> tuple[list[str], str | None]:
        """One page of ids after `after`; returns (ids, cursor for the next page or None)."""
        request = rpc_pb.ListSnapshotsRequest(
            after_instance_id=after or "",
            page_size=limit,
            statuses=[_STATUS_NAMES[s] for s in statuses],
        )
        response = await self._call(self._snapshots.ListSnapshots, request)
        return list(response.instance_ids), (response.next_after_instance_id or None)

    # -- SignalStore ---------------------------------------------------------

    async def store_signal(
        self, instance_id: str, kind: SignalKind | str, request: SignalRequest | None = None
    ) -> None:
        """Record a cancel or pause request (replaces an earlier one of that kind)."""
        request = request or SignalRequest()
        message = sig_pb.SignalRequest()
        if request.reason is not None:
            message.reason = request.reason
        if request.requested_by is not None:
            message.requested_by = request.requested_by
        await self._call(
            self._signals.StoreSignal,
            sig_pb.StoreSignalRequest(instance_id=instance_id, kind=_kind(kind), request=message),
        )

    async def get_signal(self, instance_id: str, kind: SignalKind | str) -> SignalRequest | None:
        response = await self._call(
            self._signals.GetSignal, sig_pb.GetSignalRequest(instance_id=instance_id, kind=_kind(kind))
        )
        if not response.HasField("request"):
            return None
        r = response.request
        return SignalRequest(
            r.reason if r.HasField("reason") else None,
            r.requested_by if r.HasField("requested_by") else None,
            Timestamp(r.requested_at.seconds, r.requested_at.nanos),
        )

    async def clear_signal(self, instance_id: str, kind: SignalKind | str) -> None:
        await self._call(
            self._signals.ClearSignal, sig_pb.ClearSignalRequest(instance_id=instance_id, kind=_kind(kind))
        )

    async def send_event(self, instance_id: str, signal_name: str, payload: bytes) -> bool:
        """Deliver an event; True when it resumed a workflow parked at that signal."""
        response = await self._call(
            self._signals.SendEvent,
            sig_pb.SendEventRequest(instance_id=instance_id, signal_name=signal_name, payload=bytes(payload)),
        )
        return bool(response.resumed)

    async def consume_event(self, instance_id: str, signal_name: str) -> bytes | None:
        response = await self._call(
            self._signals.ConsumeEvent, sig_pb.ConsumeEventRequest(instance_id=instance_id, signal_name=signal_name)
        )
        return response.payload if response.HasField("payload") else None

    async def check_and_cancel(self, instance_id: str, interrupted_at_task: TaskId | bytes | str | None = None) -> bool:
        request = sig_pb.CheckAndCancelRequest(instance_id=instance_id)
        if interrupted_at_task is not None:
            request.interrupted_at_task = TaskId.coerce(interrupted_at_task).as_bytes()
        return bool((await self._call(self._signals.CheckAndCancel, request)).cancelled)

    async def check_and_pause(self, instance_id: str) -> bool:
        response = await self._call(self._signals.CheckAndPause, sig_pb.CheckAndPauseRequest(instance_id=instance_id))
        return bool(response.paused)

    async def check_control_signals(
        self, instance_id: str, interrupted_at_task: TaskId | bytes | str | None = None
    ) -> ControlSignal | None:
        request = sig_pb.CheckControlSignalsRequest(instance_id=instance_id)
        if interrupted_at_task is not None:
            request.interrupted_at_task = TaskId.coerce(interrupted_at_task).as_bytes()
        return _CONTROL[(await self._call(self._signals.CheckControlSignals, request)).signal]

    async def unpause(self, instance_id: str) -> WorkflowSnapshot:
        response = await self._call(self._signals.Unpause, sig_pb.UnpauseRequest(instance_id=instance_id))
        return convert.snapshot_from_proto(response.snapshot)

    async def close(self) -> None:
        await self.channel.close()


@asynccontextmanager
async def connect(
    target: str = "127.0.0.1:50051",
    *,
    timeout: float | None = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109 - the per-call deadline, not this call's
    options: Sequence[tuple[str, Any]] = (),
) -> AsyncIterator[GrpcBackend]:
    """Open a channel to the service; yields a `GrpcBackend`, closes it on exit."""
    channel = grpc.aio.insecure_channel(target, options=list(options))
    backend = GrpcBackend(channel, timeout=timeout)
    try:
        yield backend
    finally:
        await channel.close()

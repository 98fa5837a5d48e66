"""`GrpcBackend`: the store protocols implemented over the gRPC service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc

from sayiir_client import convert
from sayiir_client._proto.sayiir.v1 import snapshot_pb2 as pb
from sayiir_client._proto.sayiir.v1 import snapshot_store_pb2 as rpc_pb
from sayiir_client._proto.sayiir.v1 import snapshot_store_pb2_grpc as rpc_grpc
from sayiir_client.errors import error_from_rpc
from sayiir_client.ids import TaskId
from sayiir_client.model import WorkflowSnapshot

DEFAULT_TIMEOUT_S = 30.0

_STATUS_NAMES = {
    "InProgress": pb.SNAPSHOT_STATUS_IN_PROGRESS,
    "Completed": pb.SNAPSHOT_STATUS_COMPLETED,
    "Failed": pb.SNAPSHOT_STATUS_FAILED,
    "Cancelled": pb.SNAPSHOT_STATUS_CANCELLED,
    "Paused": pb.SNAPSHOT_STATUS_PAUSED,
}


class GrpcBackend:
    """A remote Sayiir backend. Implements `SnapshotStore`.

    Every method raises the `BackendError` family (`NotFoundError`, ...)
    rather than raw gRPC errors.
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float | None = DEFAULT_TIMEOUT_S) -> None:
        self.channel = channel
        self.timeout = timeout
        self._snapshots = rpc_grpc.SnapshotStoreStub(channel)

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

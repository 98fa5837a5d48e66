"""The SnapshotStore service: SaveSnapshot, SaveTaskResult, LoadSnapshot,
DeleteSnapshot, ListSnapshots. Logic and SQL: `sayiir_grpc.stores.snapshot_store`."""

from __future__ import annotations

from collections.abc import Sequence

from sayiir_common import checks, convert
from sayiir_common.codec import SnapshotCodec
from sayiir_common.model import WorkflowSnapshot
from sayiir_common.proto.sayiir.v1 import snapshot_pb2 as pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as rpc_pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2_grpc as rpc_grpc
from sayiir_grpc import limits
from sayiir_grpc.db import Database
from sayiir_grpc.idempotency import idempotent, one_statement_or_none, request_hash, request_key
from sayiir_grpc.servicers import Context, rpc
from sayiir_grpc.stores import snapshot_store as store
from sayiir_grpc.tracing import adopt_caller_trace

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000
# One entry per SnapshotStatus value is all a filter can mean.
MAX_STATUSES = len(pb.SnapshotStatus.values())


def statuses_filter(values: Sequence[int]) -> list[str]:
    """The stored statuses to list; empty means any (as does SNAPSHOT_STATUS_UNSPECIFIED)."""
    if len(values) > MAX_STATUSES:
        raise checks.InvalidField("statuses", f"at most {MAX_STATUSES} values, got {len(values)}")
    statuses = []
    for index, value in enumerate(values):
        if value == pb.SNAPSHOT_STATUS_UNSPECIFIED:
            return []
        if value not in convert.PROTO_TO_STATUS:
            raise checks.InvalidField(f"statuses[{index}]", f"unknown SnapshotStatus value {value}")
        statuses.append(convert.PROTO_TO_STATUS[value])
    return statuses


def requested_snapshot(request: rpc_pb.SaveSnapshotRequest, context: Context) -> WorkflowSnapshot:
    """The snapshot a SaveSnapshot carries, under the caller's trace."""
    return adopt_caller_trace(convert.snapshot_from_proto(checks.require(request, "snapshot")), context)


class SnapshotStoreServicer(rpc_grpc.SnapshotStoreServicer):
    def __init__(self, db: Database, codec: SnapshotCodec) -> None:
        self.db = db
        self.codec = codec

    @rpc
    async def SaveSnapshot(self, request: rpc_pb.SaveSnapshotRequest, context: Context) -> rpc_pb.SaveSnapshotResponse:
        """A keyed save is one statement with its key (`store.save_snapshot_keyed`);
        anything that statement cannot decide takes the transaction path."""
        key = request_key(context)
        if key is not None:
            snapshot = requested_snapshot(request, context)
            saved = await one_statement_or_none(
                "SaveSnapshot", store.save_snapshot_keyed(self.db, self.codec, snapshot, key, request_hash(request))
            )
            if saved is not None:
                return rpc_pb.SaveSnapshotResponse(written=saved[0], history_version=saved[1])
        return await self._save_in_transaction(request, context)

    @idempotent(rpc_pb.SaveSnapshotResponse, name="SaveSnapshot")
    async def _save_in_transaction(
        self, request: rpc_pb.SaveSnapshotRequest, context: Context
    ) -> rpc_pb.SaveSnapshotResponse:
        written, version = await store.save_snapshot(self.db, self.codec, requested_snapshot(request, context))
        return rpc_pb.SaveSnapshotResponse(written=written, history_version=version)

    @rpc
    @idempotent(rpc_pb.SaveTaskResultResponse)
    async def SaveTaskResult(
        self, request: rpc_pb.SaveTaskResultRequest, context: Context
    ) -> rpc_pb.SaveTaskResultResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        task_id = checks.task_id_from("task_id", request.task_id)
        version = await store.save_task_result(self.db, self.codec, instance_id, task_id, request.output)
        return rpc_pb.SaveTaskResultResponse(history_version=version)

    @rpc
    async def LoadSnapshot(self, request: rpc_pb.LoadSnapshotRequest, context: Context) -> rpc_pb.LoadSnapshotResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        loaded = await store.load_snapshot(self.db, self.codec, instance_id)
        response = rpc_pb.LoadSnapshotResponse(
            status=convert.STATUS_TO_PROTO.get(loaded.status, pb.SNAPSHOT_STATUS_UNSPECIFIED),
            history_version=loaded.history_version,
        )
        convert.fill_snapshot(response.snapshot, loaded.snapshot)
        return response

    @rpc
    @idempotent(rpc_pb.DeleteSnapshotResponse)
    async def DeleteSnapshot(
        self, request: rpc_pb.DeleteSnapshotRequest, context: Context
    ) -> rpc_pb.DeleteSnapshotResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        await store.delete_snapshot(self.db, instance_id)
        return rpc_pb.DeleteSnapshotResponse()

    @rpc
    async def ListSnapshots(
        self, request: rpc_pb.ListSnapshotsRequest, context: Context
    ) -> rpc_pb.ListSnapshotsResponse:
        if request.page_size > MAX_PAGE_SIZE:
            raise checks.InvalidField("page_size", f"must be at most {MAX_PAGE_SIZE}")
        limit = request.page_size or DEFAULT_PAGE_SIZE
        after = checks.check_text("after_instance_id", request.after_instance_id) or None
        statuses = statuses_filter(request.statuses)
        ids = await store.list_snapshots(self.db, after, limit, statuses)
        fit = limits.fitting(len(i.encode()) for i in ids)
        if fit < len(ids):
            ids = ids[:fit]
            next_after = ids[-1]
        else:
            next_after = ids[-1] if len(ids) == limit else ""
        return rpc_pb.ListSnapshotsResponse(instance_ids=ids, next_after_instance_id=next_after)

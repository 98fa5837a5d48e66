"""The SignalStore service. Logic and SQL: `sayiir_grpc.stores.signal_store`."""

from __future__ import annotations

from sayiir_common import convert
from sayiir_common.codec import SnapshotCodec
from sayiir_common.ids import TaskId
from sayiir_common.model import SignalKind, SignalRequest
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as rpc_pb
from sayiir_common.proto.sayiir.v1 import signal_store_pb2_grpc as rpc_grpc
from sayiir_grpc.db import Database
from sayiir_grpc.idempotency import idempotent
from sayiir_grpc.servicers import Context, rpc
from sayiir_grpc.stores import signal_store as store

MAX_TEXT_BYTES = 4096


def signal_kind(value: int) -> SignalKind:
    if value not in convert.PROTO_TO_SIGNAL_KIND:
        raise convert.InvalidField("kind", f"must be SIGNAL_KIND_CANCEL or SIGNAL_KIND_PAUSE, got {value}")
    return convert.PROTO_TO_SIGNAL_KIND[value]


def optional_task_id(message: object, field: str) -> TaskId | None:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return convert.task_id_from(field, getattr(message, field))


def signal_name(value: str) -> str:
    return convert.check_text("signal_name", value, required=True, max_bytes=convert.MAX_SIGNAL_NAME_BYTES)


class SignalStoreServicer(rpc_grpc.SignalStoreServicer):
    def __init__(self, db: Database, codec: SnapshotCodec) -> None:
        self.db = db
        self.codec = codec

    @rpc
    @idempotent(rpc_pb.StoreSignalResponse)
    async def StoreSignal(self, request: rpc_pb.StoreSignalRequest, context: Context) -> rpc_pb.StoreSignalResponse:
        instance_id = convert.check_instance_id("instance_id", request.instance_id)
        kind = signal_kind(request.kind)
        r = request.request
        reason = r.reason if r.HasField("reason") else None
        by = r.requested_by if r.HasField("requested_by") else None
        for field, value in (("request.reason", reason), ("request.requested_by", by)):
            if value is not None:
                convert.check_text(field, value, max_bytes=MAX_TEXT_BYTES)
        await store.store_signal(self.db, instance_id, kind, SignalRequest(reason, by))
        return rpc_pb.StoreSignalResponse()

    @rpc
    async def GetSignal(self, request: rpc_pb.GetSignalRequest, context: Context) -> rpc_pb.GetSignalResponse:
        instance_id = convert.check_instance_id("instance_id", request.instance_id)
        found = await store.get_signal(self.db, instance_id, signal_kind(request.kind))
        response = rpc_pb.GetSignalResponse()
        if found is not None:
            if found.reason is not None:
                response.request.reason = found.reason
            if found.requested_by is not None:
                response.request.requested_by = found.requested_by
            response.request.requested_at.seconds = found.requested_at.seconds
            response.request.requested_at.nanos = found.requested_at.nanos
        return response

    @rpc
    @idempotent(rpc_pb.ClearSignalResponse)
    async def ClearSignal(self, request: rpc_pb.ClearSignalRequest, context: Context) -> rpc_pb.ClearSignalResponse:
        instance_id = convert.check_instance_id("instance_id", request.instance_id)
        await store.clear_signal(self.db, instance_id, signal_kind(request.kind))
        return rpc_pb.ClearSignalResponse()

    @rpc
    @idempotent(rpc_pb.SendEventResponse)
    async def SendEvent(self, request: rpc_pb.SendEventRequest, context: Context) -> rpc_pb.SendEventResponse:
        instance_id = convert.check_instance_id("instance_id", request.instance_id)
        name = signal_name(request.signal_name)
        outcome = await store.send_event(self.db, self.codec, instance_id, name, request.payload)
        return rpc_pb.SendEventResponse(resumed=outcome.resumed)

    @rpc
    @idempotent(rpc_pb.ConsumeEventResponse)
    async def ConsumeEvent(self, request: rpc_pb.ConsumeEventRequest, context: Context) -> rpc_pb.ConsumeEventResponse:
        instance_id = convert.check_instance_id("instance_id", request.instance_id)
        payload = await store.consume_event(self.db, instance_id, signal_name(request.signal_name))
        return rpc_pb.ConsumeEventResponse() if payload is None else rpc_pb.ConsumeEventResponse(payload=payload)

    @rpc
    @idempotent(rpc_pb.CheckAndCancelResponse)
    async def CheckAndCancel(
        self, request: rpc_pb.CheckAndCancelRequest, context: Context
    ) -> rpc_pb.CheckAndCancelResponse:
        instance_id = convert.check_instance_id("instance_id", request.instance_id)
        interrupted = optional_task_id(request, "interrupted_at_task")
        cancelled = await store.check_and_cancel(self.db, self.codec, instance_id, interrupted)
        return rpc_pb.CheckAndCancelResponse(cancelled=cancelled)

    @rpc
    @idempotent(rpc_pb.CheckAndPauseResponse)
    async def CheckAndPause(
        self, request: rpc_pb.CheckAndPauseRequest, context: Context
    ) -> rpc_pb.CheckAndPauseResponse:
        instance_id = convert.check_instance_id("instance_id", request.instance_id)
        return rpc_pb.CheckAndPauseResponse(paused=await store.check_and_pause(self.db, self.codec, instance_id))

    @rpc
    @idempotent(rpc_pb.CheckControlSignalsResponse)
    async def CheckControlSignals(
        self, request: rpc_pb.CheckControlSignalsRequest, context: Context
    ) -> rpc_pb.CheckControlSignalsResponse:
        instance_id = convert.check_instance_id("instance_id", request.instance_id)
        interrupted = optional_task_id(request, "interrupted_at_task")
        applied = await store.check_control_signals(self.db, self.codec, instance_id, interrupted)
        return rpc_pb.CheckControlSignalsResponse(signal=convert.CONTROL_SIGNAL_TO_PROTO[applied])

    @rpc
    @idempotent(rpc_pb.UnpauseResponse)
    async def Unpause(self, request: rpc_pb.UnpauseRequest, context: Context) -> rpc_pb.UnpauseResponse:
        instance_id = convert.check_instance_id("instance_id", request.instance_id)
        snapshot = await store.unpause(self.db, self.codec, instance_id)
        response = rpc_pb.UnpauseResponse()
        convert.fill_snapshot(response.snapshot, snapshot)
        return response

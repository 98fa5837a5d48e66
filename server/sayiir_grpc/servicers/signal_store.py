"""The SignalStore service. Logic and SQL: `sayiir_grpc.stores.signal_store`."""

from __future__ import annotations

from sayiir_common import checks, convert
from sayiir_common.codec import SnapshotCodec
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as rpc_pb
from sayiir_common.proto.sayiir.v1 import signal_store_pb2_grpc as rpc_grpc
from sayiir_grpc.db import Database
from sayiir_grpc.idempotency import idempotent
from sayiir_grpc.servicers import Context, rpc
from sayiir_grpc.stores import signal_store as store


class SignalStoreServicer(rpc_grpc.SignalStoreServicer):
    def __init__(self, db: Database, codec: SnapshotCodec) -> None:
        self.db = db
        self.codec = codec

    @rpc
    @idempotent(rpc_pb.StoreSignalResponse)
    async def StoreSignal(self, request: rpc_pb.StoreSignalRequest, context: Context) -> rpc_pb.StoreSignalResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        kind = convert.signal_kind_from("kind", request.kind)
        signal = convert.signal_request_from_proto(request.request, "request")
        await store.store_signal(self.db, instance_id, kind, signal)
        return rpc_pb.StoreSignalResponse()

    @rpc
    async def GetSignal(self, request: rpc_pb.GetSignalRequest, context: Context) -> rpc_pb.GetSignalResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        found = await store.get_signal(self.db, instance_id, convert.signal_kind_from("kind", request.kind))
        if found is None:
            return rpc_pb.GetSignalResponse()
        return rpc_pb.GetSignalResponse(request=convert.signal_request_to_proto(found))

    @rpc
    @idempotent(rpc_pb.ClearSignalResponse)
    async def ClearSignal(self, request: rpc_pb.ClearSignalRequest, context: Context) -> rpc_pb.ClearSignalResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        await store.clear_signal(self.db, instance_id, convert.signal_kind_from("kind", request.kind))
        return rpc_pb.ClearSignalResponse()

    @rpc
    @idempotent(rpc_pb.SendEventResponse)
    async def SendEvent(self, request: rpc_pb.SendEventRequest, context: Context) -> rpc_pb.SendEventResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        name = checks.check_signal_name("signal_name", request.signal_name)
        outcome = await store.send_event(self.db, self.codec, instance_id, name, request.payload)
        return rpc_pb.SendEventResponse(resumed=outcome.resumed)

    @rpc
    @idempotent(rpc_pb.ConsumeEventResponse)
    async def ConsumeEvent(self, request: rpc_pb.ConsumeEventRequest, context: Context) -> rpc_pb.ConsumeEventResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        payload = await store.consume_event(
            self.db, instance_id, checks.check_signal_name("signal_name", request.signal_name)
        )
        return rpc_pb.ConsumeEventResponse() if payload is None else rpc_pb.ConsumeEventResponse(payload=payload)

    @rpc
    @idempotent(rpc_pb.CheckAndCancelResponse)
    async def CheckAndCancel(
        self, request: rpc_pb.CheckAndCancelRequest, context: Context
    ) -> rpc_pb.CheckAndCancelResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        interrupted = checks.optional_task_id(request, "interrupted_at_task")
        cancelled = await store.check_and_cancel(self.db, self.codec, instance_id, interrupted)
        return rpc_pb.CheckAndCancelResponse(cancelled=cancelled)

    @rpc
    @idempotent(rpc_pb.CheckAndPauseResponse)
    async def CheckAndPause(
        self, request: rpc_pb.CheckAndPauseRequest, context: Context
    ) -> rpc_pb.CheckAndPauseResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        return rpc_pb.CheckAndPauseResponse(paused=await store.check_and_pause(self.db, self.codec, instance_id))

    @rpc
    @idempotent(rpc_pb.CheckControlSignalsResponse)
    async def CheckControlSignals(
        self, request: rpc_pb.CheckControlSignalsRequest, context: Context
    ) -> rpc_pb.CheckControlSignalsResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        interrupted = checks.optional_task_id(request, "interrupted_at_task")
        applied = await store.check_control_signals(self.db, self.codec, instance_id, interrupted)
        return rpc_pb.CheckControlSignalsResponse(signal=convert.CONTROL_SIGNAL_TO_PROTO[applied])

    @rpc
    @idempotent(rpc_pb.UnpauseResponse)
    async def Unpause(self, request: rpc_pb.UnpauseRequest, context: Context) -> rpc_pb.UnpauseResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        snapshot = await store.unpause(self.db, self.codec, instance_id)
        response = rpc_pb.UnpauseResponse()
        convert.fill_snapshot(response.snapshot, snapshot)
        return response

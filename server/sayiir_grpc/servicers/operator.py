"""The WorkflowOperator service. SQL: `sayiir_grpc.stores.operator_queries`
(reads) and `...operator_actions` (actions)."""

from __future__ import annotations

from sayiir_common import checks, convert
from sayiir_common import operator_convert as oc
from sayiir_common.codec import SnapshotCodec
from sayiir_common.proto.sayiir.v1 import operator_pb2 as op_pb
from sayiir_common.proto.sayiir.v1 import operator_pb2_grpc as op_grpc
from sayiir_grpc.db import Database
from sayiir_grpc.servicers import Context, rpc
from sayiir_grpc.stores import operator_actions as actions
from sayiir_grpc.stores import operator_queries as queries


class WorkflowOperatorServicer(op_grpc.WorkflowOperatorServicer):
    def __init__(self, db: Database, codec: SnapshotCodec) -> None:
        self.db = db
        self.codec = codec

    @rpc
    async def ListWorkflows(self, request: op_pb.ListWorkflowsRequest, context: Context) -> op_pb.ListWorkflowsResponse:
        value = oc.filter_from_proto(request.filter)
        limit = oc.page_size("page_size", request.page_size)
        after = oc.cursor("after_instance_id", request.after_instance_id)
        page = await queries.list_workflows(self.db, value, after, limit)
        return op_pb.ListWorkflowsResponse(
            workflows=[oc.summary_to_proto(s) for s in page.items], next_after_instance_id=page.after or ""
        )

    @rpc
    async def DescribeWorkflow(
        self, request: op_pb.DescribeWorkflowRequest, context: Context
    ) -> op_pb.DescribeWorkflowResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        return oc.description_to_proto(await queries.describe_workflow(self.db, self.codec, instance_id))

    @rpc
    async def ListWorkflowHistory(
        self, request: op_pb.ListWorkflowHistoryRequest, context: Context
    ) -> op_pb.ListWorkflowHistoryResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        limit = oc.page_size("page_size", request.page_size)
        if request.after_version < 0:
            raise checks.InvalidField("after_version", f"must not be negative, got {request.after_version}")
        page = await queries.list_history(self.db, self.codec, instance_id, request.after_version, limit)
        return op_pb.ListWorkflowHistoryResponse(
            versions=[oc.history_to_proto(v) for v in page.items], next_after_version=page.after or 0
        )

    @rpc
    async def GetWorkflowVersion(
        self, request: op_pb.GetWorkflowVersionRequest, context: Context
    ) -> op_pb.GetWorkflowVersionResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        if request.version < 1:
            raise checks.InvalidField("version", f"must be 1 or more, got {request.version}")
        entry, snapshot = await queries.get_version(self.db, self.codec, instance_id, request.version)
        response = op_pb.GetWorkflowVersionResponse(version=oc.history_to_proto(entry))
        convert.fill_snapshot(response.snapshot, snapshot)
        return response

    @rpc
    async def ActOnWorkflows(
        self, request: op_pb.ActOnWorkflowsRequest, context: Context
    ) -> op_pb.ActOnWorkflowsResponse:
        action = oc.action_from_proto(request.action)
        params = oc.action_params_from_proto(request, action)
        target = request.WhichOneof("target")
        if target == "instances":
            ids = oc.named_instances(request.instances)
            result = await actions.act_on_instances(self.db, self.codec, action, ids, params, request.dry_run)
            return oc.result_to_proto(result)
        if target != "filter":
            raise checks.InvalidField("target", "name the instances or give a filter")
        value = oc.filter_from_proto(request.filter)
        batch = oc.page_size("batch_size", request.batch_size, oc.DEFAULT_BATCH_SIZE, oc.MAX_BATCH_SIZE)
        after = oc.cursor("after_instance_id", request.after_instance_id)
        result, next_after = await actions.act_on_filter(
            self.db, self.codec, action, value, params, dry_run=request.dry_run, after=after, batch_size=batch
        )
        return oc.result_to_proto(result, next_after)

    @rpc
    async def ListClaims(self, request: op_pb.ListClaimsRequest, context: Context) -> op_pb.ListClaimsResponse:
        worker = checks.check_text("worker_id", request.worker_id, max_bytes=256) or None
        limit = oc.page_size("page_size", request.page_size)
        after = oc.cursor("after_instance_id", request.after_instance_id)
        page = await queries.list_claims(self.db, worker, request.expired_only, after, limit)
        return op_pb.ListClaimsResponse(
            claims=[oc.claim_to_proto(c) for c in page.items], next_after_instance_id=page.after or ""
        )

    @rpc
    async def ReleaseClaim(self, request: op_pb.ReleaseClaimRequest, context: Context) -> op_pb.ReleaseClaimResponse:
        instance_id = checks.check_instance_id("instance_id", request.instance_id)
        claim = await actions.release_claim(self.db, instance_id)
        return op_pb.ReleaseClaimResponse(claim=oc.claim_to_proto(claim))

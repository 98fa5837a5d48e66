"""The WorkflowOperator calls the `workflows` and `claims` commands make.

The server package may not import the Python client (tests/unit/test_layers.py),
so the command line has this thin caller of its own: the same requests and
conversions (`sayiir_common.operator_convert`), one attempt per call (a
command is rerun by its operator), an `x-request-id` on each, the bearer
token as call metadata, and errors as the `BackendError` family.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc

from sayiir_common import operator_convert as oc
from sayiir_common.errors import error_from_rpc
from sayiir_common.operator_model import (
    ActionParams,
    ActionResult,
    ClaimInfo,
    HistoryEntry,
    Page,
    WorkflowAction,
    WorkflowDescription,
    WorkflowFilter,
    WorkflowSummary,
)
from sayiir_common.proto.sayiir.v1 import operator_pb2 as op_pb
from sayiir_common.proto.sayiir.v1 import operator_pb2_grpc as op_grpc

TIMEOUT_S = 60.0


class OperatorCalls:
    def __init__(self, channel: grpc.aio.Channel, token: str | None) -> None:
        self._stub = op_grpc.WorkflowOperatorStub(channel)  # type: ignore[no-untyped-call]
        self._auth = () if not token else (("authorization", f"Bearer {token}"),)

    async def _call(self, name: str, request: Any) -> Any:
        metadata = (("x-request-id", str(uuid.uuid4())), *self._auth)
        try:
            return await getattr(self._stub, name)(request, timeout=TIMEOUT_S, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None

    async def list_workflows(
        self, where: WorkflowFilter, *, limit: int, after: str | None
    ) -> Page[WorkflowSummary, str]:
        request = op_pb.ListWorkflowsRequest(
            filter=oc.filter_to_proto(where), page_size=limit, after_instance_id=after or ""
        )
        response = await self._call("ListWorkflows", request)
        return Page([oc.summary_from_proto(w) for w in response.workflows], response.next_after_instance_id or None)

    async def describe_workflow(self, instance_id: str) -> WorkflowDescription:
        response = await self._call("DescribeWorkflow", op_pb.DescribeWorkflowRequest(instance_id=instance_id))
        return oc.description_from_proto(response)

    async def iter_history(self, instance_id: str) -> AsyncIterator[HistoryEntry]:
        after = 0
        while True:
            request = op_pb.ListWorkflowHistoryRequest(
                instance_id=instance_id, page_size=oc.MAX_PAGE_SIZE, after_version=after
            )
            response = await self._call("ListWorkflowHistory", request)
            for version in response.versions:
                yield oc.history_from_proto(version)
            if not response.next_after_version:
                return
            after = response.next_after_version

    async def iter_claims(self, *, worker_id: str | None, expired_only: bool) -> AsyncIterator[ClaimInfo]:
        after = ""
        while True:
            request = op_pb.ListClaimsRequest(
                worker_id=worker_id or "",
                expired_only=expired_only,
                page_size=oc.MAX_PAGE_SIZE,
                after_instance_id=after,
            )
            response = await self._call("ListClaims", request)
            for claim in response.claims:
                yield oc.claim_from_proto(claim)
            if not response.next_after_instance_id:
                return
            after = response.next_after_instance_id

    async def act(
        self,
        action: WorkflowAction,
        targets: Sequence[str] | WorkflowFilter,
        *,
        params: ActionParams,
        dry_run: bool = False,
    ) -> ActionResult:
        """Named instances in one call; a filter batch by batch, the counts summed."""
        request = oc.action_request(action, params, dry_run)
        total = ActionResult()
        if not isinstance(targets, WorkflowFilter):
            request.instances.CopyFrom(op_pb.InstanceIds(instance_ids=list(targets)))
            total += oc.result_from_proto(await self._call("ActOnWorkflows", request))
            return total
        request.filter.CopyFrom(oc.filter_to_proto(targets))
        while True:
            response = await self._call("ActOnWorkflows", request)
            total += oc.result_from_proto(response)
            if not response.next_after_instance_id:
                return total
            request.after_instance_id = response.next_after_instance_id

    async def release_claim(self, instance_id: str) -> ClaimInfo:
        response = await self._call("ReleaseClaim", op_pb.ReleaseClaimRequest(instance_id=instance_id))
        return oc.claim_from_proto(response.claim)


@asynccontextmanager
async def operator_calls(
    target: str,
    *,
    token: str | None,
    root_certificates: bytes | None,
    certificate_chain: bytes | None,
    private_key: bytes | None,
) -> AsyncIterator[OperatorCalls]:
    """A channel to `target` (TLS when a CA or a client certificate is given)."""
    if root_certificates or certificate_chain:
        credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
        channel = grpc.aio.secure_channel(target, credentials)
    else:
        channel = grpc.aio.insecure_channel(target)
    try:
        yield OperatorCalls(channel, token)
    finally:
        await channel.close()

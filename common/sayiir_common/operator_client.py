"""`OperatorClient`: the WorkflowOperator service from Python.

async with connect_operator("127.0.0.1:50051", token=...) as ops:
    async for workflow in ops.iter_workflows(WorkflowFilter(statuses=("Failed",))):
        print(workflow.instance_id, workflow.error)
    print(await ops.cancel(WorkflowFilter(statuses=("InProgress",)), dry_run=True))

Calls go through the one call helper (`sayiir_common.calls.call_rpc`): an `x-request-id` per logical
call, reads retried on UNAVAILABLE, actions never (a repeat could act twice).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc

from sayiir_common import convert
from sayiir_common import operator_convert as oc
from sayiir_common.calls import DEFAULT_RETRY_DELAYS, DEFAULT_TIMEOUT_S, Retry, call_rpc, open_channel
from sayiir_common.model import WorkflowSnapshot
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

Targets = Sequence[str] | WorkflowFilter


class OperatorClient:
    """Find, inspect and act on workflows; every method raises the `BackendError` family."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    ) -> None:
        self.channel = channel
        self._operator = op_grpc.WorkflowOperatorStub(channel)
        # The clients' one call helper: the same retries, idempotency key and errors.
        self._call = functools.partial(call_rpc, timeout=timeout, retry_delays=retry_delays)

    # -- reads ---------------------------------------------------------------

    async def list_workflows(
        self, where: WorkflowFilter | None = None, *, limit: int = oc.DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Page[WorkflowSummary, str]:
        """One page of workflows matching `where`, after instance id `after`."""
        request = op_pb.ListWorkflowsRequest(
            filter=oc.filter_to_proto(where or WorkflowFilter()), page_size=limit, after_instance_id=after or ""
        )
        response = await self._call(self._operator.ListWorkflows, request, retry=Retry.SAFE)
        return Page([oc.summary_from_proto(w) for w in response.workflows], response.next_after_instance_id or None)

    async def iter_workflows(
        self, where: WorkflowFilter | None = None, *, page_size: int = oc.DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[WorkflowSummary]:
        after: str | None = None
        while True:
            page = await self.list_workflows(where, limit=page_size, after=after)
            for item in page.items:
                yield item
            if page.after is None:
                return
            after = page.after

    async def describe_workflow(self, instance_id: str) -> WorkflowDescription:
        response = await self._call(
            self._operator.DescribeWorkflow, op_pb.DescribeWorkflowRequest(instance_id=instance_id), retry=Retry.SAFE
        )
        return oc.description_from_proto(response)

    async def workflow_history(
        self, instance_id: str, *, limit: int = oc.DEFAULT_PAGE_SIZE, after_version: int = 0
    ) -> Page[HistoryEntry, int]:
        request = op_pb.ListWorkflowHistoryRequest(
            instance_id=instance_id, page_size=limit, after_version=after_version
        )
        response = await self._call(self._operator.ListWorkflowHistory, request, retry=Retry.SAFE)
        return Page([oc.history_from_proto(v) for v in response.versions], response.next_after_version or None)

    async def iter_history(
        self, instance_id: str, *, page_size: int = oc.DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[HistoryEntry]:
        after = 0
        while True:
            page = await self.workflow_history(instance_id, limit=page_size, after_version=after)
            for item in page.items:
                yield item
            if page.after is None:
                return
            after = page.after

    async def workflow_version(self, instance_id: str, version: int) -> tuple[HistoryEntry, WorkflowSnapshot]:
        """One history version, decoded (its completed tasks carry no outputs: blobs keep none)."""
        request = op_pb.GetWorkflowVersionRequest(instance_id=instance_id, version=version)
        response = await self._call(self._operator.GetWorkflowVersion, request, retry=Retry.SAFE)
        return oc.history_from_proto(response.version), convert.snapshot_from_proto(response.snapshot)

    async def list_claims(
        self,
        *,
        worker_id: str | None = None,
        expired_only: bool = False,
        limit: int = oc.DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Page[ClaimInfo, str]:
        request = op_pb.ListClaimsRequest(
            worker_id=worker_id or "", expired_only=expired_only, page_size=limit, after_instance_id=after or ""
        )
        response = await self._call(self._operator.ListClaims, request, retry=Retry.SAFE)
        return Page([oc.claim_from_proto(c) for c in response.claims], response.next_after_instance_id or None)

    async def iter_claims(
        self, *, worker_id: str | None = None, expired_only: bool = False, page_size: int = oc.DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[ClaimInfo]:
        after: str | None = None
        while True:
            page = await self.list_claims(worker_id=worker_id, expired_only=expired_only, limit=page_size, after=after)
            for item in page.items:
                yield item
            if page.after is None:
                return
            after = page.after

    # -- actions -------------------------------------------------------------

    async def act(
        self,
        action: WorkflowAction,
        targets: Targets,
        *,
        params: ActionParams | None = None,
        dry_run: bool = False,
        batch_size: int = oc.DEFAULT_BATCH_SIZE,
    ) -> ActionResult:
        """Apply `action` to the named instances or to every match of a filter.

        A filter is worked through batch by batch (one call each); the
        counts are summed. A dry run only counts.
        """
        template = oc.action_request(action, params or ActionParams(), dry_run)
        total = ActionResult()
        if isinstance(targets, WorkflowFilter):
            template.filter.CopyFrom(oc.filter_to_proto(targets))
            template.batch_size = batch_size
            after = ""
            while True:
                template.after_instance_id = after
                response = await self._call(self._operator.ActOnWorkflows, template, retry=Retry.NEVER)
                total += oc.result_from_proto(response)
                after = response.next_after_instance_id
                if not after:
                    return total
        ids = list(targets)
        for start in range(0, len(ids), oc.MAX_NAMED_INSTANCES):
            template.instances.CopyFrom(op_pb.InstanceIds(instance_ids=ids[start : start + oc.MAX_NAMED_INSTANCES]))
            total += oc.result_from_proto(await self._call(self._operator.ActOnWorkflows, template, retry=Retry.NEVER))
        return total

    async def cancel(
        self, targets: Targets, *, reason: str | None = None, requested_by: str | None = None, dry_run: bool = False
    ) -> ActionResult:
        params = ActionParams(reason=reason, requested_by=requested_by)
        return await self.act(WorkflowAction.CANCEL, targets, params=params, dry_run=dry_run)

    async def pause(
        self, targets: Targets, *, reason: str | None = None, requested_by: str | None = None, dry_run: bool = False
    ) -> ActionResult:
        params = ActionParams(reason=reason, requested_by=requested_by)
        return await self.act(WorkflowAction.PAUSE, targets, params=params, dry_run=dry_run)

    async def unpause(self, targets: Targets, *, dry_run: bool = False) -> ActionResult:
        return await self.act(WorkflowAction.UNPAUSE, targets, dry_run=dry_run)

    async def delete(self, targets: Targets, *, dry_run: bool = False) -> ActionResult:
        return await self.act(WorkflowAction.DELETE, targets, dry_run=dry_run)

    async def send_event(
        self, targets: Targets, signal_name: str, payload: bytes = b"", *, dry_run: bool = False
    ) -> ActionResult:
        params = ActionParams(signal_name=signal_name, payload=bytes(payload))
        return await self.act(WorkflowAction.SEND_EVENT, targets, params=params, dry_run=dry_run)

    async def release_claim(self, instance_id: str) -> ClaimInfo:
        """Force-release the claim on `instance_id`; NotFoundError when there is none."""
        response = await self._call(
            self._operator.ReleaseClaim, op_pb.ReleaseClaimRequest(instance_id=instance_id), retry=Retry.NEVER
        )
        return oc.claim_from_proto(response.claim)

    async def close(self) -> None:
        await self.channel.close()


@asynccontextmanager
async def connect_operator(
    target: str = "127.0.0.1:50051",
    *,
    token: str | None = None,
    tls: bool = False,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    options: Sequence[tuple[str, Any]] = (),
) -> AsyncIterator[OperatorClient]:
    """Open a channel to the service (as `connect` does); yields an `OperatorClient`."""
    channel = open_channel(
        target,
        token=token,
        tls=tls,
        root_certificates=root_certificates,
        certificate_chain=certificate_chain,
        private_key=private_key,
        options=options,
    )
    client = OperatorClient(channel, timeout=timeout)
    try:
        yield client
    finally:
        await client.close()

"""Operator model <-> protobuf (`sayiir.v1.WorkflowOperator`), with the checks
of every incoming field. Server and client both convert through here."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from sayiir_common.checks import InvalidField, check_instance_id, check_text
from sayiir_common.convert import (
    PROTO_TO_SIGNAL_KIND,
    PROTO_TO_STATUS,
    SIGNAL_KIND_TO_PROTO,
    STATUS_TO_PROTO,
)
from sayiir_common.ids import HASH_LEN, DefinitionHash, TaskId
from sayiir_common.model import MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS, SignalKind
from sayiir_common.operator_model import (
    ActionParams,
    ActionResult,
    ClaimInfo,
    CompletedTaskInfo,
    HistoryEntry,
    PendingSignalInfo,
    RetryStateInfo,
    WorkflowAction,
    WorkflowDescription,
    WorkflowFilter,
    WorkflowSummary,
)
from sayiir_common.proto.sayiir.v1 import operator_pb2 as op_pb
from sayiir_common.proto.sayiir.v1 import snapshot_pb2 as snapshot_pb

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
DEFAULT_BATCH_SIZE = 500
MAX_BATCH_SIZE = 1000
MAX_NAMED_INSTANCES = 1000

ACTION_TO_PROTO: dict[WorkflowAction, op_pb.WorkflowAction] = {
    WorkflowAction.CANCEL: op_pb.WORKFLOW_ACTION_CANCEL,
    WorkflowAction.PAUSE: op_pb.WORKFLOW_ACTION_PAUSE,
    WorkflowAction.UNPAUSE: op_pb.WORKFLOW_ACTION_UNPAUSE,
    WorkflowAction.SEND_EVENT: op_pb.WORKFLOW_ACTION_SEND_EVENT,
    WorkflowAction.DELETE: op_pb.WORKFLOW_ACTION_DELETE,
}
PROTO_TO_ACTION: dict[int, WorkflowAction] = {v: k for k, v in ACTION_TO_PROTO.items()}


# -- small pieces ------------------------------------------------------------


def page_size(field: str, value: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    if value > maximum:
        raise InvalidField(field, f"must be at most {maximum}, got {value}")
    return value or default


def to_timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value.astimezone(UTC))
    return message


def from_timestamp(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def _checked_time(field: str, message: timestamp_pb2.Timestamp) -> datetime:
    if not MIN_TIMESTAMP_SECONDS <= message.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidField(field, "must be between years 1 and 9999")
    if not 0 <= message.nanos < 1_000_000_000:
        raise InvalidField(field, "nanos must be in [0, 999999999]")
    return from_timestamp(message)


def _optional_time(parent: object, name: str, path: str) -> datetime | None:
    if not parent.HasField(name):  # type: ignore[attr-defined]
        return None
    return _checked_time(f"{path}.{name}", getattr(parent, name))


def _hash(field: str, raw: bytes) -> bytes:
    if len(raw) != HASH_LEN:
        raise InvalidField(field, f"must be {HASH_LEN} bytes, got {len(raw)}")
    return raw


def _status(field: str, value: int) -> str:
    if value not in PROTO_TO_STATUS:
        raise InvalidField(field, f"unknown SnapshotStatus value {value}")
    return PROTO_TO_STATUS[value]


# -- filter ------------------------------------------------------------------


def filter_to_proto(value: WorkflowFilter) -> op_pb.WorkflowFilter:
    message = op_pb.WorkflowFilter(statuses=[STATUS_TO_PROTO[s] for s in value.statuses])
    if value.definition_hash is not None:
        message.definition_hash = value.definition_hash.as_bytes()
    if value.current_task_id is not None:
        message.current_task_id = value.current_task_id.as_bytes()
    if value.tag is not None:
        message.tag = value.tag
    if value.error_contains is not None:
        message.error_contains = value.error_contains
    for name in ("created_after", "created_before", "updated_after", "updated_before"):
        when = getattr(value, name)
        if when is not None:
            getattr(message, name).CopyFrom(to_timestamp(when))
    return message


def filter_from_proto(message: op_pb.WorkflowFilter, path: str = "filter") -> WorkflowFilter:
    statuses = tuple(_status(f"{path}.statuses[{i}]", v) for i, v in enumerate(message.statuses))
    definition = (
        DefinitionHash(_hash(f"{path}.definition_hash", message.definition_hash))
        if message.HasField("definition_hash")
        else None
    )
    task = (
        TaskId(_hash(f"{path}.current_task_id", message.current_task_id))
        if message.HasField("current_task_id")
        else None
    )
    tag = message.tag if message.HasField("tag") else None
    error = message.error_contains if message.HasField("error_contains") else None
    try:
        return WorkflowFilter(
            statuses=statuses,
            definition_hash=definition,
            current_task_id=task,
            tag=tag,
            created_after=_optional_time(message, "created_after", path),
            created_before=_optional_time(message, "created_before", path),
            updated_after=_optional_time(message, "updated_after", path),
            updated_before=_optional_time(message, "updated_before", path),
            error_contains=error,
        )
    except InvalidField as exc:
        raise InvalidField(f"{path}.{exc.field}", exc.problem) from None


# -- summaries, descriptions, history, claims ---------------------------------


def summary_to_proto(value: WorkflowSummary) -> op_pb.WorkflowSummary:
    message = op_pb.WorkflowSummary(
        instance_id=value.instance_id,
        status=STATUS_TO_PROTO[value.status],
        definition_hash=value.definition_hash,
        created_at=to_timestamp(value.created_at),
        updated_at=to_timestamp(value.updated_at),
        task_tags=list(value.task_tags),
        task_priority=value.task_priority,
    )
    if value.current_task_id is not None:
        message.current_task_id = value.current_task_id
    if value.position is not None:
        message.position_kind = value.position
    if value.error is not None:
        message.error = value.error
    if value.claimed_by is not None:
        message.claimed_by = value.claimed_by
    if value.claim_expires_at is not None:
        message.claim_expires_at.CopyFrom(to_timestamp(value.claim_expires_at))
    return message


def summary_from_proto(message: op_pb.WorkflowSummary) -> WorkflowSummary:
    return WorkflowSummary(
        instance_id=message.instance_id,
        status=PROTO_TO_STATUS.get(message.status, "Unknown"),
        definition_hash=message.definition_hash,
        current_task_id=message.current_task_id if message.HasField("current_task_id") else None,
        position=message.position_kind if message.HasField("position_kind") else None,
        created_at=from_timestamp(message.created_at),
        updated_at=from_timestamp(message.updated_at),
        error=message.error if message.HasField("error") else None,
        task_tags=tuple(message.task_tags),
        task_priority=message.task_priority,
        claimed_by=message.claimed_by if message.HasField("claimed_by") else None,
        claim_expires_at=from_timestamp(message.claim_expires_at) if message.HasField("claim_expires_at") else None,
    )


def description_to_proto(value: WorkflowDescription) -> op_pb.DescribeWorkflowResponse:
    message = op_pb.DescribeWorkflowResponse(
        summary=summary_to_proto(value.summary), history_versions=value.history_versions
    )
    for signal in value.pending_signals:
        item = message.pending_signals.add(
            kind=SIGNAL_KIND_TO_PROTO[SignalKind(signal.kind)], requested_at=to_timestamp(signal.requested_at)
        )
        if signal.reason is not None:
            item.reason = signal.reason
        if signal.requested_by is not None:
            item.requested_by = signal.requested_by
    for name, count in value.buffered_events.items():
        message.buffered_events.add(signal_name=name, count=count)
    for task in value.completed_tasks:
        done = message.completed_tasks.add(task_id=task.task_id, output_bytes=task.output_bytes)
        if task.completed_at is not None:
            done.completed_at.CopyFrom(to_timestamp(task.completed_at))
    for retry in value.retry_states:
        state = message.retry_states.add(
            task_id=retry.task_id,
            attempts=retry.attempts,
            last_error=retry.last_error,
            next_retry_at=to_timestamp(retry.next_retry_at),
        )
        if retry.last_failed_worker is not None:
            state.last_failed_worker = retry.last_failed_worker
    return message


def description_from_proto(message: op_pb.DescribeWorkflowResponse) -> WorkflowDescription:
    return WorkflowDescription(
        summary=summary_from_proto(message.summary),
        pending_signals=tuple(
            PendingSignalInfo(
                kind=(PROTO_TO_SIGNAL_KIND[s.kind].value if s.kind in PROTO_TO_SIGNAL_KIND else "Unknown"),
                reason=s.reason if s.HasField("reason") else None,
                requested_by=s.requested_by if s.HasField("requested_by") else None,
                requested_at=from_timestamp(s.requested_at),
            )
            for s in message.pending_signals
        ),
        buffered_events={e.signal_name: e.count for e in message.buffered_events},
        completed_tasks=tuple(
            CompletedTaskInfo(
                task_id=t.task_id,
                completed_at=from_timestamp(t.completed_at) if t.HasField("completed_at") else None,
                output_bytes=t.output_bytes,
            )
            for t in message.completed_tasks
        ),
        retry_states=tuple(
            RetryStateInfo(
                task_id=r.task_id,
                attempts=r.attempts,
                last_error=r.last_error,
                next_retry_at=from_timestamp(r.next_retry_at),
                last_failed_worker=r.last_failed_worker if r.HasField("last_failed_worker") else None,
            )
            for r in message.retry_states
        ),
        history_versions=message.history_versions,
    )


def history_to_proto(value: HistoryEntry) -> op_pb.HistoryVersion:
    message = op_pb.HistoryVersion(
        version=value.version,
        created_at=to_timestamp(value.created_at),
        status=STATUS_TO_PROTO.get(value.status, snapshot_pb.SNAPSHOT_STATUS_UNSPECIFIED),
        size=value.size,
        sha256=value.sha256,
    )
    if value.position is not None:
        message.position_kind = value.position
    if value.current_task_id is not None:
        message.current_task_id = value.current_task_id
    return message


def history_from_proto(message: op_pb.HistoryVersion) -> HistoryEntry:
    return HistoryEntry(
        version=message.version,
        created_at=from_timestamp(message.created_at),
        status=PROTO_TO_STATUS.get(message.status, "Unknown"),
        position=message.position_kind if message.HasField("position_kind") else None,
        current_task_id=message.current_task_id if message.HasField("current_task_id") else None,
        size=message.size,
        sha256=message.sha256,
    )


def claim_to_proto(value: ClaimInfo) -> op_pb.ClaimSummary:
    message = op_pb.ClaimSummary(
        instance_id=value.instance_id,
        task_id=value.task_id,
        worker_id=value.worker_id,
        claimed_at=to_timestamp(value.claimed_at),
        expired=value.expired,
    )
    if value.expires_at is not None:
        message.expires_at.CopyFrom(to_timestamp(value.expires_at))
    return message


def claim_from_proto(message: op_pb.ClaimSummary) -> ClaimInfo:
    return ClaimInfo(
        instance_id=message.instance_id,
        task_id=message.task_id,
        worker_id=message.worker_id,
        claimed_at=from_timestamp(message.claimed_at),
        expires_at=from_timestamp(message.expires_at) if message.HasField("expires_at") else None,
        expired=message.expired,
    )


# -- actions -----------------------------------------------------------------


def action_request(action: WorkflowAction, params: ActionParams, dry_run: bool) -> op_pb.ActOnWorkflowsRequest:
    """An ActOnWorkflows request without its target (the caller sets instances or a filter)."""
    request = op_pb.ActOnWorkflowsRequest(
        action=ACTION_TO_PROTO[action], dry_run=dry_run, signal_name=params.signal_name, payload=params.payload
    )
    if params.reason is not None:
        request.reason = params.reason
    if params.requested_by is not None:
        request.requested_by = params.requested_by
    return request


def action_from_proto(value: int) -> WorkflowAction:
    if value not in PROTO_TO_ACTION:
        raise InvalidField("action", f"must be one of the WORKFLOW_ACTION_* values, got {value}")
    return PROTO_TO_ACTION[value]


def action_params_from_proto(message: op_pb.ActOnWorkflowsRequest, action: WorkflowAction) -> ActionParams:
    params = ActionParams(
        reason=message.reason if message.HasField("reason") else None,
        requested_by=message.requested_by if message.HasField("requested_by") else None,
        signal_name=message.signal_name,
        payload=message.payload,
    )
    params.check(action)
    return params


def named_instances(message: op_pb.InstanceIds) -> list[str]:
    """The named ids, each checked, duplicates dropped (first one kept)."""
    ids = list(message.instance_ids)
    if not 1 <= len(ids) <= MAX_NAMED_INSTANCES:
        raise InvalidField("instances.instance_ids", f"must name 1 to {MAX_NAMED_INSTANCES} instances, got {len(ids)}")
    for index, value in enumerate(ids):
        check_instance_id(f"instances.instance_ids[{index}]", value)
    return list(dict.fromkeys(ids))


def result_to_proto(value: ActionResult, next_after: str | None = None) -> op_pb.ActOnWorkflowsResponse:
    return op_pb.ActOnWorkflowsResponse(
        matched=value.matched,
        applied=value.applied,
        skipped=value.skipped,
        not_found=value.not_found,
        next_after_instance_id=next_after or "",
    )


def result_from_proto(message: op_pb.ActOnWorkflowsResponse) -> ActionResult:
    return ActionResult(message.matched, message.applied, message.skipped, message.not_found)


def cursor(field: str, value: str) -> str | None:
    """A keyset cursor (an instance id); empty means the start."""
    return check_text(field, value, max_bytes=1024) or None

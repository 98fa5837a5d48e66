"""What operators see and ask for: filters, summaries, history lines, claims
and action counts, with the parsing of user-typed values and the JSON shapes.

The command line, the Python client and the server all use these; the JSON
keys are the public interface of `sayiir-grpc workflows ... --json`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sayiir_common.checks import MAX_SIGNAL_NAME_BYTES, MAX_SIGNAL_TEXT_BYTES, MAX_TAG_BYTES, InvalidField, check_text
from sayiir_common.ids import HASH_LEN, DefinitionHash, TaskId
from sayiir_common.model import STATUS_NAMES, TERMINAL_STATUSES

MAX_ERROR_FILTER_BYTES = 1024

# "InProgress", "inprogress", "in_progress", "IN-PROGRESS" all name one status.
_STATUS_BY_KEY = {name.lower(): name for name in STATUS_NAMES}
_HEX_RE = re.compile(rf"[0-9a-fA-F]{{{2 * HASH_LEN}}}")


def parse_status(field_name: str, text: str) -> str:
    """The engine's status name for `text`: any case, CamelCase or snake_case."""
    found = _STATUS_BY_KEY.get(text.replace("_", "").replace("-", "").lower())
    if found is None:
        raise InvalidField(field_name, f"unknown status {text!r} (one of {', '.join(STATUS_NAMES)})")
    return found


def parse_hex_id(field_name: str, text: str) -> bytes:
    """32 bytes from 64 hex digits."""
    if not _HEX_RE.fullmatch(text):
        raise InvalidField(field_name, f"must be {2 * HASH_LEN} hex digits, got {text!r}")
    return bytes.fromhex(text)


def parse_time(field_name: str, text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time (`2026-12-01T10:00:00Z`, or a date); UTC when no offset is given."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidField(field_name, f"not an RFC 3339 time: {text!r} (e.g. 2026-12-01T10:00:00Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rfc3339(value: datetime | None) -> str | None:
    """`2026-12-01T10:00:00.123456Z`: UTC, with a Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


@dataclass(frozen=True, slots=True)
class WorkflowFilter:
    """Which workflows a list or a bulk action covers; every criterion set must match."""

    statuses: tuple[str, ...] = ()
    definition_hash: DefinitionHash | None = None
    current_task_id: TaskId | None = None
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    error_contains: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "statuses", tuple(parse_status("statuses", s) for s in self.statuses))
        if self.tag is not None:
            check_text("tag", self.tag, required=True, max_bytes=MAX_TAG_BYTES)
        if self.error_contains is not None:
            check_text("error_contains", self.error_contains, required=True, max_bytes=MAX_ERROR_FILTER_BYTES)
        for name in ("created_after", "created_before", "updated_after", "updated_before"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidField(name, "must carry a time zone")


class WorkflowAction(enum.Enum):
    CANCEL = "cancel"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    SEND_EVENT = "send-event"
    DELETE = "delete"

    def allowed_from(self, status: str) -> bool:
        """Whether a workflow in `status` can take this action (else it is skipped)."""
        if self is WorkflowAction.DELETE:
            return True
        if self is WorkflowAction.UNPAUSE:
            return status == "Paused"
        if self is WorkflowAction.PAUSE:
            return status == "InProgress"
        return status not in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class ActionParams:
    """What an action carries besides its targets."""

    reason: str | None = None
    requested_by: str | None = None
    signal_name: str = ""
    payload: bytes = b""

    def check(self, action: WorkflowAction) -> None:
        for name, value in (("reason", self.reason), ("requested_by", self.requested_by)):
            if value is not None:
                check_text(name, value, max_bytes=MAX_SIGNAL_TEXT_BYTES)
        if action is WorkflowAction.SEND_EVENT:
            check_text("signal_name", self.signal_name, required=True, max_bytes=MAX_SIGNAL_NAME_BYTES)


@dataclass(slots=True)
class ActionResult:
    """How many instances an action matched, applied, skipped and did not find."""

    matched: int = 0
    applied: int = 0
    skipped: int = 0
    not_found: int = 0

    def __iadd__(self, other: ActionResult) -> ActionResult:
        self.matched += other.matched
        self.applied += other.applied
        self.skipped += other.skipped
        self.not_found += other.not_found
        return self

    def to_json(self) -> dict[str, Any]:
        return {"matched": self.matched, "applied": self.applied, "skipped": self.skipped, "not_found": self.not_found}


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    instance_id: str
    status: str
    definition_hash: bytes
    current_task_id: bytes | None
    position: str | None
    created_at: datetime
    updated_at: datetime
    error: str | None
    task_tags: tuple[str, ...]
    task_priority: int
    claimed_by: str | None
    claim_expires_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "status": self.status,
            "definition_hash": self.definition_hash.hex(),
            "current_task_id": _hex(self.current_task_id),
            "position": self.position,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "error": self.error,
            "task_tags": list(self.task_tags),
            "task_priority": self.task_priority,
            "claimed_by": self.claimed_by,
            "claim_expires_at": rfc3339(self.claim_expires_at),
        }


@dataclass(frozen=True, slots=True)
class PendingSignalInfo:
    kind: str
    reason: str | None
    requested_by: str | None
    requested_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "reason": self.reason, "requested_by": self.requested_by}


@dataclass(frozen=True, slots=True)
class CompletedTaskInfo:
    task_id: bytes
    completed_at: datetime | None
    output_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id.hex(),
            "completed_at": rfc3339(self.completed_at),
            "output_bytes": self.output_bytes,
        }


@dataclass(frozen=True, slots=True)
class RetryStateInfo:
    task_id: bytes
    attempts: int
    last_error: str
    next_retry_at: datetime
    last_failed_worker: str | None


@dataclass(frozen=True, slots=True)
class WorkflowDescription:
    summary: WorkflowSummary
    pending_signals: tuple[PendingSignalInfo, ...]
    buffered_events: dict[str, int]
    completed_tasks: tuple[CompletedTaskInfo, ...]
    retry_states: tuple[RetryStateInfo, ...]
    history_versions: int

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary.to_json(),
            "pending_signals": [s.to_json() for s in self.pending_signals],
            "buffered_events": dict(self.buffered_events),
            "completed_tasks": [t.to_json() for t in self.completed_tasks],
            "history_versions": self.history_versions,
        }


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    version: int
    created_at: datetime
    status: str
    position: str | None
    current_task_id: bytes | None
    size: int
    sha256: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created_at": rfc3339(self.created_at),
            "status": self.status,
            "position": self.position,
            "size": self.size,
            "sha256": self.sha256.hex(),
        }


@dataclass(frozen=True, slots=True)
class ClaimInfo:
    instance_id: str
    task_id: bytes
    worker_id: str
    claimed_at: datetime
    expires_at: datetime | None
    expired: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "task_id": self.task_id.hex(),
            "worker_id": self.worker_id,
            "expires_at": rfc3339(self.expires_at),
            "expired": self.expired,
        }


@dataclass(frozen=True, slots=True)
class Overview:
    """The console's front page: workflows by status, the runnable backlog, recent failures."""

    by_status: dict[str, int]
    runnable: int
    oldest_runnable_since: datetime | None
    recent_failures: tuple[WorkflowSummary, ...]


T = TypeVar("T")
C = TypeVar("C")


@dataclass(slots=True)
class Page(Generic[T, C]):
    """One page of a keyset listing; `after` is the cursor of the next page (None at the end)."""

    items: list[T] = field(default_factory=list)
    after: C | None = None

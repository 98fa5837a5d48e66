"""Every check an incoming field passes, in one place.

Each check raises `InvalidField`, whose message names the field by its
dotted path; the server answers it with INVALID_ARGUMENT before touching the
database. `convert` runs these over whole snapshots; the servicers run them
over the scalar fields of their requests.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import duration_pb2

from sayiir_common.ids import HASH_LEN, TaskId

MAX_INSTANCE_ID_BYTES = 1024
# Tags and the instance id travel in the wakeup NOTIFY payload, which
# PostgreSQL caps at 8000 bytes: 1024 + 32 x 128 bytes stays below it after
# base64, so every valid snapshot can be saved.
MAX_TAG_BYTES = 128
MAX_TAGS = 32
# Events are keyed by signal name in a btree index; past this the index
# entry outgrows PostgreSQL's limit.
MAX_SIGNAL_NAME_BYTES = 1024
MAX_WORKER_ID_BYTES = 256
MAX_TRACE_PARENT_BYTES = 1024
# Reason and requester of a cancel or pause request.
MAX_SIGNAL_TEXT_BYTES = 4096
# Claim ttl and aging interval: a year and a day is longer than any real
# lease, and keeps now() + interval far from timestamp overflow.
MAX_SECONDS = 366 * 86_400.0
MIN_PRIORITY, MAX_PRIORITY = 1, 5
# An idempotency key (`x-request-id`, a session request's `request_id`):
# a uuid is 36 characters; the bound keeps the key table's index small.
MAX_REQUEST_KEY_CHARS = 128


class InvalidField(ValueError):
    """A request field fails validation; `field` is its dotted path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def check_text(field: str, value: str, *, required: bool = False, max_bytes: int | None = None) -> str:
    """A string PostgreSQL TEXT can hold: no NUL, within `max_bytes`."""
    if required and not value:
        raise InvalidField(field, "must not be empty")
    if "\x00" in value:
        raise InvalidField(field, "must not contain NUL characters")
    if max_bytes is not None and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidField(field, f"must be at most {max_bytes} bytes")
    return value


def check_request_key(field: str, value: object) -> str:
    """An idempotency key: 1 to MAX_REQUEST_KEY_CHARS printable characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_REQUEST_KEY_CHARS or not value.isprintable():
        raise InvalidField(field, f"must be 1 to {MAX_REQUEST_KEY_CHARS} printable characters")
    return value


def check_instance_id(field: str, value: str) -> str:
    return check_text(field, value, required=True, max_bytes=MAX_INSTANCE_ID_BYTES)


def check_worker_id(field: str, value: str) -> str:
    return check_text(field, value, required=True, max_bytes=MAX_WORKER_ID_BYTES)


def check_signal_name(field: str, value: str) -> str:
    return check_text(field, value, required=True, max_bytes=MAX_SIGNAL_NAME_BYTES)


def task_id_from(field: str, raw: bytes) -> TaskId:
    if len(raw) != HASH_LEN:
        raise InvalidField(field, f"must be {HASH_LEN} bytes, got {len(raw)}")
    return TaskId(raw)


def optional_task_id(message: object, name: str, path: str = "") -> TaskId | None:
    """`message.name` as a task id when it is set; `path` prefixes the field's name."""
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    return task_id_from(f"{path}.{name}" if path else name, getattr(message, name))


def require(message: object, name: str, path: str = "") -> Any:
    """`message.name`, which must be set (a message field or an optional scalar)."""
    field = f"{path}.{name}" if path else name
    if not message.HasField(name):  # type: ignore[attr-defined]
        raise InvalidField(field, "is required")
    return getattr(message, name)


def check_tags(field: str, values: list[str]) -> list[str]:
    """Task or worker tags: at most MAX_TAGS, each non-empty and short."""
    if len(values) > MAX_TAGS:
        raise InvalidField(field, f"at most {MAX_TAGS} tags")
    return [check_text(f"{field}[{i}]", t, required=True, max_bytes=MAX_TAG_BYTES) for i, t in enumerate(values)]


def check_priority(field: str, value: int) -> int:
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidField(field, f"must be {MIN_PRIORITY} (critical) to {MAX_PRIORITY} (minimal), got {value}")
    return value


def check_limit(field: str, value: int, most: int) -> int:
    if not 1 <= value <= most:
        raise InvalidField(field, f"must be 1 to {most}, got {value}")
    return value


def positive_seconds(field: str, value: duration_pb2.Duration) -> float:
    """A claim ttl or aging interval in seconds: positive, at most MAX_SECONDS."""
    seconds = value.seconds + value.nanos / 1e9
    if not seconds > 0:
        raise InvalidField(field, "must be a positive duration")
    if seconds > MAX_SECONDS:
        raise InvalidField(field, f"must be at most {int(MAX_SECONDS)} seconds")
    return seconds

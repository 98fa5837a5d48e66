"""Durable snapshot blobs: the `SYRS` v1 envelope and its codecs.

A stored blob is `b"SYRS" + format_version (1) + codec_id + payload`
(Sayiir's `docs/FORMAT.md`). Codec 1 is serde JSON, byte-for-byte as the Rust
engine writes it, so the engine and this service read each other's rows.
Codec 0x50 ("P") is the protobuf encoding of `sayiir.v1.WorkflowSnapshot`: a
binary codec of our own, outside the engine's ids (1 JSON, 2 rkyv) so no
reader can mistake one for the other. The engine cannot read codec 0x50
blobs; use JSON on a database the engine shares.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
from collections.abc import Callable
from typing import Any

import orjson

from sayiir_common import convert
from sayiir_common.checks import InvalidField
from sayiir_common.errors import SerializationError
from sayiir_common.ids import DefinitionHash, TaskId
from sayiir_common.model import (
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    AtDelay,
    AtFork,
    AtJoin,
    AtSignal,
    AtTask,
    Cancelled,
    Completed,
    Duration,
    ExecutionPosition,
    Failed,
    InLoop,
    InProgress,
    NotStarted,
    Paused,
    RetryPolicy,
    TaskDeadline,
    TaskResult,
    TaskRetryState,
    Timestamp,
    WorkflowSnapshot,
    WorkflowSnapshotState,
)
from sayiir_common.proto.sayiir.v1 import snapshot_pb2 as pb

MAGIC = b"SYRS"
FORMAT_VERSION = 1
HEADER_LEN = 6


class CodecId(enum.IntEnum):
    """The codec byte of the envelope."""

    JSON = 1
    RKYV = 2  # the engine's binary codec; recognised, never decoded here
    PROTOBUF = 0x50

    @property
    def label(self) -> str:
        return {CodecId.JSON: "json", CodecId.RKYV: "rkyv", CodecId.PROTOBUF: "protobuf"}[self]


def frame(codec: CodecId, payload: bytes) -> bytes:
    return MAGIC + bytes((FORMAT_VERSION, codec)) + payload


def unframe(blob: bytes) -> tuple[CodecId, bytes]:
    """Split a blob into its codec and payload, checking the header."""
    if not blob.startswith(MAGIC):
        raise SerializationError(
            "not a Sayiir 1.0+ snapshot (missing SYRS magic header): this looks like a "
            "pre-1.0 headerless snapshot; drain in-flight workflows on the old version"
        )
    if len(blob) < HEADER_LEN:
        raise SerializationError(f"snapshot blob is truncated (shorter than the {HEADER_LEN}-byte header)")
    if blob[4] != FORMAT_VERSION:
        raise SerializationError(
            f"unsupported snapshot format version {blob[4]} (this build reads version {FORMAT_VERSION})"
        )
    try:
        codec = CodecId(blob[5])
    except ValueError:
        raise SerializationError(f"unknown snapshot codec id: {blob[5]}") from None
    return codec, blob[HEADER_LEN:]


class SnapshotCodec:
    """Encodes and decodes whole enveloped blobs for one codec."""

    codec_id: CodecId

    def encode_payload(self, snapshot: WorkflowSnapshot) -> bytes:
        raise NotImplementedError

    def decode_payload(self, payload: bytes) -> WorkflowSnapshot:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.codec_id.label

    def encode(self, snapshot: WorkflowSnapshot) -> bytes:
        return frame(self.codec_id, self.encode_payload(snapshot))

    def decode(self, blob: bytes) -> WorkflowSnapshot:
        codec, payload = unframe(blob)
        if codec != self.codec_id:
            raise SerializationError(
                f"snapshot codec mismatch: blob was written with `{codec.label}` but this "
                f"backend is configured with `{self.codec_id.label}`"
            )
        try:
            return self.decode_payload(payload)
        except SerializationError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SerializationError(f"cannot decode {self.codec_id.label} snapshot: {exc}") from exc


# --------------------------------------------------------------------------
# JSON: serde_json's output for the Rust structs, field order included
# --------------------------------------------------------------------------


def _str(value: str) -> str:
    # serde_json, orjson and json.dumps(ensure_ascii=False) escape the same
    # characters the same way: the quote, the backslash and control
    # characters below 0x20 (tests/unit/test_codec.py compares all three).
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:  # a lone surrogate, which no UTF-8 blob can hold anyway
        return json.dumps(value, ensure_ascii=False)


def _opt_str(value: str | None) -> str:
    return "null" if value is None else _str(value)


def _bytes(value: bytes) -> str:
    # The `bytes` crate serializes a buffer as a sequence of integers.
    return orjson.dumps(list(value)).decode("ascii")


def _id(value: TaskId | DefinitionHash) -> str:
    return '"' + value.to_hex() + '"'


def _opt_id(value: TaskId | None) -> str:
    return "null" if value is None else _id(value)


def format_rfc3339(ts: Timestamp) -> str:
    """chrono's serde form of a `DateTime<Utc>`: 0, 3, 6 or 9 fraction digits, then Z."""
    if ts.seconds < MIN_TIMESTAMP_SECONDS or ts.seconds > MAX_TIMESTAMP_SECONDS:
        raise ValueError("timestamp out of range")
    d = ts.to_datetime()
    text = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
    nanos = ts.nanos
    if nanos == 0:
        fraction = ""
    elif nanos % 1_000_000 == 0:
        fraction = f".{nanos // 1_000_000:03d}"
    elif nanos % 1_000 == 0:
        fraction = f".{nanos // 1_000:06d}"
    else:
        fraction = f".{nanos:09d}"
    return f"{text}{fraction}Z"


_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?(Z|z|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(text: str) -> Timestamp:
    match = _RFC3339_RE.match(text)
    if match is None:
        raise SerializationError(f"invalid RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7) or ""
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    import calendar

    seconds = calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0))
    offset = match.group(8)
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        seconds -= sign * (int(offset[1:3]) * 3600 + int(offset[4:6]) * 60)
    return Timestamp(seconds, nanos)


def format_f32(value: float) -> str:
    """serde_json's (ryu) text for an `f32`: the shortest digits that round-trip."""
    if math.isnan(value) or math.isinf(value):
        return "null"  # serde_json writes non-finite floats as null
    as_f32 = struct.unpack("<f", struct.pack("<f", value))[0]
    if as_f32 == 0.0:
        return "-0.0" if math.copysign(1.0, as_f32) < 0 else "0.0"
    for precision in range(1, 10):
        digits = f"{as_f32:.{precision}e}" if precision > 1 else f"{as_f32:.0e}"
        try:
            if struct.unpack("<f", struct.pack("<f", float(digits)))[0] == as_f32:
                break
        except OverflowError:  # rounding up past the largest f32
            continue
    mantissa, exponent_text = digits.split("e")
    sign = "-" if mantissa.startswith("-") else ""
    # value = int(ds) * 10**k, ds the shortest round-trip digits.
    ds = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    k = int(exponent_text) - (len(ds) - 1)
    kk = len(ds) + k  # 10**(kk-1) <= value < 10**kk
    # ryu's f32 layout (serde_json): plain decimal while kk is in (-6, 13].
    if k >= 0 and kk <= 13:
        return f"{sign}{ds}{'0' * k}.0"
    if 0 < kk <= 13:
        return f"{sign}{ds[:kk]}.{ds[kk:]}"
    if -6 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{ds}"
    exponent = kk - 1
    if len(ds) == 1:
        return f"{sign}{ds}e{exponent}"
    return f"{sign}{ds[0]}.{ds[1:]}e{exponent}"


def _duration(value: Duration) -> str:
    return f'{{"secs":{value.secs},"nanos":{value.nanos}}}'


def _task_result(value: TaskResult) -> str:
    return f'{{"task_id":{_id(value.task_id)},"output":{_bytes(value.output)}}}'


def _completed_tasks(tasks: dict[TaskId, TaskResult]) -> str:
    return "{" + ",".join(f"{_id(tid)}:{_task_result(r)}" for tid, r in tasks.items()) + "}"


def _branches(branches: dict[str, TaskResult]) -> str:
    return "{" + ",".join(f"{_str(k)}:{_task_result(r)}" for k, r in branches.items()) + "}"


def _position(position: ExecutionPosition) -> str:
    if isinstance(position, NotStarted):
        return '"NotStarted"'
    if isinstance(position, AtTask):
        return f'{{"AtTask":{{"task_id":{_id(position.task_id)}}}}}'
    if isinstance(position, AtFork):
        return (
            f'{{"AtFork":{{"fork_id":{_id(position.fork_id)},'
            f'"completed_branches":{_branches(position.completed_branches)},'
            f'"wake_at":"{format_rfc3339(position.wake_at)}"}}}}'
        )
    if isinstance(position, AtJoin):
        return (
            f'{{"AtJoin":{{"join_id":{_id(position.join_id)},'
            f'"completed_branches":{_branches(position.completed_branches)}}}}}'
        )
    if isinstance(position, AtDelay):
        return (
            f'{{"AtDelay":{{"delay_id":{_id(position.delay_id)},'
            f'"entered_at":"{format_rfc3339(position.entered_at)}",'
            f'"wake_at":"{format_rfc3339(position.wake_at)}",'
            f'"next_task_id":{_opt_id(position.next_task_id)}}}}}'
        )
    if isinstance(position, AtSignal):
        wake = "null" if position.wake_at is None else f'"{format_rfc3339(position.wake_at)}"'
        return (
            f'{{"AtSignal":{{"signal_id":{_id(position.signal_id)},'
            f'"signal_name":{_str(position.signal_name)},"wake_at":{wake},'
            f'"next_task_id":{_opt_id(position.next_task_id)}}}}}'
        )
    if isinstance(position, InLoop):
        return (
            f'{{"InLoop":{{"loop_id":{_id(position.loop_id)},"iteration":{position.iteration},'
            f'"next_task_id":{_opt_id(position.next_task_id)}}}}}'
        )
    raise TypeError(f"unknown position {type(position).__name__}")


def _state(state: WorkflowSnapshotState) -> str:
    if isinstance(state, InProgress):
        return (
            f'{{"InProgress":{{"position":{_position(state.position)},'
            f'"completed_tasks":{_completed_tasks(state.completed_tasks)},'
            f'"last_completed_task_id":{_opt_id(state.last_completed_task_id)}}}}}'
        )
    if isinstance(state, Completed):
        return f'{{"Completed":{{"final_output":{_bytes(state.final_output)}}}}}'
    if isinstance(state, Failed):
        return f'{{"Failed":{{"error":{_str(state.error)}}}}}'
    if isinstance(state, Cancelled):
        return (
            f'{{"Cancelled":{{"reason":{_opt_str(state.reason)},'
            f'"cancelled_by":{_opt_str(state.cancelled_by)},'
            f'"cancelled_at":"{format_rfc3339(state.cancelled_at)}",'
            f'"completed_tasks":{_completed_tasks(state.completed_tasks)},'
            f'"interrupted_at_task":{_opt_id(state.interrupted_at_task)}}}}}'
        )
    if isinstance(state, Paused):
        return (
            f'{{"Paused":{{"reason":{_opt_str(state.reason)},'
            f'"paused_by":{_opt_str(state.paused_by)},'
            f'"paused_at":"{format_rfc3339(state.paused_at)}",'
            f'"completed_tasks":{_completed_tasks(state.completed_tasks)},'
            f'"position":{_position(state.position)},'
            f'"last_completed_task_id":{_opt_id(state.last_completed_task_id)}}}}}'
        )
    raise TypeError(f"unknown state {type(state).__name__}")


def _retry_state(value: TaskRetryState) -> str:
    policy = value.policy
    max_delay = "null" if policy.max_delay is None else _duration(policy.max_delay)
    return (
        f'{{"attempts":{value.attempts},"policy":{{"max_retries":{policy.max_retries},'
        f'"initial_delay":{_duration(policy.initial_delay)},'
        f'"backoff_multiplier":{format_f32(policy.backoff_multiplier)},"max_delay":{max_delay}}},'
        f'"last_error":{_str(value.last_error)},'
        f'"last_failed_worker":{_opt_str(value.last_failed_worker)},'
        f'"next_retry_at":"{format_rfc3339(value.next_retry_at)}"}}'
    )


def encode_json(snapshot: WorkflowSnapshot) -> bytes:
    """The serde_json bytes of a snapshot (fields in Rust declaration order)."""
    parts = [
        f'{{"instance_id":{_str(snapshot.instance_id)}',
        f'"definition_hash":{_id(snapshot.definition_hash)}',
        f'"state":{_state(snapshot.state)}',
        f'"created_at":{snapshot.created_at}',
        f'"updated_at":{snapshot.updated_at}',
    ]
    # Fields the Rust struct skips when None or empty.
    if snapshot.initial_input is not None:
        parts.append(f'"initial_input":{_bytes(snapshot.initial_input)}')
    if snapshot.task_deadline is not None:
        d = snapshot.task_deadline
        parts.append(
            f'"task_deadline":{{"task_id":{_id(d.task_id)},'
            f'"deadline":"{format_rfc3339(d.deadline)}","timeout_ms":{d.timeout_ms}}}'
        )
    if snapshot.task_retries:
        body = ",".join(f"{_id(k)}:{_retry_state(v)}" for k, v in snapshot.task_retries.items())
        parts.append(f'"task_retries":{{{body}}}')
    if snapshot.loop_iterations:
        body = ",".join(f"{_id(k)}:{v}" for k, v in snapshot.loop_iterations.items())
        parts.append(f'"loop_iterations":{{{body}}}')
    if snapshot.task_priority is not None:
        parts.append(f'"task_priority":{snapshot.task_priority}')
    if snapshot.task_tags:
        parts.append('"task_tags":[' + ",".join(_str(t) for t in snapshot.task_tags) + "]")
    return (",".join(parts) + "}").encode("utf-8")


# -- JSON decoding ----------------------------------------------------------


def _need(obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise SerializationError(f"snapshot JSON is missing field `{key}`")
    return obj[key]


def _dec_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")  # serde's bytes visitor also accepts a string
    return bytes(value)


def _dec_id(value: Any) -> TaskId:
    return TaskId.from_hex(value)


def _dec_opt_id(value: Any) -> TaskId | None:
    return None if value is None else TaskId.from_hex(value)


def _dec_ts(value: Any) -> Timestamp:
    return parse_rfc3339(value)


def _dec_duration(value: Any) -> Duration:
    return Duration(int(value["secs"]), int(value["nanos"]))


def _dec_task_result(value: Any) -> TaskResult:
    return TaskResult(_dec_id(_need(value, "task_id")), _dec_bytes(_need(value, "output")))


def _dec_completed(value: Any) -> dict[TaskId, TaskResult]:
    return {TaskId.from_hex(k): _dec_task_result(v) for k, v in (value or {}).items()}


def _dec_branches(value: Any) -> dict[str, TaskResult]:
    return {k: _dec_task_result(v) for k, v in (value or {}).items()}


def _variant(value: Any, what: str) -> tuple[str, Any]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and len(value) == 1:
        ((name, body),) = value.items()
        return name, body
    raise SerializationError(f"snapshot JSON has a malformed {what}: {value!r:.80}")


def _dec_position(value: Any) -> ExecutionPosition:
    name, body = _variant(value, "position")
    decoders: dict[str, Callable[[Any], ExecutionPosition]] = {
        "NotStarted": lambda b: NotStarted(),
        "AtTask": lambda b: AtTask(_dec_id(_need(b, "task_id"))),
        "AtFork": lambda b: AtFork(
            _dec_id(_need(b, "fork_id")),
            _dec_branches(b.get("completed_branches")),
            _dec_ts(_need(b, "wake_at")),
        ),
        "AtJoin": lambda b: AtJoin(_dec_id(_need(b, "join_id")), _dec_branches(b.get("completed_branches"))),
        "AtDelay": lambda b: AtDelay(
            _dec_id(_need(b, "delay_id")),
            _dec_ts(_need(b, "entered_at")),
            _dec_ts(_need(b, "wake_at")),
            _dec_opt_id(b.get("next_task_id")),
        ),
        "AtSignal": lambda b: AtSignal(
            _dec_id(_need(b, "signal_id")),
            _need(b, "signal_name"),
            None if b.get("wake_at") is None else _dec_ts(b["wake_at"]),
            _dec_opt_id(b.get("next_task_id")),
        ),
        "InLoop": lambda b: InLoop(
            _dec_id(_need(b, "loop_id")), int(_need(b, "iteration")), _dec_opt_id(b.get("next_task_id"))
        ),
    }
    if name not in decoders:
        raise SerializationError(f"snapshot JSON has an unknown position `{name}`")
    return decoders[name](body)


def _dec_state(value: Any) -> WorkflowSnapshotState:
    name, b = _variant(value, "state")
    if name == "InProgress":
        return InProgress(
            _dec_position(_need(b, "position")),
            _dec_completed(b.get("completed_tasks")),
            _dec_opt_id(b.get("last_completed_task_id")),
        )
    if name == "Completed":
        return Completed(_dec_bytes(_need(b, "final_output")))
    if name == "Failed":
        return Failed(_need(b, "error"))
    if name == "Cancelled":
        return Cancelled(
            b.get("reason"),
            b.get("cancelled_by"),
            _dec_ts(_need(b, "cancelled_at")),
            _dec_completed(b.get("completed_tasks")),
            _dec_opt_id(b.get("interrupted_at_task")),
        )
    if name == "Paused":
        return Paused(
            b.get("reason"),
            b.get("paused_by"),
            _dec_ts(_need(b, "paused_at")),
            _dec_completed(b.get("completed_tasks")),
            _dec_position(_need(b, "position")),
            _dec_opt_id(b.get("last_completed_task_id")),
        )
    raise SerializationError(f"snapshot JSON has an unknown state `{name}`")


def _dec_retry(value: Any) -> TaskRetryState:
    p = _need(value, "policy")
    max_retries = p["max_retries"] if "max_retries" in p else _need(p, "max_attempts")
    policy = RetryPolicy(
        int(max_retries),
        _dec_duration(_need(p, "initial_delay")),
        float(_need(p, "backoff_multiplier")),
        None if p.get("max_delay") is None else _dec_duration(p["max_delay"]),
    )
    return TaskRetryState(
        attempts=int(_need(value, "attempts")),
        policy=policy,
        last_error=_need(value, "last_error"),
        next_retry_at=_dec_ts(_need(value, "next_retry_at")),
        last_failed_worker=value.get("last_failed_worker"),
    )


def decode_json(payload: bytes) -> WorkflowSnapshot:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"snapshot payload is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise SerializationError("snapshot JSON is not an object")
    deadline = obj.get("task_deadline")
    return WorkflowSnapshot(
        instance_id=_need(obj, "instance_id"),
        definition_hash=DefinitionHash.from_hex(_need(obj, "definition_hash")),
        state=_dec_state(_need(obj, "state")),
        created_at=int(_need(obj, "created_at")),
        updated_at=int(_need(obj, "updated_at")),
        initial_input=None if obj.get("initial_input") is None else _dec_bytes(obj["initial_input"]),
        task_deadline=None
        if deadline is None
        else TaskDeadline(
            _dec_id(_need(deadline, "task_id")),
            _dec_ts(_need(deadline, "deadline")),
            int(_need(deadline, "timeout_ms")),
        ),
        task_retries={TaskId.from_hex(k): _dec_retry(v) for k, v in (obj.get("task_retries") or {}).items()},
        loop_iterations={TaskId.from_hex(k): int(v) for k, v in (obj.get("loop_iterations") or {}).items()},
        task_priority=None if obj.get("task_priority") is None else int(obj["task_priority"]),
        task_tags=list(obj.get("task_tags") or []),
    )


class JsonCodec(SnapshotCodec):
    """Codec 1: serde JSON, the engine's default and the service's default."""

    codec_id = CodecId.JSON

    def encode_payload(self, snapshot: WorkflowSnapshot) -> bytes:
        return encode_json(snapshot)

    def decode_payload(self, payload: bytes) -> WorkflowSnapshot:
        return decode_json(payload)


class ProtobufCodec(SnapshotCodec):
    """Codec 0x50: deterministic protobuf of `sayiir.v1.WorkflowSnapshot`.

    `trace_parent` is dropped from the blob, as in JSON: it lives in its column.
    """

    codec_id = CodecId.PROTOBUF

    def encode_payload(self, snapshot: WorkflowSnapshot) -> bytes:
        message = convert.snapshot_to_proto(snapshot)
        message.ClearField("trace_parent")
        return message.SerializeToString(deterministic=True)

    def decode_payload(self, payload: bytes) -> WorkflowSnapshot:
        message = pb.WorkflowSnapshot()
        try:
            message.ParseFromString(payload)
        except Exception as exc:  # protobuf raises DecodeError or a RuntimeError subclass
            raise SerializationError(f"snapshot payload is not a valid protobuf: {exc}") from exc
        try:
            return convert.snapshot_from_proto(message)
        except InvalidField as exc:
            raise SerializationError(f"stored protobuf snapshot is invalid: {exc}") from exc


CODECS: dict[str, SnapshotCodec] = {"json": JsonCodec(), "protobuf": ProtobufCodec()}


def codec_by_name(name: str) -> SnapshotCodec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}") from None

"""The SYRS envelope and both codecs, without a database."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings

from sayiir_common import convert
from sayiir_common.codec import (
    CodecId,
    JsonCodec,
    ProtobufCodec,
    encode_json,
    format_f32,
    format_rfc3339,
    frame,
    parse_rfc3339,
    unframe,
)
from sayiir_common.errors import SerializationError
from sayiir_common.ids import DefinitionHash, TaskId
from sayiir_common.model import (
    AtTask,
    Duration,
    RetryPolicy,
    TaskDeadline,
    TaskRetryState,
    Timestamp,
    WorkflowSnapshot,
)
from strategies.snapshots import snapshots


def test_header_layout() -> None:
    blob = frame(CodecId.JSON, b"payload")
    assert blob == b"SYRS\x01\x01payload"
    assert frame(CodecId.PROTOBUF, b"")[5] not in (1, 2)


@pytest.mark.parametrize(
    ("blob", "needle"),
    [
        (b'{"instance_id":"wf-1"}', "pre-1.0"),
        (b"abc", "missing SYRS magic"),
        (b"SYRS\x01", "truncated"),
        (b"SYRS\x02\x01{}", "unsupported snapshot format version 2"),
        (b"SYRS\x01\x63{}", "unknown snapshot codec id: 99"),
    ],
)
def test_bad_headers_are_rejected(blob: bytes, needle: str) -> None:
    with pytest.raises(SerializationError, match=needle):
        JsonCodec().decode(blob)


def test_codec_mismatch_names_both_codecs() -> None:
    snapshot = WorkflowSnapshot.new("wf", "h")
    with pytest.raises(SerializationError) as info:
        JsonCodec().decode(ProtobufCodec().encode(snapshot))
    assert "`protobuf`" in info.value.message and "`json`" in info.value.message
    with pytest.raises(SerializationError, match=r"`rkyv`.*`protobuf`"):
        ProtobufCodec().decode(frame(CodecId.RKYV, b"\x00"))


def test_unframe_splits_payload() -> None:
    assert unframe(b"SYRS\x01\x01xyz") == (CodecId.JSON, b"xyz")


@pytest.mark.parametrize(
    ("ts", "text"),
    [
        (Timestamp(1_700_000_000), "2023-11-14T22:13:20Z"),
        (Timestamp(1_700_000_000, 5_000_000), "2023-11-14T22:13:20.005Z"),
        (Timestamp(1_700_000_000, 5_000), "2023-11-14T22:13:20.000005Z"),
        (Timestamp(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z"),
        (Timestamp(0), "1970-01-01T00:00:00Z"),
        (Timestamp(-62_135_596_800), "0001-01-01T00:00:00Z"),
    ],
)
def test_rfc3339_matches_chrono(ts: Timestamp, text: str) -> None:
    assert format_rfc3339(ts) == text
    assert parse_rfc3339(text) == ts


def test_rfc3339_parses_offsets() -> None:
    assert parse_rfc3339("2023-11-14T23:13:20+01:00") == Timestamp(1_700_000_000)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.0, "2.0"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (3.0, "3.0"),
        (0.0, "0.0"),
        (1e20, "1e20"),
        (123456.0, "123456.0"),
        (0.00001, "0.00001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (0.0001, "0.0001"),
        (1.1, "1.1"),
        (-2.5, "-2.5"),
        (1e12, "1000000000000.0"),
        (3.4028234663852886e38, "3.4028235e38"),
        (3.4025001647762064e38, "3.4025002e38"),
        (1e13, "1e13"),
        (1.25e15, "1.25e15"),
        (123.456, "123.456"),
    ],
)
def test_f32_text_matches_serde(value: float, text: str) -> None:
    assert format_f32(value) == text


def test_json_layout_matches_serde() -> None:
    task = TaskId(b"\x11" * 32)
    retry_task = TaskId(b"\x22" * 32)
    snapshot = WorkflowSnapshot(
        instance_id="wf-layout",
        definition_hash=DefinitionHash(b"\x44" * 32),
        created_at=1_700_000_000,
        updated_at=1_700_000_500,
        initial_input=b'"hi"',
        task_deadline=TaskDeadline(task, Timestamp(1_700_000_000), 30_000),
        task_retries={
            retry_task: TaskRetryState(
                2, RetryPolicy(3, Duration(0, 100_000_000), 2.0, Duration(10)), "boom", Timestamp(1_700_000_000), "w-7"
            )
        },
        loop_iterations={TaskId(b"\x33" * 32): 4},
        task_priority=3,
        task_tags=["gpu", "cuda-12"],
    )
    snapshot.update_position(AtTask(task))
    snapshot.updated_at = 1_700_000_500
    text = encode_json(snapshot).decode()
    hex11, hex22 = "11" * 32, "22" * 32
    assert text == (
        '{"instance_id":"wf-layout","definition_hash":"' + "44" * 32 + '",'
        '"state":{"InProgress":{"position":{"AtTask":{"task_id":"' + hex11 + '"}},"completed_tasks":{},'
        '"last_completed_task_id":null}},"created_at":1700000000,"updated_at":1700000500,'
        '"initial_input":[34,104,105,34],'
        '"task_deadline":{"task_id":"' + hex11 + '","deadline":"2023-11-14T22:13:20Z","timeout_ms":30000},'
        '"task_retries":{"' + hex22 + '":{"attempts":2,"policy":{"max_retries":3,'
        '"initial_delay":{"secs":0,"nanos":100000000},"backoff_multiplier":2.0,"max_delay":{"secs":10,"nanos":0}},'
        '"last_error":"boom","last_failed_worker":"w-7","next_retry_at":"2023-11-14T22:13:20Z"}},'
        '"loop_iterations":{"' + "33" * 32 + '":4},"task_priority":3,"task_tags":["gpu","cuda-12"]}'
    )
    assert json.loads(text)  # and it is JSON


def test_strings_are_escaped_like_serde() -> None:
    snapshot = WorkflowSnapshot.new('q"\\\n\t\x01ü🚀/', "h")
    snapshot.mark_failed("\x7f\u2028")
    text = encode_json(snapshot).decode()
    assert '"instance_id":"q\\"\\\\\\n\\t\\u0001ü🚀/"' in text
    assert '"error":"\x7f\u2028"' in text


def test_every_character_is_escaped_as_serde_escapes_it() -> None:
    # serde_json escapes `"`, `\\` and U+0000..U+001F (\b \t \n \f \r short,
    # the rest as lowercase \u00XX) and nothing else; so does
    # json.dumps(ensure_ascii=False), the reference the fast path is held to.
    step = 4096
    for start in range(0, 0x110000, step):
        chunk = "".join(chr(c) for c in range(start, min(start + step, 0x110000)) if not 0xD800 <= c <= 0xDFFF)
        snapshot = WorkflowSnapshot.new(chunk, "h")
        expected = json.dumps(chunk, ensure_ascii=False)
        assert encode_json(snapshot).decode().startswith('{"instance_id":' + expected + ",")
    assert json.dumps("\x08\x0c\x1f", ensure_ascii=False) == '"\\b\\f\\u001f"'


def test_byte_buffers_are_integer_arrays() -> None:
    snapshot = WorkflowSnapshot.with_initial_input("wf", "h", bytes(range(256)))
    text = encode_json(snapshot).decode()
    assert '"initial_input":[' + ",".join(str(b) for b in range(256)) + "]" in text


@pytest.mark.parametrize(
    "payload",
    [b"{", b'{"instance_id":"\\ud800"}', b"\xff", b'{"a":NaN}', b'{"created_at":' + b"9" * 30 + b"}"],
)
def test_payloads_serde_refuses_are_serialization_errors(payload: bytes) -> None:
    with pytest.raises(SerializationError):
        JsonCodec().decode(frame(CodecId.JSON, payload))


def test_reads_the_max_attempts_alias_and_ignores_unknown_fields() -> None:
    snapshot = WorkflowSnapshot.new("wf", "h")
    snapshot.task_retries[TaskId.sha256("t")] = TaskRetryState(1, RetryPolicy(5), "e", Timestamp(0))
    payload = json.loads(encode_json(snapshot))
    policy = next(iter(payload["task_retries"].values()))["policy"]
    policy["max_attempts"] = policy.pop("max_retries")
    payload["a_future_field"] = {"x": 1}
    decoded = JsonCodec().decode(frame(CodecId.JSON, json.dumps(payload).encode()))
    assert decoded.task_retries[TaskId.sha256("t")].policy.max_retries == 5


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_json_codec_round_trips(snapshot: WorkflowSnapshot) -> None:
    codec = JsonCodec()
    blob = codec.encode(snapshot)
    decoded = codec.decode(blob)
    assert decoded == snapshot
    assert codec.encode(decoded) == blob  # stable bytes


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_protobuf_codec_round_trips(snapshot: WorkflowSnapshot) -> None:
    codec = ProtobufCodec()
    blob = codec.encode(snapshot)
    assert blob[:6] == b"SYRS\x01\x50"
    assert codec.decode(blob) == snapshot


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_model_round_trips_through_proto(snapshot: WorkflowSnapshot) -> None:
    message = convert.snapshot_to_proto(snapshot)
    wire = message.SerializeToString()
    parsed = type(message)()
    parsed.ParseFromString(wire)
    assert convert.snapshot_from_proto(parsed) == snapshot


def test_timestamps_compare_with_datetimes() -> None:
    from datetime import UTC, datetime

    moment = datetime(2030, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    ts = Timestamp.from_datetime(moment)
    assert ts == moment and ts.to_datetime() == moment
    assert Timestamp(ts.seconds, ts.nanos + 1) > moment
    assert sorted([Timestamp(5), Timestamp(1, 5), Timestamp(1)]) == [Timestamp(1), Timestamp(1, 5), Timestamp(5)]

"""Blobs written by the real engine (sayiir 1.0.0) against our JSON codec.

The fixture `golden/engine_blobs.json` holds every history row of 45
workflow instances that `fixtures/generate_golden.py` ran through the
engine: all states, positions, retries, loops, deadlines, tags, priority.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sayiir_common import convert
from sayiir_common.codec import JsonCodec, ProtobufCodec

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "engine_blobs.json").read_text())
ROWS = [
    pytest.param(bytes.fromhex(row["data"]), id=f"{name}-v{row['version']}")
    for name, case in GOLDEN["cases"].items()
    for row in case["history"]
]


def test_the_fixture_covers_every_state_and_most_positions() -> None:
    codec = JsonCodec()
    states, positions = set(), set()
    for param in ROWS:
        snapshot = codec.decode(param.values[0])  # type: ignore[arg-type]
        states.add(snapshot.state.kind)
        positions.add(snapshot.position_kind())
    assert states == {"InProgress", "Completed", "Failed", "Cancelled", "Paused"}
    # The engine never stores NotStarted (it saves at the first task), and AtFork
    # needs a delay inside a fork branch, which its Python API cannot build.
    assert {"AtTask", "AtJoin", "AtDelay", "AtSignal", "InLoop"} <= positions


@pytest.mark.parametrize("blob", ROWS)
def test_engine_blob_re_encodes_byte_for_byte(blob: bytes) -> None:
    codec = JsonCodec()
    snapshot = codec.decode(blob)
    assert codec.encode(snapshot) == blob


@pytest.mark.parametrize("blob", ROWS)
def test_engine_blob_survives_proto_and_the_protobuf_codec(blob: bytes) -> None:
    snapshot = JsonCodec().decode(blob)
    through_proto = convert.snapshot_from_proto(convert.snapshot_to_proto(snapshot))
    assert JsonCodec().encode(through_proto) == blob
    protobuf = ProtobufCodec()
    assert JsonCodec().encode(protobuf.decode(protobuf.encode(snapshot))) == blob

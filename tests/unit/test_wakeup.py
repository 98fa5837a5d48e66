"""Wakeup hints: the engine's NOTIFY payload format, tag filtering, and drop counting."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sayiir_common.ids import DefinitionHash, TaskId
from sayiir_common.model import HintFormatError, TaskWakeupHint
from sayiir_grpc.wakeup import SUBSCRIBER_QUEUE_SIZE, WakeupHub

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "engine_blobs.json").read_text())


@pytest.mark.parametrize("payload", [p["payload"] for p in GOLDEN["notify_payloads"]])
def test_engine_payloads_decode_and_re_encode_identically(payload: str) -> None:
    hint = TaskWakeupHint.decode(payload)
    assert hint.encode() == payload


@pytest.mark.parametrize("payload", ["", "!!!", "AQ", "Ag", "AgUAAAAAAAAAYWI"])
def test_malformed_payloads_are_rejected(payload: str) -> None:
    with pytest.raises(HintFormatError):
        TaskWakeupHint.decode(payload)


def _hint(tags: tuple[str, ...] = ()) -> TaskWakeupHint:
    return TaskWakeupHint("wf", TaskId.sha256("t"), DefinitionHash.sha256("d"), tags)


async def test_hints_go_only_to_streams_whose_tags_allow_them() -> None:
    hub = WakeupHub("postgresql://unused")
    anyone, gpu, cpu = hub.subscribe([]), hub.subscribe(["gpu", "eu"]), hub.subscribe(["cpu"])
    hub.publish(_hint(("gpu",)))
    hub.publish(_hint())
    assert anyone.queue.qsize() == 2 and gpu.queue.qsize() == 2 and cpu.queue.qsize() == 1
    assert hub.hints_sent == 5 and hub.hints_dropped == 0


async def test_a_slow_stream_loses_hints_and_they_are_counted() -> None:
    hub = WakeupHub("postgresql://unused")
    dropped: list[int] = []
    hub.on_dropped = dropped.append
    slow = hub.subscribe([])
    for _ in range(SUBSCRIBER_QUEUE_SIZE + 76):
        hub.publish(_hint())
    assert slow.queue.qsize() == SUBSCRIBER_QUEUE_SIZE
    assert hub.hints_dropped == 76 and sum(dropped) == 76
    await hub.stop()  # ends the stream even with a full queue
    items = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
    assert items[-1] is None
    await asyncio.sleep(0)

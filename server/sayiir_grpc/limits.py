"""Every reply stays within the message limit (SAYIIR_MAX_MESSAGE_BYTES).

Two rules keep it so. A write that would make a workflow's snapshot too
large to be returned (by LoadSnapshot, or as one task of FindAvailableTasks
or ClaimAvailableTasks, which also carry the task's input) is refused with
RESOURCE_EXHAUSTED. Replies that list several items stop adding them before
the limit and say that more remain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from sayiir_common import convert
from sayiir_common.errors import ResourceExhaustedError
from sayiir_common.model import AvailableTask, WorkflowSnapshot
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_pb

# Room for a reply's own fields, the gRPC framing and a task's ids.
REPLY_HEADROOM = 4096
# The tag and length prefix of one item of a repeated field.
ITEM_OVERHEAD = 10
DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024

_max_reply_bytes = [DEFAULT_MAX_REPLY_BYTES]


def set_max_reply_bytes(limit: int) -> None:
    """The service's message limit (set once at start)."""
    _max_reply_bytes[0] = limit


def max_reply_bytes() -> int:
    return _max_reply_bytes[0]


def fitting(sizes: Iterable[int]) -> int:
    """How many of the leading items (of these serialized sizes) fit in one reply."""
    room = max_reply_bytes() - REPLY_HEADROOM
    count = 0
    for size in sizes:
        room -= size + ITEM_OVERHEAD
        if room < 0:
            break
        count += 1
    return count


async def add_fitting_tasks(
    reply_tasks: RepeatedCompositeFieldContainer[claim_pb.AvailableTask],
    tasks: Sequence[AvailableTask],
    with_snapshot: bool = True,
) -> int:
    """Add the leading `tasks` that fit in one reply to `reply_tasks`; how many.

    A reply of a few MB costs milliseconds per copy, so each task is built in
    place (a message appended, or passed to the reply's constructor, is
    serialized and parsed again), a task whose input alone exceeds the room
    left is never built, and the event loop gets a turn between tasks.
    """
    room = max_reply_bytes() - REPLY_HEADROOM
    for count, task in enumerate(tasks):
        if count:
            await asyncio.sleep(0)
        least = len(task.input or b"") + (len(task.snapshot.initial_input or b"") if with_snapshot else 0)
        if least + ITEM_OVERHEAD > room:
            return count
        message = reply_tasks.add()
        convert.fill_available_task(message, task, with_snapshot)
        room -= message.ByteSize() + ITEM_OVERHEAD
        if room < 0:
            del reply_tasks[-1]
            return count
    return len(tasks)


def check_snapshot_fits(snapshot: WorkflowSnapshot, limit: int | None = None) -> None:
    """Refuse a snapshot that no reply could carry, naming its size and the limit.

    `limit` defaults to the service's; the worker process passes it (it has
    its own copy of this module, never set).
    """
    limit = max_reply_bytes() if limit is None else limit
    outputs = [r.output for r in (getattr(snapshot.state, "completed_tasks", None) or {}).values()]
    largest_input = max([len(snapshot.initial_input or b""), *map(len, outputs)])
    final = snapshot.final_output_bytes() or b""
    # A generous bound first: most snapshots are far below the limit, and
    # then the exact size (a conversion to the reply message) is not needed.
    rough = len(snapshot.initial_input or b"") + sum(map(len, outputs)) + len(final) + 200 * len(outputs)
    if 2 * (rough + largest_input) + 4 * REPLY_HEADROOM < limit:
        return
    size = convert.snapshot_to_proto(snapshot).ByteSize()
    needed = size + largest_input + REPLY_HEADROOM
    if needed > limit:
        raise ResourceExhaustedError(
            f"the workflow {snapshot.instance_id[:256]!r} would need {needed} bytes in a reply "
            f"(snapshot {size}, largest task input {largest_input}), over the {limit}-byte message limit "
            "(SAYIIR_MAX_MESSAGE_BYTES)"
        )

"""The service's own statements, with no store logic: what bench/floor.py's
server runs per call with `--sql service`.

The service's database work per linear workflow is its SQL: a keyed save
(SAVE_SNAPSHOT_KEYED), a claim (the long poll's ANY_READY, then
CLAIM_AVAILABLE_KEYED) and a one-statement completion per step
(COMPLETE_CONTINUED), each writing the engine's rows and an idempotency
key. Here the bind values of one whole workflow are made once, by the
service's own code (model, codec, argument builders), for a placeholder
instance and worker; each call substitutes its instance and worker ids
(same widths, so every length prefix stays right), hashes the blob and
sends the statement. PostgreSQL does exactly the service's work; the
Python around it is the least that any server sending those statements
needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Every instance and worker id the floor makes has these widths.
INSTANCE = "floor-instance-000000000"
WORKER = "floor-worker-0000000"
STEPS = 4
CLAIM_TTL_S = 30.0
AGING_S = 300.0
REQUEST_HASH = hashlib.sha256(b"floor").digest()
CODEC = "json"  # the service's default (SAYIIR_CODEC)
# Positions in the bind values (0-based): the blob, its hash; in a
# completion, the blob hash the row must still have.
BLOB, BLOB_HASH, EXPECTED_HASH = 13, 11, 25


def instance_id(prefix: str, n: int) -> str:
    """The n-th instance id of one load client, as wide as INSTANCE."""
    text = f"{prefix}-{n}"
    if len(text) > len(INSTANCE):
        raise ValueError(f"instance id {text!r} is wider than {len(INSTANCE)}")
    return text.rjust(len(INSTANCE), "0")


def worker_id(prefix: str) -> str:
    text = f"fw-{prefix}"
    if len(text) > len(WORKER):
        raise ValueError(f"worker id {text!r} is wider than {len(WORKER)}")
    return text.rjust(len(WORKER), "0")


def _substitute(value: Any, ids: tuple[tuple[str, str], tuple[bytes, bytes]]) -> Any:
    (instance, worker), (instance_b, worker_b) = ids
    if isinstance(value, str):
        return value.replace(INSTANCE, instance).replace(WORKER, worker)
    if isinstance(value, bytes):
        return value.replace(INSTANCE.encode(), instance_b).replace(WORKER.encode(), worker_b)
    if isinstance(value, list):
        return [_substitute(item, ids) for item in value]
    return value


@dataclass
class Workflow:
    """The bind values of one linear workflow, for INSTANCE and WORKER."""

    save: list[Any]
    # Per step: COMPLETE_CONTINUED's values, the key and request hash left None.
    completions: list[list[Any]]
    # The hash of the blob each instance in flight last wrote: what its next
    # completion expects (each blob is bound and hashed once, as the
    # service hashes each blob it writes once).
    written: dict[str, bytes] = field(default_factory=dict)

    def save_args(self, instance: str) -> list[Any]:
        args = self._bind(self.save, instance, WORKER)
        self.written[instance] = args[BLOB_HASH]
        return [*args, f"{instance}/save", REQUEST_HASH]

    def completion_args(self, step: int, instance: str, worker: str) -> list[Any]:
        args = self._bind(self.completions[step], instance, worker)
        args[EXPECTED_HASH] = self.written.pop(instance)
        if step + 1 < len(self.completions):
            self.written[instance] = args[BLOB_HASH]
        args[26], args[27] = f"{instance}/{step}", REQUEST_HASH
        return args

    def _bind(self, template: Sequence[Any], instance: str, worker: str) -> list[Any]:
        args: list[Any] = _substitute(list(template), ((instance, worker), (instance.encode(), worker.encode())))
        args[BLOB_HASH] = hashlib.sha256(args[BLOB]).digest()
        return args


async def workflow() -> Workflow:
    """The bind values of a 4-step linear workflow, made by the service's code
    as the service makes them for bench/fleet.py's workflows."""
    from sayiir_common.codec import codec_by_name
    from sayiir_common.ids import TaskId
    from sayiir_common.model import AtTask, WorkflowSnapshot
    from sayiir_grpc.servicers.task_claim_store import completion_reply
    from sayiir_grpc.stores.continuation import apply_completion, following_task
    from sayiir_grpc.stores.history import encode_stripped, mutation_args, snapshot_row_args, wakeup_payload
    from sayiir_grpc.stores.snapshot_store import save_snapshot_args

    codec = codec_by_name(CODEC)
    steps = [TaskId.sha256(f"step-{i}") for i in range(1, STEPS + 1)]
    snapshot = WorkflowSnapshot.with_initial_input(INSTANCE, "bench-linear", b"0")
    snapshot.update_position(AtTask(steps[0]))
    save = await save_snapshot_args(codec, snapshot)
    completions = []
    previous = save
    for step, task_id in enumerate(steps):
        output = str(step + 1).encode()
        following = steps[step + 1] if step + 1 < STEPS else None
        next_task = None if following is None else (following, None, [])
        claim_next = None if following is None else (CLAIM_TTL_S, AGING_S)
        move = apply_completion(snapshot, task_id, output, next_task, None, claim_next)
        blob, _ = encode_stripped(codec, snapshot)
        row_args = snapshot_row_args(snapshot, blob)
        version = step + 2
        moved = None if move is None else following_task(snapshot, move, output, version)
        outcomes = [
            None if moved is None else completion_reply(True, moved).SerializeToString(),
            completion_reply(True, None).SerializeToString(),
        ]
        args = [
            *row_args,
            *mutation_args(version, (task_id, output), None, wakeup_payload(snapshot), WORKER, move),
            version - 1,
            previous[BLOB_HASH],
            None,
            None,
            *outcomes,
        ]
        completions.append(args)
        previous = row_args
    return Workflow(save, completions)

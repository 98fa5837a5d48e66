"""Protobuf replies built in SQL (`sayiir_grpc.stores.proto_sql`) are the
bytes protobuf itself writes: a stored outcome is replayed by parsing it."""

from __future__ import annotations

import itertools

import asyncpg

from sayiir_common.ids import TaskId
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as rpc_pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_rpc_pb
from sayiir_grpc.stores import claim_replay, proto_sql

# Every varint length, both sides of each boundary, and the largest int32.
VERSIONS = [0, 1, 2, 127, 128, 129, 255, 300, 16_383, 16_384, 16_385, 2_097_151, 2_097_152]
VERSIONS += [268_435_455, 268_435_456, 1_000_000_007, 2**31 - 1]


async def test_a_save_snapshot_reply_built_in_sql_is_protobufs_own_serialization(pg: asyncpg.Connection) -> None:
    query = f"""
        SELECT v, w, {proto_sql.save_snapshot_reply("w", "v")} AS reply
        FROM unnest($1::int[]) AS v, unnest(ARRAY[true, false]) AS w
    """
    rows = await pg.fetch(query, VERSIONS)
    assert len(rows) == 2 * len(VERSIONS)
    for row in rows:
        expected = rpc_pb.SaveSnapshotResponse(written=row["w"], history_version=row["v"]).SerializeToString()
        assert bytes(row["reply"]) == expected, (row["v"], row["w"])


async def test_a_claims_outline_built_in_sql_is_protobufs_own_serialization(pg: asyncpg.Connection) -> None:
    # Instance ids of every length class (multi-byte characters count in
    # bytes), task ids, and versions across the varint boundaries.
    instance_ids = ["a", "wf-1", "é" * 70, "x" * 200, "ü" * 8000]
    tasks = [
        (instance_id + f"-{n}", TaskId.sha256(f"task-{n}").as_bytes(), version)
        for n, (instance_id, version) in enumerate(itertools.product(instance_ids, VERSIONS))
    ]
    columns = "x(instance_id, current_task_id, history_version)"
    rows = f"(SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[]) AS {columns})"
    # Byte order, as Python sorts the UTF-8 ids (whatever the database's collation).
    query = "SELECT " + claim_replay.outline_column(rows, 'o.instance_id COLLATE "C"')
    outline = await pg.fetchval(query, *map(list, zip(*tasks, strict=True)))
    reply = claim_rpc_pb.ClaimAvailableTasksResponse()
    for instance_id, task_id, version in sorted(tasks):
        reply.tasks.add(instance_id=instance_id, task_id=task_id, version=version, input=b"not outlined")
    assert bytes(outline) == claim_replay.outline_of(reply)
    assert await pg.fetchval(query, [], [], []) == b""

"""Snapshots the engine wrote, saved again through the service: same bytes.

For the final history row of every golden case, the snapshot is decoded,
given back its task outputs (from the engine's task rows, as a worker holding
it would have them), and saved through gRPC into our database. The blob the
service stores must equal the engine's blob byte for byte, and the snapshot
row must agree with the engine's on the columns a save derives from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import pytest

from sayiir_client import GrpcBackend, TaskId
from sayiir_common.codec import JsonCodec

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "engine_blobs.json").read_text())
CASES = [pytest.param(name, id=name) for name in GOLDEN["cases"]]


@pytest.mark.parametrize("name", CASES)
async def test_service_stores_the_engines_bytes(name: str, backend: GrpcBackend, pg: asyncpg.Connection) -> None:
    case = GOLDEN["cases"][name]
    final = case["history"][-1]
    engine_blob = bytes.fromhex(final["data"])
    snapshot = JsonCodec().decode(engine_blob)
    snapshot.hydrate_task_outputs(
        (TaskId.from_hex(t["task_id"]), bytes.fromhex(t["output"]))
        for t in case["tasks"]
        if t["status"] == "completed" and t["output"] is not None
    )
    snapshot.trace_parent = case["snapshot"]["trace_parent"]
    await backend.save_snapshot(snapshot)

    row = await pg.fetchrow(
        "SELECT s.status, s.error, s.position_kind, s.completed_task_count, s.trace_parent, s.data_hash, h.data "
        "FROM sayiir_workflow_snapshots s JOIN sayiir_workflow_snapshot_history h "
        "ON h.instance_id = s.instance_id AND h.version = s.history_version WHERE s.instance_id = $1",
        snapshot.instance_id,
    )
    assert row["data"] == engine_blob
    engine_row = case["snapshot"]
    assert row["status"] == engine_row["status"]
    assert row["error"] == engine_row["error"]
    assert row["trace_parent"] == engine_row["trace_parent"]
    if engine_row["status"] != "Paused":
        assert row["position_kind"] == engine_row["position_kind"]
    loaded = await backend.load_snapshot(snapshot.instance_id)
    assert loaded == snapshot

"""bench/scale.py end to end in quick mode: it fills, measures every call at
every level, writes the JSON, the plans and the plot, and drops its database."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from conftest import admin_url

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench, pytest.mark.timeout(150)]

CALLS = {
    "find",
    "claim",
    "hinted",
    "due_delay",
    "idle_signal",
    "save",
    "load",
    "save_task_result",
    "check_control_signals",
}


async def _list_scale_databases() -> list[str]:
    conn = await asyncpg.connect(admin_url())
    try:
        return [r[0] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'sayiir_scale_%'")]
    finally:
        await conn.close()


def _scale_databases() -> list[str]:
    return asyncio.run(_list_scale_databases())


def test_quick_scale_bench_writes_its_report(tmp_path: Path) -> None:
    plots = importlib.util.find_spec("matplotlib") is not None
    command = [sys.executable, str(ROOT / "bench" / "scale.py"), "--quick", "--quiet"]
    command += ["--admin-url", admin_url(), "--out", str(tmp_path)]
    if not plots:
        command.append("--no-plot")
    result = subprocess.run(command, capture_output=True, text=True, timeout=140, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads((tmp_path / "scale.json").read_text())
    levels = report["levels"]
    assert [(row["level"], row["running"]) for row in levels] == [(0, True), (300, True), (3000, True), (3000, False)]
    largest = levels[-2]
    assert largest["counts"] == {"sig": 3000, "delay": 600, "run": 30, "done": 3000}
    assert levels[-1]["counts"] == {"sig": 3000, "delay": 600, "run": 0, "done": 3000}
    snapshots = largest["tables"]["sayiir_workflow_snapshots"]
    assert snapshots["table_mb"] > 0 and snapshots["indexes_mb"] > 0
    assert largest["snapshot_indexes"]["sayiir_grpc_delays_by_wake"] > 0
    for row in levels:
        assert set(row["calls"]) == CALLS
        assert all(call["p50_ms"] > 0 for call in row["calls"].values())
        assert row["rss_mb_before"] > 0 and row["rss_mb"] > 0
    assert set(report["summary"]["ratio_to_empty"]) == CALLS
    assert set(report["summary"]["ratio_to_empty_none_running"]) == CALLS
    plans = (tmp_path / "scale_explain.txt").read_text()
    for statement in ("FIND_CANDIDATES", "CLAIM_AVAILABLE", "FIND_HINTED", "DUE_DELAYS", "IDLE_SIGNALLED"):
        assert statement in plans
    assert "sayiir_grpc_ready_by_priority" in plans
    assert "| find |" in result.stdout
    if plots:
        assert (tmp_path / "scale_latency.png").stat().st_size > 0
    ours = set(report["meta"]["databases"])
    assert len(ours) == len(levels)
    assert not ours & set(_scale_databases()), "the benchmark left its databases behind"

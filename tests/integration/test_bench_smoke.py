"""bench/run.py end to end, in quick mode with tiny numbers: every system
runs, the JSON report has its keys, the Markdown has its tables."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import admin_url

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench, pytest.mark.timeout(150)]

LINEAR_KEYS = {
    "system",
    "wf_per_s",
    "e2e",
    "pickup",
    "transactions_per_wf",
    "write_tx_per_wf",
    "cpu_s",
    "peak_rss_mb",
}


def test_quick_bench_writes_the_report(tmp_path: Path) -> None:
    plots = importlib.util.find_spec("matplotlib") is not None
    command = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--quick",
        "--scale",
        "0.25",
        "--quiet",
        "--only",
        "pgbench,service,store,engine_1,engine_32,fleet_1,fleet_32,fanout,signal,sleeping",
        "--admin-url",
        admin_url(),
        "--out",
        str(tmp_path),
    ]
    if not plots:
        command.append("--no-plots")
    result = subprocess.run(command, capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads((tmp_path / "report.json").read_text())
    assert {"meta", "runs", "summary"} <= report.keys()
    assert {"command", "machine", "postgres", "fast_path", "elapsed_s"} <= report["meta"].keys()
    runs = report["runs"]
    for key in ("service", "store", "engine_1", "engine_32", "fleet_1", "fleet_32"):
        assert key in runs, key
        assert "failed" not in runs[key], runs[key]
        assert runs[key].keys() >= LINEAR_KEYS, (key, LINEAR_KEYS - runs[key].keys())
        assert runs[key]["completed_total"] > 0, key
    service = runs["service"]
    assert service["calls_per_wf"] > 0
    assert service["load_snapshot_probe"]["client"]["count"] > 0
    assert "ClaimAvailableTasks" in service["calls"] or "FindAvailableTasks" in service["calls"]
    for key in ("fanout", "signal", "sleeping"):
        assert key in runs and "failed" not in runs[key], runs.get(key)
        assert runs[key]["completed_total"] > 0, key
    assert "signal_resume" in runs["signal"]
    assert runs["sleeping"]["wake_to_done"]["count"] > 0
    assert "pgbench" in runs
    assert {t["target"] for t in report["summary"]["targets"]} >= {
        "service peak RSS (MB)",
        "share of the pgbench -N commit ceiling",
    }

    markdown = (tmp_path / "report.md").read_text()
    assert "### Linear, 4 steps" in markdown and "### Targets" in markdown
    if plots:
        assert (tmp_path / "throughput_vs_concurrency.png").stat().st_size > 0
        assert (tmp_path / "rpc_latency.png").stat().st_size > 0


def test_quick_fleet_rows_meter_every_role(tmp_path: Path) -> None:
    """Issue 14's rows: separate processes, CPU per workflow by role, and the floor."""
    only = ["fleet_service_w1", "fleet_service_w2", "floor", "floor_sql", "processes"]
    if importlib.util.find_spec("dbos") is not None:
        only.append("fleet_dbos_queue")
    command = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--quick",
        "--scale",
        "0.25",
        "--quiet",
        "--no-plots",
        "--only",
        ",".join(only),
        "--admin-url",
        admin_url(),
        "--out",
        str(tmp_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = json.loads((tmp_path / "report.json").read_text())["runs"]
    for key in only[:2]:
        run = runs[key]
        assert "failed" not in run, run
        assert run["completed_in_window"] > 0
        assert run["cpu_ms_per_wf_by_role"].keys() == {"server", "workers", "submitter", "postgres"}
        assert all(value > 0 for value in run["cpu_ms_per_wf_by_role"].values()), run
        assert run["load_snapshot_server"]["count"] > 0
    floor = runs["floor"]
    assert floor["server_cpu_ms_per_wf"] > 0 and floor["wf_per_s"] > 0
    assert (floor["transport"], floor["rpcs_per_wf"], floor["round_trips_per_wf"]) == ("unary", 6, 6)
    assert floor["load_calls"] > 0 and 0 < floor["load_p50_ms"] <= floor["load_p99_ms"] <= floor["load_max_ms"]
    # The floor with the service's own statements: they wrote the engine's
    # rows (a completion that writes nothing fails the floor's workflow) and
    # its PostgreSQL backends were metered. A claim takes two workflows'
    # tasks (more claims when one comes back short), so the statements per
    # workflow are under 6: 1 save, 1 per claim, 4 completions.
    floor_sql = runs["floor_sql"]
    assert (floor_sql["sql"], floor_sql["transport"]) == ("service", "stream")
    assert 0.5 <= floor_sql["claims_per_wf"] < 1.5
    assert floor_sql["round_trips_per_wf"] == pytest.approx(5 + floor_sql["claims_per_wf"], abs=0.02)
    assert floor_sql["wf_per_s"] > 0 and floor_sql["postgres_cpu_ms_per_wf"] > 0
    assert floor_sql["session_requests_per_message"] >= 1
    if "fleet_dbos_queue" in runs:
        assert runs["fleet_dbos_queue"]["completed_in_window"] > 0, runs["fleet_dbos_queue"]
    # bench/processes.py: --workers 1 and 2 on a load the service bounds, CPU per call by role.
    processes = runs["processes"]
    assert "failed" not in processes, processes
    assert [row["workers"] for row in processes["rows"]] == [1, 2]
    for row in processes["rows"]:
        assert row["calls_per_s"] > 0 and row["cpu_ms_per_call"]["server"] > 0, row
        assert row["cpu_ms_per_call"].keys() == {"server", "clients", "postgres"}
    assert processes["summary"]["ratio_2_to_1"] > 0
    markdown = (tmp_path / "report.md").read_text()
    assert "### Separate processes, CPU per workflow by role" in markdown
    assert "### More service processes, on a load the service bounds" in markdown
    assert "a load the service bounds (`bench/processes.py`)" in markdown


def test_floor_models_a_session_stream() -> None:
    """bench/floor.py's stream transport: claims and completions as messages on one
    stream per channel, saves unary; its own shape of statements and transactions."""
    command = [
        sys.executable,
        str(ROOT / "bench" / "floor.py"),
        "--url",
        admin_url(),
        "--transport",
        "stream",
        "--complete-statements",
        "2",
        "--no-save-tx",
        "--warmup",
        "0.5",
        "--duration",
        "1",
        "--probe-duration",
        "1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    floor = json.loads(result.stdout)
    assert floor["wf_per_s"] > 0 and floor["server_cpu_ms_per_wf"] > 0
    assert (floor["rpcs_per_wf"], floor["stream_messages_per_wf"]) == (1, 5)
    # Save 2 (no transaction), Claim 1, four times Complete 2 + BEGIN and COMMIT.
    assert (floor["statements_per_wf"], floor["round_trips_per_wf"]) == (11, 19)
    assert floor["load_calls"] > 0 and floor["load_p99_ms"] > 0

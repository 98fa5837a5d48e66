"""The report: target ratios, the Markdown tables, the PNG plots, and the
copy into docs/benchmarks.md, docs/bench/ and the README."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

from common import REPO

LINEAR_ROWS = (
    "service",
    "service_standard",
    "store",
    "store_standard",
    "engine_rdw_1",
    "engine_1",
    "engine_32",
    "fleet_1",
    "fleet_32",
)
DOC = REPO / "docs" / "benchmarks.md"
DOC_PNG_DIR = REPO / "docs" / "bench"
README = REPO / "README.md"
DOC_MARKERS = ("<!-- bench-report:start -->", "<!-- bench-report:end -->")
README_MARKERS = ("<!-- bench-readme:start -->", "<!-- bench-readme:end -->")


def _ok(run: dict[str, Any] | None) -> bool:
    return bool(run) and "failed" not in run and "skipped" not in run  # type: ignore[operator]


def _wf(run: dict[str, Any] | None) -> float | None:
    return run.get("wf_per_s") if _ok(run) else None  # type: ignore[union-attr]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    runs = data["runs"]
    service, store = runs.get("service"), runs.get("store")
    targets: list[dict[str, Any]] = []

    def target(name: str, value: float | None, goal: str, met: bool | None, note: str = "") -> None:
        targets.append({"target": name, "value": value, "goal": goal, "met": met, "note": note})

    vs_fleet = _ratio(_wf(service), _wf(runs.get("fleet_32")))
    target(
        "service / engine Worker fleet (32 in flight)", vs_fleet, ">= 10x", None if vs_fleet is None else vs_fleet >= 10
    )
    vs_engine = _ratio(_wf(service), _wf(runs.get("engine_32")))
    target(
        "service / engine in process (32 threads)", vs_engine, ">= 5x", None if vs_engine is None else vs_engine >= 5
    )
    vs_engine_1 = _ratio(_wf(service), _wf(runs.get("engine_1")))
    target(
        "service / engine in process (1 thread)",
        vs_engine_1,
        ">= 5x",
        None if vs_engine_1 is None else vs_engine_1 >= 5,
        "the engine one workflow at a time",
    )
    same_path = _ok(service) and _ok(store) and service["path"] == store["path"]  # type: ignore[index]
    overhead = _ratio(_wf(service), _wf(store)) if same_path else None
    target(
        "gRPC overhead: service / store code in process",
        overhead,
        ">= 0.8x",
        None if overhead is None else overhead >= 0.8,
        f"both on the {service['path']} path" if same_path else "",  # type: ignore[index]
    )
    probe = (service or {}).get("load_snapshot_probe") or {}
    p99 = (probe.get("client") or {}).get("p99_ms")
    server = probe.get("server") or {}
    target(
        "load_snapshot p99 under the linear load (client-observed)",
        p99,
        "< 5 ms",
        None if p99 is None else p99 < 5,
        f"server side: {100 * server['share_under_5ms']:.1f}% under 5 ms, p99 <= {server.get('p99_at_most_ms')} ms"
        if server.get("share_under_5ms") is not None
        else "",
    )
    rss = (service or {}).get("peak_rss_mb")
    target("service peak RSS (MB)", rss, "< 200", None if rss is None else rss < 200)
    pgbench = runs.get("pgbench") or {}
    tps = pgbench.get("tps")
    writes = (service or {}).get("write_tx_per_s_window")
    fraction = _ratio(writes, tps)
    target(
        "share of the pgbench -N commit ceiling",
        fraction,
        "report",
        None,
        f"{writes:,.0f} write transactions/s vs {tps:,.0f} tps" if fraction is not None else "",
    )
    return {"targets": targets}


def without_samples(data: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(data)
    for run in clean["runs"].values():
        run.pop("call_samples", None)
        if "load_snapshot_probe" in run:
            run["load_snapshot_probe"].pop("samples", None)
    return clean


# -- Markdown ---------------------------------------------------------------------


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pair(block: dict[str, Any] | None) -> str:
    if not block or not block.get("count"):
        return "–"
    return f"{_n(block.get('p50_ms'))} / {_n(block.get('p99_ms'))}"


def _linear_table(runs: dict[str, Any]) -> list[str]:
    lines = [
        "| System | in flight | workers | wf/s | e2e p50 / p99 ms | pickup p50 / p99 ms | RPCs/wf "
        "| tx/wf | write tx/wf | CPU of the measured process | its CPU ms/wf | its peak RSS MB "
        "| PostgreSQL CPU | other load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in LINEAR_ROWS:
        run = runs.get(key)
        if not run:
            continue
        if not _ok(run):
            lines.append(f"| {run.get('system', key)} | | | {run.get('failed') or run.get('skipped')} |" + " |" * 10)
            continue
        cpu = f"{_n(run.get('cpu_s'))} s ({_n(run.get('cpu_pct_of_core'), 0)}% of a core, {run.get('process')})"
        lines.append(
            f"| {run['system']} | {run['inflight']} | {run['workers']} | **{_n(run['wf_per_s'])}** "
            f"| {_pair(run.get('e2e'))} | {_pair(run.get('pickup'))} | {_n(run.get('calls_per_wf'), 2)} "
            f"| {_n(run.get('transactions_per_wf'), 2)} | {_n(run.get('write_tx_per_wf'), 2)} | {cpu} "
            f"| {_n(_per_wf_ms(run))} | {_n(run.get('peak_rss_mb'))} "
            f"| {_n(_pct(run.get('pg_cpu_s'), run.get('window_s')), 0)}% "
            f"| {_n(run.get('unattributed_cores'), 2)} cores |"
        )
    return lines


FLEET_ROWS = (
    "fleet_service_w1",
    "fleet_service_w2",
    "fleet_service_w1_unary",
    "fleet_service_w1_classic",
    "fleet_dbos_queue",
    "fleet_dbos_in_process",
)


def _engine_split(run: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(engine process, PostgreSQL) CPU ms per workflow of an engine run."""
    if not _ok(run):
        return None, None
    done = run.get("completed_window")  # type: ignore[union-attr]
    if not done:
        return None, None
    cpu, pg = run.get("cpu_s"), run.get("pg_cpu_s")  # type: ignore[union-attr]
    return (None if cpu is None else 1000.0 * cpu / done), (None if pg is None else 1000.0 * pg / done)


def fleet_goals(runs: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's goals, from one run's figures."""
    w1, w2 = runs.get("fleet_service_w1"), runs.get("fleet_service_w2")
    engine_cpu, engine_pg = _engine_split(runs.get("engine_32"))
    engine_total = None if engine_cpu is None or engine_pg is None else engine_cpu + engine_pg
    goals: list[dict[str, Any]] = []

    def goal(name: str, value: float | None, target: str, met: bool | None, floor: float | None = None) -> None:
        goals.append({"target": name, "value": value, "goal": target, "met": met, "floor": floor})

    # The floor of the service's design, measured in the same run: a bare
    # grpc.aio server and asyncpg pool making the same calls, stream
    # messages and round trips, with no logic (bench/floor.py): with the
    # service's own statements (floor_sql, PostgreSQL's CPU counted) when
    # the run has it, else with `SELECT $1` (floor_session, PostgreSQL at
    # the engine's own cost for the same workflows).
    floor = next((runs[k] for k in ("floor_sql", "floor_session") if _ok(runs.get(k))), None)
    floor_server = None if floor is None else floor.get("server_cpu_ms_per_wf")
    floor_client = None if floor is None else floor.get("client_cpu_ms_per_wf")
    floor_pg = (
        engine_pg if floor is None or floor.get("postgres_cpu_ms_per_wf") is None else floor["postgres_cpu_ms_per_wf"]
    )
    floor_whole = None
    if floor_server is not None and floor_client is not None and floor_pg is not None:
        floor_whole = _ratio(floor_server + floor_client + floor_pg, engine_total)

    roles = (w1 or {}).get("cpu_ms_per_wf_by_role") or {}
    total = (w1 or {}).get("cpu_ms_per_wf")
    whole = _ratio(total, engine_total)
    goal(
        "whole CPU per workflow / engine in process (32 threads)",
        whole,
        "<= 1.5x",
        None if whole is None else whole <= 1.5,
        floor_whole,
    )
    server = roles.get("server")
    goal("server CPU ms per workflow", server, "<= 2.5", None if server is None else server <= 2.5, floor_server)
    workers = roles.get("workers")
    submitter = roles.get("submitter")
    goal("Python worker client CPU ms per workflow", workers, "<= 1.5", None if workers is None else workers <= 1.5)
    clients = None if workers is None or submitter is None else workers + submitter
    goal(
        "worker clients + submitter (all 6 calls) CPU ms per workflow",
        clients,
        "<= 1.5 + submitter",
        None,
        floor_client,
    )
    best = max((_wf(w1) or 0.0, _wf(w2) or 0.0)) or None
    fleet_wf = _wf(runs.get("fleet_32"))
    floor_wf = None if floor is None else floor.get("wf_per_s")
    vs_fleet = _ratio(best, fleet_wf)
    goal(
        "throughput / engine Worker fleet",
        vs_fleet,
        ">= 5x",
        None if vs_fleet is None else vs_fleet >= 5,
        _ratio(floor_wf, fleet_wf),
    )
    dbos_wf = _wf(runs.get("fleet_dbos_queue"))
    vs_dbos = _ratio(best, dbos_wf)
    goal(
        "throughput / DBOS queue, 4 worker processes",
        vs_dbos,
        ">= 5x",
        None if vs_dbos is None else vs_dbos >= 5,
        _ratio(floor_wf, dbos_wf),
    )
    p99 = ((w1 or {}).get("load_snapshot_server") or {}).get("p99_at_most_ms")
    goal(
        "load_snapshot p99 server-side, ms (histogram bucket)",
        p99,
        "< 5",
        None if p99 is None else p99 < 5,
        None if floor is None else floor.get("load_p99_ms"),
    )
    scale = _ratio(_wf(w2), _wf(w1))
    goal("service --workers 2 / --workers 1 throughput", scale, "> 1 when the service is the bottleneck", None)
    processes = runs.get("processes")
    if _ok(processes):
        bound = processes["summary"]["ratio_2_to_1"]  # type: ignore[index]
        goal(
            "service --workers 2 / --workers 1 calls/s, a load the service bounds (`bench/processes.py`)",
            bound,
            "> 1",
            None if bound is None else bound > 1,
        )
    return goals


def _processes_table(runs: dict[str, Any]) -> list[str]:
    """The rounds of `bench/processes.py`: LoadSnapshot calls the service bounds."""
    run = runs.get("processes")
    if not run:
        return []
    title = "### More service processes, on a load the service bounds (`bench/processes.py`)"
    if not _ok(run):
        return ["", title, "", f"Failed: {run.get('failed')}"]
    w = run["workload"]
    out = [
        "",
        title,
        "",
        f"{w['client_processes']} client processes, {w['concurrency_per_client']} calls in flight each, call"
        f" LoadSnapshot on {w['workflows']} workflows of {w['completed_tasks']} completed tasks"
        f" ({w['output_bytes']}-byte outputs) through raw stubs; rounds of `--workers 1` and `--workers 2`"
        " alternate on one database.",
        "",
        "| Round | --workers | calls/s | CPU ms per call: server | clients | PostgreSQL | cores busy |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in run["rows"]:
        cpu = row["cpu_ms_per_call"]
        out.append(
            f"| {row['round']} | {row['workers']} | {_n(row['calls_per_s'])} | {_n(cpu['server'], 3)}"
            f" | {_n(cpu['clients'], 3)} | {_n(cpu['postgres'], 3)} | {_n(row['cores_busy'], 2)} |"
        )
    return out


def _fleet_table(runs: dict[str, Any]) -> list[str]:
    lines = [
        "| System | wf/s | CPU ms/wf, all | server | workers | submitter | PostgreSQL "
        "| load_snapshot p99 server / client ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in FLEET_ROWS:
        run = runs.get(key)
        if not run:
            continue
        if not _ok(run):
            lines.append(f"| {run.get('label', key)} | {run.get('failed')} |" + " |" * 6)
            continue
        roles = run.get("cpu_ms_per_wf_by_role") or {}
        server_p99 = (run.get("load_snapshot_server") or {}).get("p99_at_most_ms")
        client_p99 = (run.get("load_snapshot_client") or {}).get("p99_ms")
        probe = f"<= {_n(server_p99, 1)} / {_n(client_p99, 1)}" if server_p99 is not None else "–"
        lines.append(
            f"| {run['label']} | **{_n(run['wf_per_s'])}** | **{_n(run.get('cpu_ms_per_wf'), 2)}** "
            f"| {_n(roles.get('server'), 2)} | {_n(roles.get('workers'), 2)} | {_n(roles.get('submitter'), 2)} "
            f"| {_n(roles.get('postgres'), 2)} | {probe} |"
        )
    for key in ("floor", "floor_session", "floor_sql"):
        floor = runs.get(key)
        if not _ok(floor):
            continue
        assert floor is not None
        messages = floor.get("stream_messages_per_wf") or 0
        calls = f"{floor['rpcs_per_wf']} RPCs" + (f" + {messages} stream messages" if messages else "")
        batched = floor.get("session_requests_per_message")
        calls += f", {_n(batched, 2)} requests per message" if batched else ""
        claims = floor.get("claims_per_wf")
        calls += f", {_n(claims, 2)} claims per workflow" if claims is not None else ""
        pg = floor.get("postgres_cpu_ms_per_wf")
        total = "–"
        if pg is not None:
            total = f"**{_n(floor['server_cpu_ms_per_wf'] + floor['client_cpu_ms_per_wf'] + pg, 2)}**"
        lines.append(
            f"| floor: {floor['label']} ({calls}, {floor.get('round_trips_per_wf', '?')} database round trips "
            f"per workflow) | {_n(floor['wf_per_s'])} | {total} | {_n(floor['server_cpu_ms_per_wf'], 2)} "
            f"| {_n(floor['client_cpu_ms_per_wf'], 2)} (all 6 calls) | – | {_n(pg, 2) if pg is not None else '–'} "
            f"| {_n(floor.get('load_p99_ms'), 1)} (a one-statement read, handler time) |"
        )
    for key in ("engine_32", "fleet_32"):
        run = runs.get(key)
        cpu, pg = _engine_split(run)
        if cpu is None:
            continue
        total = cpu + (pg or 0.0)
        lines.append(
            f"| {run['system']} (one process: engine + harness) | **{_n(run['wf_per_s'])}** "  # type: ignore[index]
            f"| **{_n(total, 2)}** | – | {_n(cpu, 2)} | – | {_n(pg, 2)} | – |"
        )
    return lines


def _per_wf_ms(run: dict[str, Any]) -> float | None:
    cpu, done = run.get("cpu_s"), run.get("completed_window")
    return None if cpu is None or not done else 1000.0 * cpu / done


def _leftovers(runs: dict[str, Any]) -> list[str]:
    """Claims still held on in-progress workflows once every worker stopped."""
    left = [
        f"{run['system']}: {run['db']['live_claims_at_end']}"
        for run in runs.values()
        if _ok(run) and (run.get("db") or {}).get("live_claims_at_end")
    ]
    if not left:
        return []
    return [
        "",
        "Claims left held on unfinished workflows after the drain, with every worker stopped (each blocks its "
        "workflow until the claim's 30 s TTL): " + "; ".join(left) + ".",
    ]


def _pct(cpu_s: float | None, seconds: float | None) -> float | None:
    return None if cpu_s is None or not seconds else 100.0 * cpu_s / seconds


def _sweep_rows(runs: dict[str, Any]) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = {
        "service": {},
        "store in process": {},
        "engine in process": {},
        "engine fleet": {},
    }
    for key, run in runs.items():
        if not _ok(run) or run.get("scenario") != "linear":
            continue
        n = run.get("inflight")
        if key == "service" or key.startswith("service_sweep_"):
            series["service"][n] = run["wf_per_s"]
        elif key == "store" or key.startswith("store_sweep_"):
            series["store in process"][n] = run["wf_per_s"]
        elif key.startswith("engine_") and key != "engine_rdw_1":
            series["engine in process"][n] = run["wf_per_s"]
        elif key.startswith("fleet_"):
            series["engine fleet"][n] = run["wf_per_s"]
    return {k: dict(sorted(v.items())) for k, v in series.items() if v}


def markdown(data: dict[str, Any], pngs: list[str], image_prefix: str = "") -> str:
    meta, runs = data["meta"], data["runs"]
    m = meta["machine"]
    out = [
        f"Command: `{meta['command']}` ({meta['mode']} mode, {meta['elapsed_s']} s, {meta['started_at']}).",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, {m['os']}; PostgreSQL {meta['postgres']};"
        f" Python {m['python']}, grpcio {m['grpcio']}, sayiir {m['sayiir']}; sayiir-grpc at {m['git']}."
        f" Python speed: {m.get('python_loop_ms', '?')} ms for 10 million additions (`run.python_loop_ms`)."
        f" Fast path available: client {meta['fast_path']['client']}, store {meta['fast_path']['store']}.",
        "",
        f"### Linear, {meta['shape']['linear_steps']} steps",
        "",
        *_linear_table(runs),
        *_leftovers(runs),
        "",
        "### Targets",
        "",
        "| Target | Measured | Goal | Met |",
        "|---|---:|---:|:---:|",
    ]
    for t in data["summary"]["targets"]:
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        note = f" ({t['note']})" if t["note"] else ""
        out.append(f"| {t['target']}{note} | {_n(t['value'], 2)} | {t['goal']} | {met} |")
    if any(key in runs for key in FLEET_ROWS):
        out += ["", "### Separate processes, CPU per workflow by role (linear 4 steps, 32 in flight)", ""]
        out += _fleet_table(runs)
        out += [
            "",
            "| Goal (issue 14) | Measured | Goal | Met | Floor of the design, same run |",
            "|---|---:|---:|:---:|---:|",
        ]
        for t in fleet_goals(runs):
            met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
            out.append(f"| {t['target']} | {_n(t['value'], 2)} | {t['goal']} | {met} | {_n(t.get('floor'), 2)} |")
    out += _processes_table(runs)
    sweep = _sweep_rows(runs)
    if sweep:
        points = sorted({n for s in sweep.values() for n in s})
        out += ["", "### Throughput against concurrency (wf/s, linear 4 steps)", ""]
        out.append("| System | " + " | ".join(f"{n} in flight" for n in points) + " |")
        out.append("|---|" + "---:|" * len(points))
        for name, values in sweep.items():
            out.append(f"| {name} | " + " | ".join(_n(values.get(n)) for n in points) + " |")
    out += _scenarios(runs)
    service = runs.get("service")
    if _ok(service):
        out += ["", f"### Latency per call ({service['system']}, linear, client-observed)", ""]  # type: ignore[index]
        out += ["| Call | calls | p50 ms | p90 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
        for name, block in service["call_latency"].items():  # type: ignore[index]
            out.append(
                f"| {name} | {block['count']:,} | {_n(block['p50_ms'], 2)} | {_n(block['p90_ms'], 2)} "
                f"| {_n(block['p99_ms'], 2)} | {_n(block['max_ms'], 2)} |"
            )
        probe = service.get("load_snapshot_probe")  # type: ignore[union-attr]
        if probe:
            c = probe["client"]
            out.append(
                f"| LoadSnapshot (side probe, own process, every 10 ms) | {c['count']:,} | {_n(c['p50_ms'], 2)} "
                f"| {_n(c['p90_ms'], 2)} | {_n(c['p99_ms'], 2)} | {_n(c['max_ms'], 2)} |"
            )
    if pngs:
        out += [""]
        out += [f"![{Path(p).stem}]({image_prefix}{p})" for p in pngs]
    return "\n".join(out) + "\n"


def _scenarios(runs: dict[str, Any]) -> list[str]:
    out = ["", "### Other scenarios, through the service (32 in flight, 4 workers)", ""]
    out += [
        "| Scenario | wf/s | e2e p50 / p99 ms | scenario latency p50 / p99 ms | RPCs/wf | tx/wf | service CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = 0
    for key, extra, label in (
        ("fanout", "handoff", "step handoff"),
        ("signal", "signal_resume", "event sent → done"),
    ):
        run = runs.get(key)
        if not run:
            continue
        rows += 1
        if not _ok(run):
            out.append(f"| {key} | {run.get('failed')} | | | | | |")
            continue
        out.append(
            f"| {run['system']} | {_n(run['wf_per_s'])} | {_pair(run.get('e2e'))} "
            f"| {label}: {_pair(run.get(extra))} | {_n(run.get('calls_per_wf'), 2)} "
            f"| {_n(run.get('transactions_per_wf'), 2)} | {_n(run.get('cpu_s'))} |"
        )
    sleeping = runs.get("sleeping")
    if sleeping and _ok(sleeping):
        rows += 1
        out += [
            "",
            f"Sleeping: {sleeping['workflows']} workflows parked on a delay ending at one instant "
            f"({sleeping['sleep_s']} s after the start; all parked first: {sleeping['parked_before_wake']}), "
            f"workers polling every {sleeping['poll_s']} s. Parking: {_n(sleeping['park_rate_wf_per_s'])} wf/s. "
            f"Wake storm: {sleeping['completed_total']} completed in {_n(sleeping['wake_storm_s'], 2)} s after the "
            f"wake instant ({_n(sleeping['wake_rate_wf_per_s'])} wf/s); wake → done p50 / p99 "
            f"{_pair(sleeping.get('wake_to_done'))} ms; {_n(sleeping['calls_per_wf'], 2)} RPCs/wf, "
            f"{_n(sleeping['transactions_per_wf'], 2)} tx/wf; service RSS with all parked "
            f"{_n(sleeping.get('parked_rss_mb'))} MB, peak {_n(sleeping.get('peak_rss_mb'))} MB.",
        ]
    elif sleeping:
        out += ["", f"Sleeping: {sleeping.get('failed')}"]
    return out if rows else []


# -- plots -------------------------------------------------------------------------


def plots(data: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = data["runs"]
    made: list[Path] = []

    sweep = _sweep_rows(runs)
    if sweep:
        fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=90)
        for name, values in sweep.items():
            xs = list(values)
            ax.plot(xs, [values[x] for x in xs], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ticks = sorted({n for s in sweep.values() for n in s})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("workflows in flight")
        ax.set_ylabel("workflows / s")
        ax.set_title("Linear 4 steps: throughput against concurrency")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / "throughput_vs_concurrency.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)

    bars = [(runs[k]["system"], runs[k]["wf_per_s"]) for k in LINEAR_ROWS if _ok(runs.get(k))]
    if bars:
        fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(bars) + 1.2), dpi=90)
        names = [b[0] for b in bars][::-1]
        values = [b[1] for b in bars][::-1]
        ax.barh(names, values, color="#4472c4")
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
        ax.set_xlabel("workflows / s (linear, 4 steps)")
        ax.tick_params(axis="y", labelsize=8)
        ax.set_xlim(0, max(values) * 1.15)
        fig.tight_layout()
        path = out / "linear_systems.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)

    service = runs.get("service")
    if _ok(service) and service.get("call_samples"):  # type: ignore[union-attr]
        fast = service["path"] == "fast"  # type: ignore[index]
        tag = "fast" if fast else "std"
        samples = {f"{k} ({tag})": [x * 1000 for x in v] for k, v in service["call_samples"].items() if v}  # type: ignore[index]
        probe = (service.get("load_snapshot_probe") or {}).get("samples")  # type: ignore[union-attr]
        if probe:
            samples["LoadSnapshot (side probe)"] = [x * 1000 for x in probe]
        standard = runs.get("service_standard")
        if fast and _ok(standard) and standard.get("call_samples"):  # type: ignore[union-attr]
            for k, v in standard["call_samples"].items():  # type: ignore[index]
                if v:
                    samples[f"{k} (std)"] = [x * 1000 for x in v]
        names = sorted(samples, key=lambda n: (n.endswith("(std)"), n), reverse=True)
        fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(names) + 1.6), dpi=90)
        ax.boxplot([samples[n] for n in names], whis=(1, 99), showfliers=False, vert=False)
        ax.set_yticks(range(1, len(names) + 1), names, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("ms, client-observed (box: p25–p75, whiskers: p1–p99)")
        ax.set_title("Latency per RPC, linear, 32 in flight (fast path and standard calls)", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        fig.tight_layout()
        path = out / "rpc_latency.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    return made


# -- publishing ---------------------------------------------------------------------


def _replace_block(text: str, markers: tuple[str, str], body: str) -> str:
    start, end = markers
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    block = f"{start}\n{body.rstrip()}\n{end}"
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def publish(data: dict[str, Any], out: Path, pngs: list[Path]) -> None:
    DOC_PNG_DIR.mkdir(parents=True, exist_ok=True)
    for png in pngs:
        shutil.copy(png, DOC_PNG_DIR / png.name)
    body = markdown(data, [p.name for p in pngs], image_prefix="bench/")
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    DOC.write_text(_replace_block(doc, DOC_MARKERS, body))
    runs = data["runs"]
    meta = data["meta"]
    short = [
        f"`{meta['command']}` on {meta['machine']['cores']} cores, PostgreSQL 15 on the same machine "
        f"({meta['started_at'][:10]}); linear workflow of {meta['shape']['linear_steps']} steps, "
        f"{meta['shape']['inflight']} in flight, {meta['shape']['workers']} workers:",
        "",
        "| System | wf/s | e2e p50 / p99 ms | RPCs/wf | tx/wf |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in LINEAR_ROWS:
        run = runs.get(key)
        if _ok(run) and key not in ("engine_rdw_1", "engine_1", "fleet_1"):
            short.append(
                f"| {run['system']} | {_n(run['wf_per_s'])} | {_pair(run.get('e2e'))} "  # type: ignore[index]
                f"| {_n(run.get('calls_per_wf'), 2)} | {_n(run.get('transactions_per_wf'), 2)} |"  # type: ignore[union-attr]
            )
    if any(p.name == "throughput_vs_concurrency.png" for p in pngs):
        short += ["", "![throughput against concurrency](docs/bench/throughput_vs_concurrency.png)"]
    short += ["", "Targets, methods and every figure: [docs/benchmarks.md](docs/benchmarks.md)."]
    readme = README.read_text()
    if README_MARKERS[0] in readme:
        README.write_text(_replace_block(readme, README_MARKERS, "\n".join(short)))

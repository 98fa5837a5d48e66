"""`sayiir-grpc workflows ...` and `sayiir-grpc claims ...` run as an operator
runs them: a child process per command, against a running service."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from test_security import pki  # noqa: F401 (the throwaway CA and certificates, a fixture)

from conftest import start_service
from fixtures.operator_seed import STEP1, empty_tables, seed
from sayiir_client import DefinitionHash, GrpcBackend, WorkflowSnapshot, connect
from sayiir_grpc.app import RunningServer

WORKFLOW_KEYS = [
    "instance_id", "status", "definition_hash", "current_task_id", "position", "created_at", "updated_at",
    "error", "task_tags", "task_priority", "claimed_by", "claim_expires_at",
]  # fmt: skip
ACTION_KEYS = ["matched", "applied", "skipped", "not_found"]


@dataclass
class Run:
    code: int
    out: str
    err: str

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.splitlines()]


async def sayiir(*args: str, env: dict[str, str] | None = None) -> Run:
    """Run `sayiir-grpc ARGS` in a child process (stdin not a terminal)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sayiir_grpc",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture(scope="module")
async def cli_service(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[tuple[str, str]]:
    url = await make_database()
    running: RunningServer = await start_service(url)
    yield f"127.0.0.1:{running.port}", url
    await running.stop(grace=1)


@pytest.fixture
async def seeded(cli_service: tuple[str, str]) -> AsyncIterator[tuple[str, GrpcBackend]]:
    """The target, with exactly the seeded workflows (tests/fixtures/operator_seed.py)."""
    target, url = cli_service
    await empty_tables(url)
    async with connect(target, watch_wakeups=False) as backend:
        await seed(backend)
        yield target, backend


async def test_list_table_json_and_filters(seeded: tuple[str, GrpcBackend]) -> None:
    target, _ = seeded
    table = await sayiir("workflows", "list", "--target", target)
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split()[:3] == ["INSTANCE", "STATUS", "POSITION"]
    assert [r.split()[0] for r in rows] == ["op-a-01", "op-a-02", "op-b-01", "op-b-02", "op-c-01", "op-c-02"]
    # Aligned: every row's status starts under the STATUS header.
    column = header.index("STATUS")
    assert all(r[column - 2 : column] == "  " and r[column] != " " for r in rows)

    everything = await sayiir("workflows", "list", "--json", env={"SAYIIR_TARGET": target})
    assert everything.code == 0, everything.err
    lines = everything.lines()
    assert [list(line) for line in lines] == [WORKFLOW_KEYS] * 6
    a2 = next(line for line in lines if line["instance_id"] == "op-a-02")
    assert a2["status"] == "InProgress" and a2["position"] == "AtTask" and a2["current_task_id"] == STEP1.to_hex()
    assert a2["claimed_by"] == "worker-1" and str(a2["claim_expires_at"]).endswith("Z")
    b1 = next(line for line in lines if line["instance_id"] == "op-b-01")
    assert b1["error"] == "Payment gateway TIMEOUT" and b1["current_task_id"] is None and b1["position"] is None

    async def listed(*flags: str) -> list[object]:
        run = await sayiir("workflows", "list", "--json", "--target", target, *flags)
        assert run.code == 0, run.err
        return [line["instance_id"] for line in run.lines()]

    assert await listed("--status", "in_progress") == ["op-a-01", "op-a-02", "op-c-02"]
    assert await listed("--status", "FAILED", "--status", "completed") == ["op-b-01", "op-b-02"]
    assert await listed("--definition", DefinitionHash.sha256("def-c").to_hex()) == ["op-c-01", "op-c-02"]
    assert await listed("--task", STEP1.to_hex().upper()) == ["op-a-01", "op-a-02"]
    assert await listed("--tag", "gpu") == ["op-a-01"]
    assert await listed("--error", "timeout") == ["op-b-01"]
    assert len(await listed("--created-after", "2020-01-01T00:00:00Z", "--updated-before", "2999-01-01")) == 6
    assert await listed("--created-before", "2020-01-01T00:00:00+02:00") == []
    assert await listed("--status", "Paused", "--limit", "1") == ["op-c-01"]


async def test_list_limit_pages_across_pages(cli_service: tuple[str, str]) -> None:
    target, url = cli_service
    await empty_tables(url)
    async with connect(target, watch_wakeups=False) as backend:
        for i in range(130):
            await backend.save_snapshot(WorkflowSnapshot.new(f"many-{i:03d}", "many"))
    expected = [f"many-{i:03d}" for i in range(130)]
    run = await sayiir("workflows", "list", "--json", "--limit", "120", "--target", target)
    assert [line["instance_id"] for line in run.lines()] == expected[:120]  # pages of 100 and 20
    run = await sayiir("workflows", "list", "--json", "--limit", "500", "--target", target)
    assert [line["instance_id"] for line in run.lines()] == expected
    run = await sayiir("workflows", "list", "--json", "--target", target)
    assert len(run.lines()) == 100  # the default limit


async def test_describe_and_history(seeded: tuple[str, GrpcBackend]) -> None:
    target, _ = seeded
    run = await sayiir("workflows", "describe", "op-a-01", "--json", "--target", target)
    assert run.code == 0, run.err
    document = json.loads(run.out)
    assert list(document) == [
        *WORKFLOW_KEYS, "pending_signals", "buffered_events", "completed_tasks", "history_versions",
    ]  # fmt: skip
    assert document["buffered_events"] == {"approval": 2, "other": 1}
    assert document["completed_tasks"][0]["output_bytes"] == 7
    assert set(document["completed_tasks"][0]) == {"task_id", "completed_at", "output_bytes"}
    assert document["history_versions"] == 1
    pending = json.loads((await sayiir("workflows", "describe", "op-a-02", "--json", "--target", target)).out)
    assert pending["pending_signals"] == [{"kind": "Pause", "reason": "maintenance", "requested_by": "ops"}]

    text = await sayiir("workflows", "describe", "op-a-01", "--target", target)
    assert text.code == 0
    for expected in ("op-a-01", "buffered events:", "approval", "completed tasks:", "retry states:", "flaky disk"):
        assert expected in text.out

    history = await sayiir("workflows", "history", "op-a-01", "--json", "--target", target)
    assert history.code == 0, history.err
    [line] = history.lines()
    assert list(line) == ["version", "created_at", "status", "position", "size", "sha256"]
    assert line["version"] == 1 and line["position"] == "AtTask" and len(str(line["sha256"])) == 64

    for command in ("describe", "history"):
        missing = await sayiir("workflows", command, "ghost", "--target", target)
        assert missing.code == 1 and missing.out == ""
        assert "not found" in missing.err and len(missing.err.splitlines()) == 1


async def test_actions_by_id(seeded: tuple[str, GrpcBackend]) -> None:
    target, backend = seeded

    async def act(*args: str) -> Run:
        run = await sayiir("workflows", *args, "--target", target)
        assert list(json.loads(run.out)) == ACTION_KEYS, run.err
        return run

    run = await act("cancel", "op-a-01", "--reason", "wrong order", "--requested-by", "alice")
    assert (run.code, json.loads(run.out)) == (0, {"matched": 1, "applied": 1, "skipped": 0, "not_found": 0})
    cancelled = await backend.load_snapshot("op-a-01")
    assert cancelled.state.kind == "Cancelled" and cancelled.state.reason == "wrong order"  # type: ignore[union-attr]

    refused = await act("cancel", "op-b-02", "ghost")
    assert refused.code == 1
    assert json.loads(refused.out) == {"matched": 2, "applied": 0, "skipped": 1, "not_found": 1}
    assert "not found" in refused.err and "refused" in refused.err

    assert (await act("pause", "op-c-02", "--reason", "look")).code == 0
    assert (await backend.load_snapshot("op-c-02")).state.kind == "Paused"
    assert (await act("unpause", "op-c-02")).code == 0
    assert (await backend.load_snapshot("op-c-02")).state.kind == "InProgress"

    sent = await act("send-event", "op-c-02", "approval", "--payload", '{"approved": true}')
    assert sent.code == 0
    resumed = await backend.load_snapshot("op-c-02")
    assert resumed.position().kind == "AtTask"  # type: ignore[union-attr]

    assert (await act("delete", "op-b-01")).code == 0
    assert (await sayiir("workflows", "describe", "op-b-01", "--target", target)).code == 1


async def test_bulk_dry_run_and_yes(seeded: tuple[str, GrpcBackend]) -> None:
    target, backend = seeded
    dry = await sayiir("workflows", "cancel", "--status", "in_progress", "--dry-run", "--target", target)
    assert dry.code == 0
    assert json.loads(dry.out) == {"matched": 3, "applied": 0, "skipped": 0, "not_found": 0}
    assert (await backend.load_snapshot("op-a-01")).state.kind == "InProgress"

    # Not on a terminal and no --yes: refused as a usage error, nothing done.
    unconfirmed = await sayiir("workflows", "cancel", "--status", "in_progress", "--target", target)
    assert unconfirmed.code == 2 and unconfirmed.out == "" and len(unconfirmed.err.splitlines()) == 1
    assert "--yes" in unconfirmed.err
    assert (await backend.load_snapshot("op-a-01")).state.kind == "InProgress"

    done = await sayiir("workflows", "cancel", "--status", "in_progress", "--yes", "--target", target)
    assert done.code == 0, done.err
    # op-a-02 is claimed: its request waits for the worker (applied = recorded).
    assert json.loads(done.out) == {"matched": 3, "applied": 3, "skipped": 0, "not_found": 0}
    assert (await backend.load_snapshot("op-a-01")).state.kind == "Cancelled"
    assert (await backend.load_snapshot("op-c-02")).state.kind == "Cancelled"

    deleted = await sayiir("workflows", "delete", "--definition", DefinitionHash.sha256("def-b").to_hex(), "--yes",
                           "--target", target)  # fmt: skip
    assert json.loads(deleted.out) == {"matched": 2, "applied": 2, "skipped": 0, "not_found": 0}
    mixed = await sayiir("workflows", "unpause", "op-c-01", "--status", "paused", "--target", target)
    assert mixed.code == 2 and "not both" in mixed.err


async def test_claims(seeded: tuple[str, GrpcBackend], cli_service: tuple[str, str]) -> None:
    target, backend = seeded
    assert await backend.claim_task("op-a-01", STEP1, "worker-2", ttl=60) is not None
    conn = await asyncpg.connect(cli_service[1])
    try:
        await conn.execute(
            "UPDATE sayiir_workflow_claims SET expires_at = now() - interval '1 minute' WHERE instance_id = 'op-a-01'"
        )
    finally:
        await conn.close()
    run = await sayiir("claims", "list", "--json", "--target", target)
    assert run.code == 0, run.err
    lines = run.lines()
    assert [list(line) for line in lines] == [["instance_id", "task_id", "worker_id", "expires_at", "expired"]] * 2
    assert [(line["instance_id"], line["worker_id"], line["expired"]) for line in lines] == [
        ("op-a-01", "worker-2", True),
        ("op-a-02", "worker-1", False),
    ]
    expired = await sayiir("claims", "list", "--expired", "--json", "--target", target)
    assert [line["instance_id"] for line in expired.lines()] == ["op-a-01"]
    mine = await sayiir("claims", "list", "--worker", "worker-1", "--json", "--target", target)
    assert [line["instance_id"] for line in mine.lines()] == ["op-a-02"]
    table = await sayiir("claims", "list", "--target", target)
    assert table.out.splitlines()[0].split() == ["INSTANCE", "TASK", "WORKER", "EXPIRES", "EXPIRED"]

    released = await sayiir("claims", "release", "op-a-02", "--target", target)
    assert released.code == 0 and json.loads(released.out)["applied"] == 1
    again = await sayiir("claims", "release", "op-a-02", "--target", target)
    assert again.code == 1 and json.loads(again.out)["not_found"] == 1 and "not found" in again.err
    after = await sayiir("claims", "list", "--json", "--target", target)
    assert [line["instance_id"] for line in after.lines()] == ["op-a-01"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["workflows", "list", "--status", "sleeping"], "--status: unknown status 'sleeping'"),
        (["workflows", "list", "--definition", "xyz"], "--definition: must be 64 hex digits"),
        (["workflows", "list", "--task", "ab" * 31], "--task: must be 64 hex digits"),
        (["workflows", "list", "--created-after", "last tuesday"], "--created-after: not an RFC 3339 time"),
        (["workflows", "cancel", "--updated-before", "2026-13-01"], "--updated-before: not an RFC 3339 time"),
        (["workflows", "list", "--limit", "0"], "--limit"),
        (["workflows", "list", "--limit", "many"], "--limit"),
        (["workflows", "list", "--bogus"], "unrecognized arguments: --bogus"),
        (["workflows", "frobnicate"], "invalid choice"),
        (["workflows", "describe"], "required: ID"),
        (["claims", "list", "--tls-ca", "/nonexistent/ca.pem"], "--tls-ca: cannot read"),
        (["workflows", "send-event", "op-a-01", ""], "signal_name: must not be empty"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(cli_service: tuple[str, str], args: list[str], needle: str) -> None:
    target, _ = cli_service
    run = await sayiir(*args, "--target", target)
    assert run.code == 2, (run.out, run.err)
    assert run.out == ""
    assert len(run.err.splitlines()) == 1, run.err
    assert needle in run.err


async def test_roles_and_tokens(make_database: Callable[[], Awaitable[str]], tmp_path: Path) -> None:
    reader, operator = "reader-token-0123456789", "operator-token-0123456789"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{reader} reader\n{operator} operator\n")
    running = await start_service(await make_database(), auth_tokens_file=str(tokens))
    target = f"127.0.0.1:{running.port}"
    try:
        async with connect(target, token=operator, watch_wakeups=False) as backend:
            await backend.save_snapshot(WorkflowSnapshot.new("role-wf", "h"))
        listed = await sayiir("workflows", "list", "--json", "--target", target, env={"SAYIIR_TOKEN": reader})
        assert listed.code == 0 and [line["instance_id"] for line in listed.lines()] == ["role-wf"]
        denied = await sayiir("workflows", "cancel", "role-wf", "--target", target, "--token", reader)
        assert denied.code == 1 and "PERMISSION_DENIED" in denied.err and len(denied.err.splitlines()) == 1
        allowed = await sayiir("workflows", "cancel", "role-wf", "--target", target, "--token", operator)
        assert allowed.code == 0, allowed.err
        anonymous = await sayiir("workflows", "list", "--target", target, env={"SAYIIR_TOKEN": ""})
        assert anonymous.code == 1 and "UNAUTHENTICATED" in anonymous.err
    finally:
        await running.stop(grace=1)


async def test_tls_and_mutual_tls_flags(make_database: Callable[[], Awaitable[str]], pki: Path) -> None:  # noqa: F811
    running = await start_service(
        await make_database(),
        tls_cert_file=str(pki / "server.pem"),
        tls_key_file=str(pki / "server.key"),
        tls_client_ca_file=str(pki / "ca.pem"),
    )
    target = f"127.0.0.1:{running.port}"
    try:
        mutual = [
            "--tls-ca",
            str(pki / "ca.pem"),
            "--tls-cert",
            str(pki / "client.pem"),
            "--tls-key",
            str(pki / "client.key"),
        ]
        listed = await sayiir("workflows", "list", "--json", "--target", target, *mutual)
        assert listed.code == 0 and listed.out == "", listed.err
        # Without a client certificate the handshake is refused: exit 1, one line.
        refused = await sayiir("workflows", "list", "--target", target, "--tls-ca", str(pki / "ca.pem"))
        assert refused.code == 1 and len(refused.err.splitlines()) == 1
        half = await sayiir("claims", "list", "--target", target, "--tls-cert", str(pki / "client.pem"))
        assert half.code == 2 and "--tls-cert and --tls-key go together" in half.err
    finally:
        await running.stop(grace=1)


async def test_more_named_ids_than_one_call_takes(seeded: tuple[str, GrpcBackend]) -> None:
    """The command line goes through the client's OperatorClient, which splits named ids into calls."""
    target, backend = seeded
    ghosts = [f"ghost-{n:04d}" for n in range(1199)]
    run = await sayiir("workflows", "delete", "op-b-01", *ghosts, "--target", target)
    assert run.code == 1, run.err
    assert run.lines() == [{"matched": 1200, "applied": 1, "skipped": 0, "not_found": 1199}]
    assert "1199 workflow(s) not found" in run.err
    assert "op-b-01" not in await backend.list_snapshots()

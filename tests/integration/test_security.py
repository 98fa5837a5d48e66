"""TLS, mutual TLS, bearer tokens, safe client retries, and a least-privilege role."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_cli import running_service

from conftest import start_service
from sayiir_client import (
    BackendError,
    GrpcBackend,
    NotFoundError,
    TaskId,
    UnavailableError,
    WorkflowSnapshot,
    connect,
)
from sayiir_client.backend import open_channel

TOKEN = "tok-0123456789abcdef"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=sayiir-test-ca", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)  # fmt: skip
    return d


async def test_tls(make_database: Callable[[], Awaitable[str]], pki: Path) -> None:
    running = await start_service(
        await make_database(), tls_cert_file=str(pki / "server.pem"), tls_key_file=str(pki / "server.key")
    )
    target = f"127.0.0.1:{running.port}"
    try:
        async with connect(target, root_certificates=(pki / "ca.pem").read_bytes(), watch_wakeups=False) as client:
            await client.save_snapshot(WorkflowSnapshot.new("tls-1", "h"))
            assert (await client.load_snapshot("tls-1")).instance_id == "tls-1"
        async with connect(target, watch_wakeups=False, retry_delays=()) as plaintext:
            with pytest.raises(UnavailableError):
                await plaintext.load_snapshot("tls-1")
    finally:
        await running.stop(grace=1)


async def test_mutual_tls(make_database: Callable[[], Awaitable[str]], pki: Path) -> None:
    running = await start_service(
        await make_database(),
        tls_cert_file=str(pki / "server.pem"),
        tls_key_file=str(pki / "server.key"),
        tls_client_ca_file=str(pki / "ca.pem"),
    )
    target = f"127.0.0.1:{running.port}"
    ca = (pki / "ca.pem").read_bytes()
    try:
        async with connect(
            target,
            root_certificates=ca,
            certificate_chain=(pki / "client.pem").read_bytes(),
            private_key=(pki / "client.key").read_bytes(),
            watch_wakeups=False,
        ) as client:
            await client.save_snapshot(WorkflowSnapshot.new("mtls-1", "h"))
        async with connect(target, root_certificates=ca, watch_wakeups=False) as anonymous:
            with pytest.raises(BackendError) as info:
                await anonymous.load_snapshot("mtls-1")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(grace=1)


async def test_bearer_tokens(make_database: Callable[[], Awaitable[str]], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# service tokens\n{TOKEN}\n")
    running = await start_service(await make_database(), auth_tokens_file=str(tokens))
    target = f"127.0.0.1:{running.port}"
    try:
        async with connect(target, token=TOKEN) as client:
            await client.save_snapshot(WorkflowSnapshot.new("auth-1", "h"))
            assert (await client.load_snapshot("auth-1")).instance_id == "auth-1"
        for token in (None, "tok-0123456789abcdeX", TOKEN[:-1]):
            async with connect(target, token=token, watch_wakeups=False) as stranger:
                with pytest.raises(BackendError) as info:
                    await stranger.load_snapshot("auth-1")
                assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
                stream = stranger.wakeups()
                with pytest.raises(BackendError):
                    await stream.__anext__()
        async with grpc.aio.insecure_channel(target) as channel:  # health needs no token
            response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert response.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop(grace=1)


async def test_no_token_payload_or_password_in_the_logs(make_database: Callable[[], Awaitable[str]]) -> None:
    url = (await make_database()).replace("postgres@", "postgres:pg-password-123@", 1)
    with running_service(["--database-url", url], env={"SAYIIR_AUTH_TOKENS": TOKEN}) as (address, proc):
        async with connect(address, token=TOKEN) as client:
            snapshot = WorkflowSnapshot.with_initial_input("auth-log", "h", b"payload-marker-xyz")
            await client.save_snapshot(snapshot)
        async with connect(address, token="tok-wrong-wrong-wrong", watch_wakeups=False) as stranger:
            with pytest.raises(BackendError):
                await stranger.load_snapshot("auth-log")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert TOKEN not in output and "tok-wrong" not in output
    assert "payload-marker-xyz" not in output and "pg-password-123" not in output
    statuses = {json.loads(line).get("status") for line in output.splitlines() if '"event": "call"' in line}
    assert {"OK", "UNAUTHENTICATED"} <= statuses


def test_invalid_security_settings_stop_the_start() -> None:
    import os
    import sys

    for env in ({"SAYIIR_AUTH_TOKENS": "short"}, {"SAYIIR_TLS_CERT_FILE": "/nonexistent.pem"}):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sayiir_grpc",
                "serve",
                "--database-url",
                "postgresql://postgres@127.0.0.1/postgres",
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert next(iter(env)) in result.stderr


# -- client retries -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_idempotent_calls_are_retried_on_unavailable(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    port = _free_port()
    channel = open_channel(f"127.0.0.1:{port}")
    client = GrpcBackend(channel, retry_delays=(0.2, 0.3, 0.5, 0.8, 1.0))
    # The service comes up while the first attempts fail with UNAVAILABLE.
    starting = asyncio.ensure_future(asyncio.sleep(0.4))
    await starting
    pending = asyncio.ensure_future(client.save_snapshot(WorkflowSnapshot.new("retried", "h")))
    await asyncio.sleep(0.1)
    running = await start_service(url, listen=f"127.0.0.1:{port}")
    try:
        await asyncio.wait_for(pending, 10)
        assert (await client.load_snapshot("retried")).instance_id == "retried"
    finally:
        await channel.close()
        await running.stop(grace=1)


async def test_retries_reuse_the_calls_idempotency_key(make_database: Callable[[], Awaitable[str]]) -> None:
    """Every call is retried on UNAVAILABLE, with the same x-request-id; each logical call has its own."""
    running = await start_service(await make_database())
    seen: list[str] = []

    class LoseFirstReply(grpc.aio.ServerInterceptor):
        # The call is applied, then its reply is lost: UNAVAILABLE reaches the client.
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = await continuation(details)
            if not details.method.endswith("/SendEvent"):
                return handler
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                key = dict(context.invocation_metadata() or ()).get("x-request-id", "")
                seen.append(key)
                reply = await inner(request, context)
                if seen.count(key) == 1:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "reply lost")
                return reply

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)

    # A relay server in front of the service adds the fault; the real service answers.
    relay = grpc.aio.server(interceptors=[LoseFirstReply()])
    upstream = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    from sayiir_common.proto.sayiir.v1 import signal_store_pb2_grpc

    class Relay(signal_store_pb2_grpc.SignalStoreServicer):
        async def SendEvent(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            metadata = tuple((k, v) for k, v in context.invocation_metadata() or () if k == "x-request-id")
            return await signal_store_pb2_grpc.SignalStoreStub(upstream).SendEvent(request, metadata=metadata)

    signal_store_pb2_grpc.add_SignalStoreServicer_to_server(Relay(), relay)
    port = relay.add_insecure_port("127.0.0.1:0")
    await relay.start()
    try:
        async with connect(f"127.0.0.1:{port}", watch_wakeups=False, retry_delays=(0.05,)) as client:
            assert await client.send_event("keyed-retry", "go", b"1") is False
            assert await client.send_event("keyed-retry", "go", b"2") is False
        assert len(seen) == 4 and seen[0] == seen[1] and seen[2] == seen[3] and seen[0] != seen[2]
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as direct:
            # Each logical call applied once, in order.
            assert await direct.consume_event("keyed-retry", "go") == b"1"
            assert await direct.consume_event("keyed-retry", "go") == b"2"
            assert await direct.consume_event("keyed-retry", "go") is None
    finally:
        await relay.stop(None)
        await upstream.close()
        await running.stop(grace=1)


async def test_a_retried_delete_or_release_that_already_happened_succeeds(backend: GrpcBackend) -> None:
    """The first attempt's NOT_FOUND is a real error; a retry's NOT_FOUND means "already done"."""
    with pytest.raises(NotFoundError):
        await backend.delete_snapshot("never-existed")
    snapshot = WorkflowSnapshot.with_initial_input("reclaim", "h", b"1")
    from sayiir_client import AtTask

    snapshot.update_position(AtTask(TaskId.sha256("t")))
    await backend.save_snapshot(snapshot)
    first = await backend.claim_task("reclaim", TaskId.sha256("t"), "w1", 30)
    again = await backend.claim_task("reclaim", TaskId.sha256("t"), "w1", 30)  # a retried claim
    assert first is not None and again is not None and again.worker_id == "w1"
    assert await backend.claim_task("reclaim", TaskId.sha256("t"), "w2", 30) is None


# -- least privilege ------------------------------------------------------------


async def test_service_runs_as_a_least_privilege_role(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    owner = await asyncpg.connect(url)
    try:
        from sayiir_grpc.migrate import migrate

        await migrate(owner)  # the schema owner migrates (sayiir-grpc migrate)
        role = f"sayiir_app_{url.rsplit('_', 1)[-1]}"
        database = url.rsplit("/", 1)[-1]
        # The grants docs/security.md lists.
        await owner.execute(f"DROP ROLE IF EXISTS {role}")
        await owner.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        await owner.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        await owner.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await owner.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        await owner.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        await owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        app_url = url.replace("postgres@", f"{role}@", 1)
        running = await start_service(app_url)
        try:
            async with connect(f"127.0.0.1:{running.port}") as client:
                snapshot = WorkflowSnapshot.with_initial_input("lp-1", "h", b"1")
                from sayiir_client import AtTask

                snapshot.update_position(AtTask(TaskId.sha256("t")))
                await client.save_snapshot(snapshot)
                assert await client.claim_task("lp-1", TaskId.sha256("t"), "w", 30)
                await client.save_task_result("lp-1", TaskId.sha256("t"), b"r")
                await client.send_event("lp-1", "go", b"e")
                assert await client.consume_event("lp-1", "go") == b"e"
                assert (await client.wait_for_wakeup(3)) is not None
                await client.delete_snapshot("lp-1")
            app = await asyncpg.connect(app_url)
            try:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute("CREATE TABLE sneaky (x int)")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute("DROP TABLE sayiir_workflow_events")
            finally:
                await app.close()
        finally:
            await running.stop(grace=1)
            await owner.execute(f"DROP OWNED BY {role}")
            await owner.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        await owner.close()


# -- unauthenticated requests are refused before they are parsed -----------------


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_unauthenticated_large_requests_are_not_parsed(make_database: Callable[[], Awaitable[str]]) -> None:
    """Eight 16 MB requests without a token leave the service's memory where it was."""
    from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2, snapshot_store_pb2_grpc

    limit = 17 * 1024 * 1024
    env = {"SAYIIR_AUTH_TOKENS": TOKEN, "SAYIIR_MAX_MESSAGE_BYTES": str(limit)}
    # 16 MB of packed enum values: 16 million entries once parsed.
    request = snapshot_store_pb2.ListSnapshotsRequest(statuses=[1] * (16 * 1024 * 1024))
    with running_service(["--database-url", await make_database()], env=env) as (address, proc):
        options = [("grpc.max_send_message_length", limit)]
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            stub = snapshot_store_pb2_grpc.SnapshotStoreStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as first:
                await stub.ListSnapshots(snapshot_store_pb2.ListSnapshotsRequest(), timeout=10)
            assert first.value.code() == grpc.StatusCode.UNAUTHENTICATED
            before = _rss_bytes(proc.pid)
            started = asyncio.get_running_loop().time()
            for _ in range(8):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.ListSnapshots(request, timeout=30)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            elapsed = asyncio.get_running_loop().time() - started
            after = _rss_bytes(proc.pid)
    print(f"\n[security] RSS before {before // 2**20} MiB, after {after // 2**20} MiB, 8 calls in {elapsed:.2f} s")
    assert after - before < 100 * 2**20


def test_unusable_tls_files_stop_the_start_with_one_line(pki: Path, tmp_path: Path) -> None:
    from test_cli import _refusal

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    url = ["serve", "--database-url", "postgresql://postgres@127.0.0.1:1/none", "--metrics-listen", "off"]
    cases = [
        (
            {"SAYIIR_TLS_CERT_FILE": str(garbage), "SAYIIR_TLS_KEY_FILE": str(pki / "server.key")},
            "SAYIIR_TLS_CERT_FILE",
        ),
        # A certificate with another certificate's key.
        (
            {"SAYIIR_TLS_CERT_FILE": str(pki / "server.pem"), "SAYIIR_TLS_KEY_FILE": str(pki / "client.key")},
            "SAYIIR_TLS_KEY_FILE",
        ),
        (
            {
                "SAYIIR_TLS_CERT_FILE": str(pki / "server.pem"),
                "SAYIIR_TLS_KEY_FILE": str(pki / "server.key"),
                "SAYIIR_TLS_CLIENT_CA_FILE": str(garbage),
            },
            "SAYIIR_TLS_CLIENT_CA_FILE",
        ),
    ]
    for env, setting in cases:
        line = _refusal([*url, "--listen", "127.0.0.1:0"], env=env)
        assert setting in line, line


async def test_refused_huge_ids_are_cut_in_the_logs(make_database: Callable[[], Awaitable[str]]) -> None:
    from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2, snapshot_store_pb2_grpc

    huge = "i" * (3 * 1024 * 1024)
    with running_service(["--database-url", await make_database()]) as (address, proc):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = snapshot_store_pb2_grpc.SnapshotStoreStub(channel)
            for _ in range(10):
                request = snapshot_store_pb2.SaveTaskResultRequest(instance_id=huge, task_id=b"\x01" * 32)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.SaveTaskResult(request)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    calls = [json.loads(line) for line in output.splitlines() if '"method": "SaveTaskResult"' in line]
    assert len(calls) == 10
    assert all(len(c["instance_id"]) == 256 and c["instance_id_length"] == len(huge) for c in calls)
    assert len(output) < 100_000

"""The `sayiir-grpc` command: `serve` and `migrate`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import asyncpg
import structlog

from sayiir_grpc import config, migrate
from sayiir_grpc.log_setup import configure
from sayiir_grpc.security import SecurityConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sayiir-grpc", description="gRPC persistence service for Sayiir workflows.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Run the gRPC service (migrates first).")
    config.add_arguments(serve)
    mig = commands.add_parser("migrate", help="Create or adopt the schema, then exit.")
    config.add_arguments(mig)
    check = commands.add_parser(
        "healthcheck", help="Exit 0 when the service at --listen reports SERVING (grpc.health.v1), else 1."
    )
    check.add_argument("--listen", default=None, help="HOST:PORT of the service [env SAYIIR_LISTEN]")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    return parser


async def _healthcheck(target: str, timeout: float) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            print(f"sayiir-grpc: {target} is not healthy: {exc.code().name}", file=sys.stderr)
            return False
    serving: bool = response.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
    return serving


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for step in await migrate.migrate(conn):
            print(step)
        print("schema is up to date")
    finally:
        await conn.close()


def _with_database(settings: config.Settings, run: object) -> None:
    """Run `run(url)` against the configured database or an embedded one."""
    assert callable(run)
    if settings.database_url:
        asyncio.run(run(settings.database_url))
        return
    from sayiir_grpc.embedded import EmbeddedPostgres

    data_dir = settings.embedded_data_dir()
    with EmbeddedPostgres(data_dir) as embedded:
        print(f"embedded PostgreSQL at {embedded.url} (data in {data_dir})", flush=True)
        asyncio.run(run(embedded.url))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "healthcheck":
        target = args.listen or os.environ.get("SAYIIR_LISTEN") or "127.0.0.1:50051"
        return 0 if asyncio.run(_healthcheck(target, args.timeout)) else 1
    try:
        settings = config.load(args)
    except config.ConfigError as exc:
        print(f"sayiir-grpc: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    log = structlog.get_logger("sayiir_grpc")
    try:
        if args.command == "migrate":
            _with_database(settings, _migrate)
        else:
            from sayiir_grpc.app import serve

            _with_database(settings, lambda url: serve(settings, url))
    except KeyboardInterrupt:
        return 130
    except (migrate.MigrationError, OSError, asyncpg.PostgresError, SecurityConfigError) as exc:
        log.error("start failed", error=str(exc))
        print(f"sayiir-grpc: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

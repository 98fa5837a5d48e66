"""The packages' dependency rule: server and client both build on sayiir_common,
never on each other, and sayiir_common on neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "server/sayiir_grpc": {"sayiir_client"},
    "client/sayiir_client": {"sayiir_grpc"},
    "common/sayiir_common": {"sayiir_client", "sayiir_grpc"},
}


def imported_packages(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_the_one_it_must_not(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    for path in files:
        wrong = imported_packages(path) & FORBIDDEN[package]
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def test_the_checker_sees_imports() -> None:
    assert imported_packages(Path(__file__)) >= {"ast", "pathlib", "pytest"}

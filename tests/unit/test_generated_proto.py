"""The committed generated modules must equal what protoc makes from proto/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "common" / "sayiir_common" / "proto"


def _load_generator() -> object:
    spec = importlib.util.spec_from_file_location("generate_proto", ROOT / "scripts" / "generate_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate_proto"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    generator = _load_generator()
    fresh = {p.relative_to(tmp_path): p.read_text() for p in generator.generate(tmp_path)}  # type: ignore[attr-defined]
    committed = {
        p.relative_to(COMMITTED): p.read_text()
        for p in COMMITTED.rglob("*")
        if p.is_file() and p.suffix in {".py", ".pyi"}
    }
    stale = sorted(str(k) for k in fresh.keys() | committed.keys() if fresh.get(k) != committed.get(k))
    assert not stale, f"generated protobuf code is stale, run scripts/generate_proto.py: {stale}"


def test_every_proto_field_is_documented() -> None:
    """Each message field, enum value and RPC has a comment line right above it."""
    undocumented = []
    for proto in sorted((ROOT / "proto").rglob("*.proto")):
        lines = proto.read_text().splitlines()
        for number, line in enumerate(lines):
            text = line.strip()
            is_field = text.endswith(";") and "=" in text and not text.startswith(("syntax", "option", "//"))
            is_rpc = text.startswith("rpc ")
            if (is_field or is_rpc) and not lines[number - 1].strip().startswith("//"):
                previous = lines[number - 1].strip()
                # A field of a oneof-free one-line message may follow its
                # message line only if the message has a comment itself.
                undocumented.append(f"{proto.name}:{number + 1}: {text} (after {previous!r})")
    assert not undocumented, "\n".join(undocumented)

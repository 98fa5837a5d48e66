"""Generate the Python protobuf and gRPC modules from `proto/`.

The generated modules are committed under `common/sayiir_common/proto/`, so
installing the package needs no code generation; `tests/unit/test_generated_proto.py`
regenerates them into a temporary folder and fails when the committed copy is stale.

protoc writes absolute imports that follow the proto package (`from sayiir.v1
import snapshot_pb2`). A top-level `sayiir` package would collide with the
Sayiir engine's own PyPI package, so the imports are rewritten to point inside
`sayiir_common.proto`.

Usage: python scripts/generate_proto.py [OUTPUT_DIR]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DEFAULT_OUTPUT = ROOT / "common" / "sayiir_common" / "proto"
PACKAGE_PREFIX = "sayiir_common.proto"

_IMPORT_RE = re.compile(r"^from sayiir\.v1 import ", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(output: Path) -> list[Path]:
    """Generate every module into `output`; return the files written."""
    output.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{PROTO_ROOT}", f"-I{Path(protoc.__file__).parent / '_proto'}"]
    sources = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        *includes,
        f"--python_out={output}",
        f"--pyi_out={output}",
        f"--grpc_python_out={output}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written: list[Path] = []
    for path in sorted(output.rglob("*.py*")):
        if path.suffix not in {".py", ".pyi"}:
            continue
        text = path.read_text()
        fixed = _IMPORT_RE.sub(f"from {PACKAGE_PREFIX}.sayiir.v1 import ", text)
        if fixed != text:
            path.write_text(fixed)
        written.append(path)
    package_dirs = {output}
    for path in written:
        package_dirs.update(d for d in path.parents if d.is_relative_to(output))
    for package_dir in package_dirs:
        init = package_dir / "__init__.py"
        if not init.exists():
            init.write_text("")
            written.append(init)
    return sorted(written)


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    for path in generate(output):
        print(path.relative_to(output))


if __name__ == "__main__":
    main()

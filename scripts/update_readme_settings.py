"""Rewrite the settings table of README.md from sayiir_grpc.config.SETTINGS.

`tests/unit/test_config.py` fails when the README's table differs from what
this prints, so the documented settings always match the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sayiir_grpc.config import SETTINGS

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def table() -> str:
    lines = ["| flag | variable | default | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = "unset" if s.default is None else s.default
        lines.append(f"| `{s.flag}` | `{s.env}` | {default} | {s.help} |")
    return "\n".join(lines)


def render(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    text = README.read_text()
    if START not in text:
        sys.exit("README.md has no settings markers")
    README.write_text(render(text))

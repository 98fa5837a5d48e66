"""Completed tasks land where the engine's hash table puts them.

Every step of the golden engine runs where one task was completed is
replayed: the snapshot before it, plus `mark_task_completed`, must list its
completed tasks in exactly the order the engine wrote next.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from sayiir_common.codec import JsonCodec
from sayiir_common.model import InProgress

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "engine_blobs.json").read_text())


def _steps() -> list[object]:
    steps = []
    for name, case in GOLDEN["cases"].items():
        rows = case["history"]
        for before, after in itertools.pairwise(rows):
            a = JsonCodec().decode(bytes.fromhex(before["data"]))
            b = JsonCodec().decode(bytes.fromhex(after["data"]))
            if not (isinstance(a.state, InProgress) and isinstance(b.state, InProgress)):
                continue
            old, new = list(a.state.completed_tasks), list(b.state.completed_tasks)
            if len(new) == len(old) + 1 and set(old) < set(new):
                steps.append(pytest.param(before["data"], after["data"], id=f"{name}-v{after['version']}"))
    return steps


STEPS = _steps()


def test_the_fixture_has_many_steps() -> None:
    assert len(STEPS) >= 50


@pytest.mark.parametrize(("before", "after"), STEPS)
def test_mark_task_completed_matches_the_engines_order(before: str, after: str) -> None:
    snapshot = JsonCodec().decode(bytes.fromhex(before))
    expected = JsonCodec().decode(bytes.fromhex(after))
    assert isinstance(snapshot.state, InProgress) and isinstance(expected.state, InProgress)
    (new,) = set(expected.state.completed_tasks) - set(snapshot.state.completed_tasks)
    snapshot.mark_task_completed(new, b"")
    assert list(snapshot.state.completed_tasks) == list(expected.state.completed_tasks)

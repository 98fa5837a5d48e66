"""memory: how the service process holds its memory."""

from __future__ import annotations

import json
import subprocess
import sys

from sayiir_grpc.memory import YOUNG_COLLECTION_THRESHOLD

# In a process of its own: freezing this one would keep pytest's garbage.
SETTLE = """
import gc, json
from sayiir_grpc import memory
import grpc, asyncpg  # the long-lived objects of a started service
before = gc.get_freeze_count()
memory.settle_heap()
print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()[0], len(gc.get_objects(generation=2))]))
"""


def test_settle_heap_freezes_what_is_alive_and_collects_the_young_less_often() -> None:
    out = subprocess.run([sys.executable, "-c", SETTLE], capture_output=True, text=True, check=True, timeout=60)
    before, frozen, young_threshold, oldest_left = json.loads(out.stdout)
    assert before == 0
    assert frozen > 10_000  # the imported modules' objects
    assert oldest_left < frozen / 10  # a full collection no longer walks them
    assert young_threshold == YOUNG_COLLECTION_THRESHOLD

"""How the service process holds its memory: large buffers go back to the
operating system, and the garbage collector leaves long-lived objects alone.

Large message buffers go back to the operating system once freed.

glibc serves allocations above its mmap threshold with their own mappings,
returned on free, but raises that threshold each time such a mapping is
freed: after a few large requests, later ones come from the heap and stay
in the process (eight refused 16 MB requests kept about 90 MB). Fixing the
threshold at 1 MiB keeps every message-sized buffer a mapping of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

# The youngest generation is collected after this many container objects
# (net of those freed) rather than CPython's 700. At 700 the collector ran
# every 60 calls or so under the fleet benchmark's load, 0.35 ms a time;
# at 10,000, a few times a minute, and a tenth of the collector's CPU.
YOUNG_COLLECTION_THRESHOLD = 10_000

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1024 * 1024


def release_large_buffers() -> bool:
    """Pin glibc's mmap threshold; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def settle_heap() -> None:
    """Once started: freeze what is alive, and collect the young generation less often.

    Everything alive once the service is up (modules, gRPC, protobuf
    descriptors, the pools: a few hundred thousand objects) lives as long
    as the process. Left in the oldest generation, each full collection
    walks all of it: about 40 ms with every call of the process stopped,
    every few seconds under load, a stall in the tail of every call's
    latency. Frozen, a full collection walks only what the calls made
    since, a few ms.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)

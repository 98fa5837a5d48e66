"""Large message buffers go back to the operating system once freed.

glibc serves allocations above its mmap threshold with their own mappings,
returned on free, but raises that threshold each time such a mapping is
freed: after a few large requests, later ones come from the heap and stay
in the process (eight refused 16 MB requests kept about 90 MB). Fixing the
threshold at 1 MiB keeps every message-sized buffer a mapping of its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util

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

"""The order in which the engine writes completed tasks.

The engine keeps a snapshot's completed tasks in a `FxHashMap<TaskId, _>`
(rustc-hash 2 over hashbrown) and serde writes a map in its table's
iteration order: bucket order, which follows from each key's hash and from
the order the keys were inserted (collisions probe for the next free
bucket, and the table grows at 3, 7, 14, 28, ... entries). For a snapshot
the service advances to match, byte for byte, what the engine would write,
`insert_in_engine_order` places a new task where the engine's table would.

Only this map is deterministic in the engine: the others (retries, loop
iterations, fork/join branches) use a randomly seeded hasher, so their
order is whatever the snapshot already carries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import permutations
from typing import TypeVar

K = TypeVar("K")

_M64 = (1 << 64) - 1
# rustc-hash 2.x constants (FxHasher and its byte-slice hash).
_FX_K = 0xF1357AEA2E62A9C5
_SEED1 = 0x243F6A8885A308D3
_SEED2 = 0x13198A2E03707344
_PREVENT_TRIVIAL_ZERO_COLLAPSE = 0xA4093822299F31D0
_ROTATE = 26
_GROUP_WIDTH = 16  # hashbrown's SSE2 control-byte group
_MAX_SEARCH = 7  # keys beyond which a full permutation search is not attempted


def _multiply_mix(x: int, y: int) -> int:
    full = x * y
    return (full & _M64) ^ (full >> 64)


def _hash_bytes(data: bytes) -> int:
    length = len(data)
    s0, s1 = _SEED1, _SEED2
    if length <= 16:
        if length >= 8:
            s0 ^= int.from_bytes(data[:8], "little")
            s1 ^= int.from_bytes(data[-8:], "little")
        elif length >= 4:
            s0 ^= int.from_bytes(data[:4], "little")
            s1 ^= int.from_bytes(data[-4:], "little")
        elif length:
            s0 ^= data[0]
            s1 ^= (data[-1] << 8) | data[length // 2]
    else:
        offset = 0
        while offset < length - 16:
            x = int.from_bytes(data[offset : offset + 8], "little")
            y = int.from_bytes(data[offset + 8 : offset + 16], "little")
            s0, s1 = s1, _multiply_mix(s0 ^ x, _PREVENT_TRIVIAL_ZERO_COLLAPSE ^ y)
            offset += 16
        s0 ^= int.from_bytes(data[-16:-8], "little")
        s1 ^= int.from_bytes(data[-8:], "little")
    return _multiply_mix(s0, s1) ^ length


def fx_hash_32_bytes(raw: bytes) -> int:
    """FxHasher over `[u8; 32]`'s Hash: the length prefix, then the bytes."""
    h = ((0 + len(raw)) * _FX_K) & _M64
    h = ((h + _hash_bytes(raw)) * _FX_K) & _M64
    return ((h << _ROTATE) | (h >> (64 - _ROTATE))) & _M64


def _buckets_for(capacity: int) -> int:
    if capacity < 8:
        return 4 if capacity < 4 else 8
    wanted = capacity * 8 // 7
    buckets = 1
    while buckets < wanted:
        buckets <<= 1
    return buckets


def _capacity_of(buckets: int) -> int:
    return buckets - 1 if buckets < 8 else buckets // 8 * 7


def _free_slot(slots: Sequence[object | None], h: int) -> int:
    buckets = len(slots)
    mask = buckets - 1
    position, stride = h & mask, 0
    while True:
        for offset in range(_GROUP_WIDTH):
            if buckets < _GROUP_WIDTH and position + offset >= buckets:
                # Past a small table the control bytes read as empty; the
                # index wraps, and a full one falls back to the first free.
                index = (position + offset) & mask
                if slots[index] is None:
                    return index
                return next(i for i, slot in enumerate(slots) if slot is None)
            index = (position + offset) & mask
            if slots[index] is None:
                return index
        stride += _GROUP_WIDTH
        position = (position + stride) & mask


def iteration_order(insertions: Sequence[K], hash_of: Callable[[K], int]) -> list[K]:
    """The iteration order of a fresh table after inserting `insertions` in order."""
    slots: list[K | None] = []
    for items, key in enumerate(insertions):
        if not slots or items + 1 > _capacity_of(len(slots)):
            current = _capacity_of(len(slots)) if slots else 0
            grown: list[K | None] = [None] * _buckets_for(max(items + 1, current + 1))
            # Growing re-inserts the old entries in iteration order.
            for old in (s for s in slots if s is not None):
                grown[_free_slot(grown, hash_of(old))] = old
            slots = grown
        slots[_free_slot(slots, hash_of(key))] = key
    return [s for s in slots if s is not None]


def insertion_sequence(order: Sequence[K], hash_of: Callable[[K], int]) -> list[K]:
    """An insertion order that leaves a fresh table iterating in `order`.

    The order itself almost always is one; otherwise a small table is
    searched. When nothing reproduces `order`, `order` is returned.
    """
    keys = list(order)
    if iteration_order(keys, hash_of) == keys or len(keys) > _MAX_SEARCH:
        return keys
    for candidate in permutations(keys):
        if iteration_order(candidate, hash_of) == keys:
            return list(candidate)
    return keys


def insert_in_engine_order(order: Sequence[K], new_key: K, hash_of: Callable[[K], int]) -> list[K]:
    """`order` (a table's iteration order) with `new_key` inserted as the engine would."""
    return iteration_order([*insertion_sequence(order, hash_of), new_key], hash_of)

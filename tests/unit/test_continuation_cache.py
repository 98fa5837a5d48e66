"""The continuation cache's bounds: entries and blob bytes, oldest out first."""

from __future__ import annotations

from sayiir_common.model import WorkflowSnapshot
from sayiir_grpc.stores.continuation import MAX_BLOB_BYTES, ContinuationCache


def kept(cache: ContinuationCache, name: str, size: int) -> None:
    cache.keep(WorkflowSnapshot.new(name, "def"), 1, b"h" * 32, "w1", size)


def test_the_oldest_entries_go_past_the_entry_limit() -> None:
    cache = ContinuationCache(max_entries=3)
    for name in "abcd":
        kept(cache, name, 10)
    assert len(cache) == 3
    assert cache.take("a") is None
    assert cache.take("d") is not None
    assert cache.blob_bytes == 20


def test_the_oldest_entries_go_past_the_byte_budget() -> None:
    cache = ContinuationCache(max_entries=100, max_bytes=1000)
    for name in "abcde":
        kept(cache, name, 300)
    assert [name for name in "abcde" if cache.take(name) is not None] == ["c", "d", "e"]
    assert cache.blob_bytes == 0


def test_keeping_again_replaces_the_entry_and_its_size() -> None:
    cache = ContinuationCache()
    kept(cache, "a", 100)
    kept(cache, "a", 40)
    assert (len(cache), cache.blob_bytes) == (1, 40)
    cache.drop("a")
    assert (len(cache), cache.blob_bytes) == (0, 0)


def test_a_large_snapshot_is_not_kept_and_drops_an_older_entry_of_its_instance() -> None:
    cache = ContinuationCache()
    kept(cache, "a", 100)
    kept(cache, "a", MAX_BLOB_BYTES)
    assert (len(cache), cache.blob_bytes) == (0, 0)

"""32-byte SHA-256 identifiers: `TaskId` and `DefinitionHash`.

Sayiir names every task, node and workflow definition by the SHA-256 of its
user-facing name; building an id from a string hashes the string, exactly as
Rust's `TaskId::from("name")` does.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar, Self

HASH_LEN = 32


class Hash32:
    """An immutable 32-byte value, shown and serialized as lowercase hex."""

    __slots__ = ("_bytes",)
    _bytes: bytes
    kind: ClassVar[str] = "Hash32"

    def __init__(self, value: bytes | bytearray | memoryview | Hash32) -> None:
        if isinstance(value, Hash32):
            raw = value._bytes
        elif isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
        else:
            raise TypeError(f"{self.kind} takes 32 bytes, not {type(value).__name__}")
        if len(raw) != HASH_LEN:
            raise ValueError(f"{self.kind} must be {HASH_LEN} bytes, got {len(raw)}")
        self._bytes = raw

    @classmethod
    def sha256(cls, text: str | bytes) -> Self:
        """The id of a name: the SHA-256 of its UTF-8 bytes."""
        data = text.encode("utf-8") if isinstance(text, str) else text
        return cls(hashlib.sha256(data).digest())

    @classmethod
    def from_hex(cls, text: str) -> Self:
        try:
            raw = bytes.fromhex(text)
        except ValueError as exc:
            raise ValueError(f"{cls.kind} hex is not valid hex: {text!r}") from exc
        return cls(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        return cls(raw)

    @classmethod
    def coerce(cls, value: Hash32 | bytes | str) -> Self:
        """Accept an id, its 32 raw bytes, or a name to hash (Rust's `From<&str>`)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls.sha256(value)
        return cls(value)

    def to_hex(self) -> str:
        return self._bytes.hex()

    def as_bytes(self) -> bytes:
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Hash32):
            return type(self) is type(other) and self._bytes == other._bytes
        return NotImplemented

    def __lt__(self, other: Hash32) -> bool:
        return self._bytes < other._bytes

    def __hash__(self) -> int:
        return hash((self.kind, self._bytes))

    def __repr__(self) -> str:
        return f"{self.kind}({self.to_hex()})"

    def __str__(self) -> str:
        return self.to_hex()


class TaskId(Hash32):
    """The id of a task or of any workflow node (delay, signal, fork, loop)."""

    __slots__ = ()
    kind = "TaskId"


class DefinitionHash(Hash32):
    """The hash of a workflow definition."""

    __slots__ = ()
    kind = "DefinitionHash"

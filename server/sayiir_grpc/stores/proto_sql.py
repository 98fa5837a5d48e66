"""Protobuf replies built in SQL, for statements that record an idempotency
key's outcome in the same round trip as the write it answers (the reply
depends on values known only under the row lock, such as a version).

Each builder yields exactly `Reply(...).SerializeToString()` of the reply
it names (tests/integration/test_proto_sql.py compares them).
"""

from __future__ import annotations

# Varint bytes 1 to 5 carry 7 bits each: enough for any value below 2**35,
# which covers every non-negative int32 (a history version).
_VARINT_BYTES = 5


def varint(value: str) -> str:
    """The base-128 varint of the non-negative bigint SQL expression `value`."""
    v = f"({value})::bigint"
    encoded = "'\\x0000000000'::bytea"
    for index in range(_VARINT_BYTES):
        shift = 7 * index
        more = f"CASE WHEN {v} >= {1 << (shift + 7)} THEN 128 ELSE 0 END" if index < _VARINT_BYTES - 1 else "0"
        encoded = f"set_byte({encoded}, {index}, ((({v} >> {shift}) & 127) | {more})::int)"
    length = " ".join(f"WHEN {v} < {1 << (7 * n)} THEN {n}" for n in range(1, _VARINT_BYTES))
    return f"substring({encoded} FROM 1 FOR (CASE {length} ELSE {_VARINT_BYTES} END))"


def save_snapshot_reply(written: str, history_version: str) -> str:
    """SaveSnapshotResponse(written, history_version): field 1 (bool, tag
    0x08) and field 2 (int32, tag 0x10), each left out at its default."""
    return (
        f"(CASE WHEN {written} THEN '\\x0801'::bytea ELSE ''::bytea END"
        f" || CASE WHEN {history_version} <> 0 THEN '\\x10'::bytea || {varint(history_version)} ELSE ''::bytea END)"
    )


def _field(tag: str, value: str, *, repeated: bool = False) -> str:
    """A length-delimited field (string, bytes or message) of the bytea
    `value`: left out when empty, as proto3 writes a singular field, unless
    it is an element of a repeated field (always written). `value` is read
    many times: pass a column, not an expression to compute."""
    encoded = f"'\\x{tag}'::bytea || {varint(f'octet_length({value})')} || {value}"
    if repeated:
        return f"({encoded})"
    return f"(CASE WHEN octet_length({value}) > 0 THEN {encoded} ELSE ''::bytea END)"


def claimed_task(instance_id_utf8: str, task_id: str, version: str) -> str:
    """AvailableTask(instance_id, task_id, version), the other fields unset:
    field 1 (string, tag 0x0a; pass its UTF-8 bytes), field 2 (bytes, tag
    0x12), field 7 (int64, tag 0x38). Columns, as for `_field`."""
    return (
        f"({_field('0a', instance_id_utf8)} || {_field('12', task_id)}"
        f" || CASE WHEN {version} <> 0 THEN '\\x38'::bytea || {varint(version)} ELSE ''::bytea END)"
    )


def claimed_tasks_reply(task: str, order_by: str) -> str:
    """Aggregate: ClaimAvailableTasksResponse(tasks=...) of the column `task`
    (each a `claimed_task`) over the group's rows in `order_by` order; field
    1, repeated, tag 0x0a. The empty reply when there is no row."""
    return f"COALESCE(string_agg({_field('0a', task, repeated=True)}, ''::bytea ORDER BY {order_by}), ''::bytea)"

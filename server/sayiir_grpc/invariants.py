"""Consistency checks over the Sayiir tables: do snapshots, history, tasks,
claims and signals agree?

`check_invariants(conn)` reads the whole database in one read-only
REPEATABLE READ transaction (one consistent picture, even while a service
writes) and returns every `Violation` it finds; an empty list means every
invariant below holds. `sayiir-grpc check --database-url URL` runs it.

Invariants, by the name a violation carries:

- `history-missing`: a snapshot row has a history row at its
  `history_version` (rows the engine wrote before blobs moved into history,
  with the blob still in `sayiir_workflow_snapshots.data`, are accepted).
- `history-ahead`: no history row of the instance is newer than the row's
  `history_version` (`max(version) == history_version`).
- `history-duplicate-version`: (instance, version) is unique in history.
- `data-hash-mismatch`: the row's `data_hash` equals the current history
  row's `data_hash`, which equals `sha256(data)`.
- `history-hash-mismatch`: every older history row whose `data_hash` is set
  has `data_hash = sha256(data)`.
- `history-row-mismatch.<column>`: the current history row's `status` and
  `current_task_id` equal the snapshot row's.
- `blob-undecodable`: the current blob decodes (codec chosen by the blob's
  header: JSON or protobuf).
- `status-mismatch`: the `status` column is the decoded state's variant.
- `column-mismatch.<column>`: `instance_id`, `definition_hash`,
  `current_task_id` (set only for InProgress at a task; NULL when Paused and
  when terminal), `position_kind` (the position of InProgress and Paused;
  NULL when terminal), `completed_task_count` (the completed tasks of
  InProgress, Paused and Cancelled; 0 for Completed and Failed), `error`,
  `delay_wake_at`, `task_priority`, `task_tags`, and `completed_at` (set
  exactly when terminal) equal what the decoded snapshot gives, as
  `save_snapshot_args` derives them.
- `task-output-missing`: every completed task of the blob (InProgress,
  Paused, Cancelled) has a `completed` task row with a non-NULL output,
  unless its output is legitimately empty. Blobs are stored without outputs,
  and the writers store an empty output only for the snapshot's last
  completed task; so a task without such a row is a violation when some
  history version named it the last completed task (a writer then had to
  store its row), and is taken as legitimately empty otherwise.
- `orphan-history`, `orphan-tasks`, `orphan-signals`, `orphan-claims`: no
  child row (history, tasks, signals, claims) for an instance without a
  snapshot row. Events are exempt: `send_event` buffers events for
  instances that do not exist yet, as the engine does.

Deliberately not an invariant: a live claim on a terminal instance. A worker
saves its terminal snapshot (fenced by its claim) and only then releases the
claim, a cancel or a crash can leave the claim until it expires, and
`claim_task` refuses any instance that is not InProgress, so such a claim
blocks nothing. Pending signals on a terminal instance are likewise legal (a
cancel requested just before the workflow completed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg

from sayiir_common.codec import CODECS, CodecId, SnapshotCodec, unframe
from sayiir_common.errors import SerializationError
from sayiir_common.ids import TaskId
from sayiir_common.model import WorkflowSnapshot
from sayiir_grpc.stores import WORKFLOW_CHILD_TABLES

PAGE_SIZE = 500

# The snapshot rows of one page, each with its current history row and the
# summary of all its history versions.
SNAPSHOT_PAGE = """
SELECT s.instance_id, s.status, s.definition_hash, s.current_task_id, s.completed_task_count,
       s.error, s.position_kind, s.delay_wake_at, s.task_priority, s.task_tags,
       s.history_version, s.data_hash, s.data AS legacy_data, s.completed_at,
       h.found AS has_history, h.data, h.data_hash AS history_hash, h.sha AS history_sha,
       h.status AS history_status, h.current_task_id AS history_task,
       (SELECT max(version) FROM sayiir_workflow_snapshot_history m WHERE m.instance_id = s.instance_id)
           AS max_version
FROM sayiir_workflow_snapshots s
LEFT JOIN LATERAL (
    SELECT true AS found, data, data_hash, sha256(data) AS sha, status, current_task_id
    FROM sayiir_workflow_snapshot_history
    WHERE instance_id = s.instance_id AND version = s.history_version
    ORDER BY id
    LIMIT 1
) h ON true
WHERE ($1::text IS NULL OR s.instance_id > $1::text)
ORDER BY s.instance_id
LIMIT $2
"""

TASKS_OF = """
SELECT instance_id, task_id, status, output IS NOT NULL AS has_output
FROM sayiir_workflow_tasks
WHERE instance_id = ANY($1::text[])
"""

HISTORY_OF = "SELECT version, data FROM sayiir_workflow_snapshot_history WHERE instance_id = $1 ORDER BY version"

DUPLICATE_VERSIONS = """
SELECT instance_id, version, count(*) AS copies
FROM sayiir_workflow_snapshot_history
GROUP BY instance_id, version
HAVING count(*) > 1
ORDER BY instance_id, version
"""

BAD_HISTORY_HASHES = """
SELECT h.instance_id, h.version
FROM sayiir_workflow_snapshot_history h
WHERE h.data_hash IS NOT NULL AND h.data_hash <> sha256(h.data)
  -- The current version is reported by the per-snapshot check.
  AND NOT EXISTS (SELECT 1 FROM sayiir_workflow_snapshots s
                  WHERE s.instance_id = h.instance_id AND s.history_version = h.version)
ORDER BY h.instance_id, h.version
"""

# Events are the one child table allowed to run ahead of its instance.
ORPHAN_CHECKED = {
    "sayiir_workflow_snapshot_history": "orphan-history",
    "sayiir_workflow_tasks": "orphan-tasks",
    "sayiir_workflow_signals": "orphan-signals",
    "sayiir_workflow_claims": "orphan-claims",
}
assert set(ORPHAN_CHECKED) | {"sayiir_workflow_events"} == set(WORKFLOW_CHILD_TABLES)


def _orphans_sql(table: str) -> str:
    # Table names come from the constant above, never from input.
    return f"""
SELECT c.instance_id, count(*) AS n FROM {table} c
WHERE NOT EXISTS (SELECT 1 FROM sayiir_workflow_snapshots s WHERE s.instance_id = c.instance_id)
GROUP BY c.instance_id
ORDER BY c.instance_id
"""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant: its name, the instance, and what disagrees."""

    invariant: str
    instance_id: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant} {self.instance_id!r}: {self.detail}"


def decode_blob(blob: bytes) -> WorkflowSnapshot:
    """Decode a stored blob with the codec its header names; SerializationError otherwise."""
    codec_id, _ = unframe(blob)
    codecs: dict[CodecId, SnapshotCodec] = {c.codec_id: c for c in CODECS.values()}
    codec = codecs.get(codec_id)
    if codec is None:
        raise SerializationError(f"blob uses the {codec_id.label} codec, which this checker cannot decode")
    return codec.decode(blob)


def _hex(value: bytes | None) -> str:
    return "NULL" if value is None else bytes(value).hex()


def _show(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex() or "''"
    return repr(value)


def expected_columns(snapshot: WorkflowSnapshot) -> dict[str, object]:
    """The snapshot-row columns a save of `snapshot` writes (as `save_snapshot_args`)."""
    current = snapshot.current_task_id()
    wake_at = snapshot.delay_wake_at()
    return {
        "instance_id": snapshot.instance_id,
        "definition_hash": snapshot.definition_hash.as_bytes(),
        "current_task_id": None if current is None else current.as_bytes(),
        "position_kind": snapshot.position_kind(),
        "completed_task_count": snapshot.completed_task_count(),
        "error": snapshot.error_message(),
        "delay_wake_at": None if wake_at is None else wake_at.to_datetime(),
        "task_priority": snapshot.current_task_priority(),
        "task_tags": list(snapshot.task_tags),
    }


def _stored(row: Any, column: str) -> object:
    value = row[column]
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if column == "task_tags":
        return list(value or [])
    return value


class _Checker:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.violations: list[Violation] = []
        self.instances = 0

    def add(self, invariant: str, instance_id: str, detail: str) -> None:
        self.violations.append(Violation(invariant, instance_id, detail))

    async def run(self) -> None:
        after: str | None = None
        while True:
            rows = await self.conn.fetch(SNAPSHOT_PAGE, after, PAGE_SIZE)
            if not rows:
                break
            await self._page(rows)
            self.instances += len(rows)
            after = rows[-1]["instance_id"]
        for row in await self.conn.fetch(DUPLICATE_VERSIONS):
            self.add(
                "history-duplicate-version",
                row["instance_id"],
                f"version {row['version']} is stored {row['copies']} times",
            )
        for row in await self.conn.fetch(BAD_HISTORY_HASHES):
            detail = f"version {row['version']}: data_hash != sha256(data)"
            self.add("history-hash-mismatch", row["instance_id"], detail)
        for table, invariant in ORPHAN_CHECKED.items():
            for row in await self.conn.fetch(_orphans_sql(table)):
                self.add(invariant, row["instance_id"], f"{row['n']} row(s) in {table} but no snapshot row")

    async def _page(self, rows: list[Any]) -> None:
        tasks: dict[str, dict[bytes, tuple[str, bool]]] = {}
        for t in await self.conn.fetch(TASKS_OF, [r["instance_id"] for r in rows]):
            tasks.setdefault(t["instance_id"], {})[bytes(t["task_id"])] = (t["status"], t["has_output"])
        for row in rows:
            snapshot = self._check_row(row)
            if snapshot is not None:
                await self._check_tasks(row["instance_id"], snapshot, tasks.get(row["instance_id"], {}))

    def _check_row(self, row: Any) -> WorkflowSnapshot | None:
        """Pointer, hashes and columns of one snapshot row; its decoded blob if any."""
        iid: str = row["instance_id"]
        version = row["history_version"]
        if row["has_history"]:
            blob = bytes(row["data"])
            if not (row["data_hash"] == row["history_hash"] == row["history_sha"]):
                self.add(
                    "data-hash-mismatch",
                    iid,
                    f"row data_hash {_hex(row['data_hash'])}, history v{version} data_hash "
                    f"{_hex(row['history_hash'])}, sha256(data) {_hex(row['history_sha'])}",
                )
            for column, history_column in (("status", "history_status"), ("current_task_id", "history_task")):
                if _stored(row, column) != _stored(row, history_column):
                    self.add(
                        f"history-row-mismatch.{column}",
                        iid,
                        f"row has {_show(row[column])}, history v{version} has {_show(row[history_column])}",
                    )
        elif row["legacy_data"] is not None:
            # Written by an engine version that kept the blob in the row.
            blob = bytes(row["legacy_data"])
            if row["data_hash"] is not None and bytes(row["data_hash"]) != hashlib.sha256(blob).digest():
                self.add("data-hash-mismatch", iid, "row data_hash != sha256(row data)")
        else:
            self.add("history-missing", iid, f"no history row at history_version {version}")
            return None
        if row["max_version"] is not None and row["max_version"] > version:
            self.add("history-ahead", iid, f"history reaches v{row['max_version']}, row points at v{version}")
        try:
            snapshot = decode_blob(blob)
        except SerializationError as exc:
            self.add("blob-undecodable", iid, exc.message)
            return None
        if row["status"] != snapshot.state.kind:
            self.add("status-mismatch", iid, f"status column {row['status']!r}, blob state {snapshot.state.kind!r}")
        for column, expected in expected_columns(snapshot).items():
            stored = _stored(row, column)
            if stored != expected:
                self.add(f"column-mismatch.{column}", iid, f"row has {_show(stored)}, blob gives {_show(expected)}")
        terminal = snapshot.state.is_terminal()
        if (row["completed_at"] is not None) != terminal:
            self.add(
                "column-mismatch.completed_at",
                iid,
                f"completed_at is {_show(row['completed_at'])} on a {snapshot.state.kind} snapshot",
            )
        return snapshot

    async def _check_tasks(self, iid: str, snapshot: WorkflowSnapshot, rows: dict[bytes, tuple[str, bool]]) -> None:
        completed = snapshot.get_all_task_results() or {}
        missing: list[TaskId] = []
        for task_id, result in completed.items():
            status, has_output = rows.get(task_id.as_bytes(), ("absent", False))
            if status == "completed" and has_output:
                continue
            if result.output:
                continue  # a blob that still carries its output (engine rows of old)
            missing.append(task_id)
        if not missing:
            return
        was_last = await self._ever_last(iid)
        for task_id in missing:
            if task_id in was_last:
                status, _ = rows.get(task_id.as_bytes(), ("absent", False))
                self.add(
                    "task-output-missing",
                    iid,
                    f"task {task_id.to_hex()} is completed in the blob but its task row is {status} without an output",
                )

    async def _ever_last(self, iid: str) -> set[TaskId]:
        """Tasks some history version names as its last completed (and completed) task."""
        found: set[TaskId] = set()
        for row in await self.conn.fetch(HISTORY_OF, iid):
            try:
                snapshot = decode_blob(bytes(row["data"]))
            except SerializationError:
                continue
            last = snapshot.last_completed_task_id()
            if last is not None and snapshot.get_task_result(last) is not None:
                found.add(last)
        return found


@dataclass(frozen=True, slots=True)
class InvariantReport:
    """What a check looked at and what it found."""

    instances: int
    violations: list[Violation]


async def check_database(conn: asyncpg.Connection) -> InvariantReport:
    """Run every check in one consistent read (a REPEATABLE READ, read-only transaction)."""
    checker = _Checker(conn)
    if conn.is_in_transaction():
        await checker.run()
    else:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await checker.run()
    return InvariantReport(checker.instances, checker.violations)


async def check_invariants(conn: asyncpg.Connection) -> list[Violation]:
    """Every violation of the invariants above; empty when the database is consistent."""
    return (await check_database(conn)).violations

"""The store protocols, with the Rust trait and method names.

Anything that implements these (the gRPC client backend, or an in-process
store) can be handed to code written against Sayiir's traits.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sayiir_client.ids import TaskId
from sayiir_client.model import WorkflowSnapshot


@runtime_checkable
class SnapshotStore(Protocol):
    """Rust `sayiir_persistence::SnapshotStore`."""

    async def save_snapshot(self, snapshot: WorkflowSnapshot) -> None:
        """Insert or replace the current snapshot; a terminal one is never overwritten."""
        ...

    async def save_task_result(self, instance_id: str, task_id: TaskId, output: bytes) -> None:
        """Record one task's output atomically on the stored snapshot."""
        ...

    async def load_snapshot(self, instance_id: str) -> WorkflowSnapshot:
        """The current snapshot with its task outputs; raises NotFoundError."""
        ...

    async def delete_snapshot(self, instance_id: str) -> None:
        """Delete the instance everywhere; raises NotFoundError."""
        ...

    async def list_snapshots(self) -> list[str]:
        """Every instance id, in order."""
        ...

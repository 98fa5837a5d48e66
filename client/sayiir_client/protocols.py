"""The store protocols, with the Rust trait and method names.

Anything that implements these (the gRPC client backend, or an in-process
store) can be handed to code written against Sayiir's traits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol, runtime_checkable

from sayiir_common.ids import TaskId
from sayiir_common.model import (
    AvailableTask,
    ControlSignal,
    SignalKind,
    SignalRequest,
    TaskClaim,
    TaskWakeupHint,
    WorkflowSnapshot,
)


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


@runtime_checkable
class SignalStore(Protocol):
    """Rust `sayiir_persistence::SignalStore`."""

    async def store_signal(self, instance_id: str, kind: SignalKind, request: SignalRequest) -> None:
        """Record a cancel or pause request; CannotCancelError / CannotPauseError when finished."""
        ...

    async def get_signal(self, instance_id: str, kind: SignalKind) -> SignalRequest | None:
        """The pending request of that kind, if any."""
        ...

    async def clear_signal(self, instance_id: str, kind: SignalKind) -> None:
        """Drop the pending request of that kind."""
        ...

    async def send_event(self, instance_id: str, signal_name: str, payload: bytes) -> bool:
        """Resume a workflow parked at the signal, or buffer the event."""
        ...

    async def consume_event(self, instance_id: str, signal_name: str) -> bytes | None:
        """Take the oldest buffered event of that name."""
        ...

    async def check_and_cancel(self, instance_id: str, interrupted_at_task: TaskId | None = None) -> bool:
        """Apply a pending cancel atomically; True when applied."""
        ...

    async def check_and_pause(self, instance_id: str) -> bool:
        """Apply a pending pause atomically; True when applied."""
        ...

    async def check_control_signals(
        self, instance_id: str, interrupted_at_task: TaskId | None = None
    ) -> ControlSignal | None:
        """Cancel, else pause; what was applied."""
        ...

    async def unpause(self, instance_id: str) -> WorkflowSnapshot:
        """Resume a paused workflow; FailedPreconditionError when it is not paused."""
        ...


@runtime_checkable
class TaskClaimStore(Protocol):
    """Rust `sayiir_persistence::TaskClaimStore`."""

    async def claim_task(
        self, instance_id: str, task_id: TaskId, worker_id: str, ttl: timedelta | float | None = None
    ) -> TaskClaim | None:
        """Claim the current task; None when it is held or not current; NotFoundError for a missing instance."""
        ...

    async def release_task_claim(self, instance_id: str, task_id: TaskId, worker_id: str) -> None:
        """Release the claim; ClaimLostError when another worker or task holds it."""
        ...

    async def extend_task_claim(
        self, instance_id: str, task_id: TaskId, worker_id: str, ttl: timedelta | float
    ) -> None:
        """Set the expiry to now + ttl; ClaimLostError when another worker or task holds it."""
        ...

    async def find_available_tasks(
        self,
        worker_id: str,
        limit: int = 10,
        aging_interval: timedelta | float = ...,
        worker_tags: Sequence[str] = (),
    ) -> list[AvailableTask]:
        """Tasks ready for this worker, best first."""
        ...

    async def wait_for_wakeup(self, timeout: timedelta | float) -> TaskWakeupHint | None:
        """The next task-ready hint, or None after the timeout."""
        ...

    async def find_hinted_task(self, hint: TaskWakeupHint) -> AvailableTask | None:
        """The hinted task if it is still available."""
        ...

    async def save_snapshot_fenced(self, snapshot: WorkflowSnapshot, task_id: TaskId, worker_id: str) -> bool:
        """Save only while holding the live claim."""
        ...


@runtime_checkable
class TaskResultStore(Protocol):
    """Rust `sayiir_persistence::TaskResultStore`."""

    async def load_task_result(self, instance_id: str, task_id: TaskId) -> bytes | None:
        """A task's stored output, or None."""
        ...

"""Hypothesis strategies that build any valid WorkflowSnapshot."""

from __future__ import annotations

from hypothesis import strategies as st

from sayiir_common.ids import DefinitionHash, TaskId
from sayiir_common.model import (
    AtDelay,
    AtFork,
    AtJoin,
    AtSignal,
    AtTask,
    Cancelled,
    Completed,
    Duration,
    ExecutionPosition,
    Failed,
    InLoop,
    InProgress,
    NotStarted,
    Paused,
    RetryPolicy,
    TaskDeadline,
    TaskResult,
    TaskRetryState,
    Timestamp,
    WorkflowSnapshot,
    WorkflowSnapshotState,
)

task_ids = st.binary(min_size=32, max_size=32).map(TaskId)
optional_ids = st.none() | task_ids
# Any Unicode a PostgreSQL TEXT column holds: no NUL, no lone surrogates.
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
names = texts.filter(bool)
# The range both PostgreSQL and the engine represent, ends excluded (the
# service refuses the ends: PostgreSQL would store them as -infinity/+infinity).
timestamps = st.builds(
    Timestamp,
    st.integers(-62_135_596_799, 253_402_300_798),
    st.sampled_from([0, 1, 999, 1_000, 123_000, 1_000_000, 500_000_000, 999_999_999]) | st.integers(0, 999_999_999),
)
durations = st.builds(Duration, st.integers(0, 10**6), st.integers(0, 999_999_999))
outputs = st.binary(max_size=16)


@st.composite
def results(draw: st.DrawFn) -> dict[TaskId, TaskResult]:
    ids = draw(st.lists(task_ids, max_size=4, unique=True))
    return {tid: TaskResult(tid, draw(outputs)) for tid in ids}


branches = st.dictionaries(names, st.builds(TaskResult, task_ids, outputs), max_size=3)

positions: st.SearchStrategy[ExecutionPosition] = st.one_of(
    st.just(NotStarted()),
    st.builds(AtTask, task_ids),
    st.builds(AtFork, task_ids, branches, timestamps),
    st.builds(AtJoin, task_ids, branches),
    st.builds(AtDelay, task_ids, timestamps, timestamps, optional_ids),
    st.builds(AtSignal, task_ids, names, st.none() | timestamps, optional_ids),
    st.builds(InLoop, task_ids, st.integers(0, 2**32 - 1), optional_ids),
)

states: st.SearchStrategy[WorkflowSnapshotState] = st.one_of(
    st.builds(InProgress, positions, results(), optional_ids),
    st.builds(Completed, outputs),
    st.builds(Failed, texts),
    st.builds(Cancelled, st.none() | texts, st.none() | texts, timestamps, results(), optional_ids),
    st.builds(Paused, st.none() | texts, st.none() | texts, timestamps, results(), positions, optional_ids),
)

# Values an f32 holds exactly, so the model's float survives the f32 codecs.
f32_values = st.floats(width=32, allow_nan=False, allow_infinity=False)

policies = st.builds(RetryPolicy, st.integers(0, 2**32 - 1), durations, f32_values, st.none() | durations)
retry_states = st.builds(TaskRetryState, st.integers(0, 2**32 - 1), policies, texts, timestamps, st.none() | texts)


@st.composite
def snapshots(draw: st.DrawFn) -> WorkflowSnapshot:
    retries = draw(st.dictionaries(task_ids, retry_states, max_size=2))
    loops = draw(st.dictionaries(task_ids, st.integers(0, 2**32 - 1), max_size=2))
    return WorkflowSnapshot(
        instance_id=draw(names),
        definition_hash=DefinitionHash(draw(st.binary(min_size=32, max_size=32))),
        state=draw(states),
        created_at=draw(st.integers(0, 2**63 - 1)),
        updated_at=draw(st.integers(0, 2**63 - 1)),
        initial_input=draw(st.none() | outputs),
        task_deadline=draw(st.none() | st.builds(TaskDeadline, task_ids, timestamps, st.integers(0, 2**64 - 1))),
        task_retries=retries,
        loop_iterations=loops,
        task_priority=draw(st.none() | st.integers(1, 5)),
        task_tags=draw(st.lists(names, max_size=3)),
        trace_parent=None,
    )

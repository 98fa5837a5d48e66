// SnapshotStore scenarios, as tests/integration/test_snapshot_store.py.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  atTask,
  connect,
  finalOutput,
  getTaskResult,
  markCompleted,
  markFailed,
  newSnapshot,
  NotFoundError,
  taskId,
  unixNanos,
  updatePosition,
  type SayiirClient,
  type WorkflowSnapshot,
} from "../src/index.js";
import { seedAtTask, uniqueId } from "./support/fixtures.js";
import { sharedService } from "./support/service.js";

let service: Awaited<ReturnType<typeof sharedService>>;
let client: SayiirClient;
before(async () => {
  service = await sharedService();
  client = await connect(service.target);
});
after(async () => {
  client?.close();
  await service?.stop();
});

test("save and load a snapshot", async () => {
  const id = uniqueId("save-load");
  const saved = await seedAtTask(client, id, "charge-card", { taskPriority: 2, taskTags: ["gpu"], traceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" });
  const loaded = await client.loadSnapshot(id);
  assert.deepEqual(loaded, saved);
  assert.equal(loaded.state.kind === "InProgress" && loaded.state.position.kind === "AtTask" && loaded.state.position.taskId, taskId("charge-card"));
});

test("every position and state round-trips, nanoseconds included", async () => {
  const wake = new Date("2030-01-01T00:00:00.123Z");
  const positions: WorkflowSnapshot["state"][] = [
    { kind: "InProgress", position: { kind: "NotStarted" }, completedTasks: [], lastCompletedTaskId: null },
    {
      kind: "InProgress",
      position: { kind: "AtFork", forkId: taskId("fork"), completedBranches: [{ label: "left", result: { taskId: taskId("l"), output: Buffer.from("L") } }], wakeAt: wake },
      completedTasks: [{ taskId: taskId("first"), output: Buffer.from("1") }],
      lastCompletedTaskId: taskId("first"),
    },
    { kind: "InProgress", position: { kind: "AtJoin", joinId: taskId("join"), completedBranches: [] }, completedTasks: [], lastCompletedTaskId: null },
    { kind: "InProgress", position: { kind: "AtDelay", delayId: taskId("delay"), enteredAt: new Date("2029-12-31T00:00:00Z"), wakeAt: wake, nextTaskId: taskId("after") }, completedTasks: [], lastCompletedTaskId: null },
    { kind: "InProgress", position: { kind: "AtSignal", signalId: taskId("sig"), signalName: "go", wakeAt: null, nextTaskId: null }, completedTasks: [], lastCompletedTaskId: null },
    { kind: "InProgress", position: { kind: "InLoop", loopId: taskId("loop"), iteration: 3, nextTaskId: taskId("body") }, completedTasks: [], lastCompletedTaskId: null },
    { kind: "Failed", error: "boom" },
    { kind: "Paused", reason: "why", pausedBy: "ops", pausedAt: wake, completedTasks: [], position: atTask(taskId("t")), lastCompletedTaskId: null },
    { kind: "Cancelled", reason: null, cancelledBy: "ops", cancelledAt: wake, completedTasks: [{ taskId: taskId("t"), output: Buffer.from("x") }], interruptedAtTask: taskId("t") },
  ];
  for (const [i, state] of positions.entries()) {
    const id = uniqueId(`shape-${i}`);
    const snapshot: WorkflowSnapshot = {
      ...newSnapshot(id, "wf"),
      state,
      taskDeadline: { taskId: taskId("t"), deadline: wake, timeoutMs: 5000 },
      taskRetries: [
        {
          taskId: taskId("t"),
          attempts: 2,
          policy: { maxRetries: 3, initialDelayMs: 1500, backoffMultiplier: 2, maxDelayMs: 60_000 },
          lastError: "flaky",
          lastFailedWorker: "w1",
          nextRetryAt: wake,
        },
      ],
      loopIterations: [{ loopId: taskId("loop"), iteration: 3 }],
    };
    await client.saveSnapshot(snapshot);
    const loaded = await client.loadSnapshot(id);
    if (state.kind === "InProgress" || state.kind === "Paused") assert.deepEqual(loaded, snapshot, state.kind);
    else assert.deepEqual(loaded.state, snapshot.state, state.kind);
  }
  // Sub-millisecond precision written by another client survives a load/save cycle here.
  const id = uniqueId("nanos");
  const snapshot = await seedAtTask(client, id);
  updatePosition(snapshot, { kind: "AtDelay", delayId: taskId("d"), enteredAt: new Date(0), wakeAt: wake, nextTaskId: null });
  await client.saveSnapshot(snapshot);
  const first = await client.loadSnapshot(id);
  await client.saveSnapshot(first);
  const second = await client.loadSnapshot(id);
  const wakeOf = (s: WorkflowSnapshot) => (s.state.kind === "InProgress" && s.state.position.kind === "AtDelay" ? unixNanos(s.state.position.wakeAt) : -1n);
  assert.equal(wakeOf(second), wakeOf(first));
});

test("loading a missing instance is NotFoundError", async () => {
  await assert.rejects(client.loadSnapshot("nonexistent-instance"), NotFoundError);
});

test("a save overwrites, and a terminal snapshot is never overwritten", async () => {
  const id = uniqueId("overwrite");
  const snapshot = await seedAtTask(client, id, "one");
  updatePosition(snapshot, atTask(taskId("two")));
  assert.equal(await client.saveSnapshotWritten(snapshot), true);
  assert.deepEqual((await client.loadSnapshot(id)).state, snapshot.state);

  markCompleted(snapshot, '{"ok":true}');
  await client.saveSnapshot(snapshot);
  const resurrect = newSnapshot(id, "hash-1", { position: atTask(taskId("one")) });
  assert.equal(await client.saveSnapshotWritten(resurrect), false);
  const failed = newSnapshot(id, "hash-1");
  markFailed(failed, "late");
  assert.equal(await client.saveSnapshotWritten(failed), false);
  assert.equal(finalOutput(await client.loadSnapshot(id))?.toString(), '{"ok":true}');
});

test("delete removes the instance; a second delete is NotFoundError", async () => {
  const id = uniqueId("delete");
  await seedAtTask(client, id);
  await client.deleteSnapshot(id);
  await assert.rejects(client.loadSnapshot(id), NotFoundError);
  await assert.rejects(client.deleteSnapshot(id), NotFoundError);
});

test("list every id in order, by pages and by status", async () => {
  const prefix = uniqueId("list");
  const ids = Array.from({ length: 5 }, (_, i) => `${prefix}-${i}`);
  for (const id of ids) await seedAtTask(client, id);
  const done = newSnapshot(`${prefix}-9`, "hash-1");
  markCompleted(done);
  await client.saveSnapshot(done);

  const all = await client.listSnapshots();
  assert.deepEqual(all.filter((id) => id.startsWith(prefix)), [...ids, `${prefix}-9`]);
  const page = await client.listSnapshotsPage(`${prefix}-0`, 2);
  assert.deepEqual(page, { instanceIds: ids.slice(1, 3), nextAfter: ids[2] });
  const completed = await client.listSnapshotsPage(null, 1000, ["Completed"]);
  assert.ok(completed.instanceIds.includes(`${prefix}-9`));
  assert.ok(!completed.instanceIds.includes(ids[0]));
  const last = await client.listSnapshotsPage(`${prefix}-9`, 1000, ["Completed", "InProgress"]);
  assert.equal(last.nextAfter, null);
});

test("saveTaskResult records the output; loadTaskResult reads it", async () => {
  const id = uniqueId("task-result");
  await seedAtTask(client, id);
  await client.saveTaskResult(id, taskId("task-1"), Buffer.from([1, 2, 3]));
  const loaded = await client.loadSnapshot(id);
  assert.deepEqual(getTaskResult(loaded, taskId("task-1")), { taskId: taskId("task-1"), output: Buffer.from([1, 2, 3]) });
  assert.deepEqual(await client.loadTaskResult(id, taskId("task-1")), Buffer.from([1, 2, 3]));
  assert.equal(await client.loadTaskResult(id, taskId("unknown")), null);
  await assert.rejects(client.saveTaskResult("nonexistent-instance", taskId("t"), "x"), NotFoundError);
});

test("concurrent saveTaskResult calls lose no output", async () => {
  const id = uniqueId("concurrent");
  await seedAtTask(client, id);
  const names = Array.from({ length: 20 }, (_, i) => `step-${i}`);
  await Promise.all(names.map((name) => client.saveTaskResult(id, taskId(name), name)));
  const loaded = await client.loadSnapshot(id);
  for (const name of names) assert.equal(getTaskResult(loaded, taskId(name))?.output.toString(), name);
});

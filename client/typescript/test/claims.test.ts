// TaskClaimStore and TaskResultStore scenarios, as
// tests/integration/test_task_claim_store.py; each test starts from empty tables.

import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, beforeEach, test } from "node:test";
import {
  ClaimLostError,
  connect,
  currentTaskId,
  definitionHash,
  getTaskResult,
  newSnapshot,
  NotFoundError,
  taskId,
  type SayiirClient,
  type TaskWakeupHint,
} from "../src/index.js";
import { seedAt, seedAtTask } from "./support/fixtures.js";
import { freshService, query, truncate, type Service } from "./support/service.js";

const T1 = taskId("task-1");
let service: Service;
let client: SayiirClient;

before(async () => {
  service = await freshService();
});
beforeEach(async () => {
  client?.close();
  await truncate(service.databaseUrl);
  client = await connect(service.target, { watchWakeups: true });
});
after(async () => {
  client?.close();
  await service?.stop();
});

async function ids(options: { worker?: string; workerTags?: string[]; agingIntervalMs?: number } = {}): Promise<string[]> {
  const tasks = await client.findAvailableTasks(options.worker ?? "w1", { limit: 10, ...options });
  return tasks.map((task) => task.instanceId);
}

async function claimCount(where = "true"): Promise<number> {
  const rows = await query<{ n: string }>(service.databaseUrl, `SELECT count(*) AS n FROM sayiir_workflow_claims WHERE ${where}`);
  return Number(rows[0].n);
}

test("claim a task: granted with its expiry, then refused to another worker", async () => {
  await seedAtTask(client, "wf-1");
  const claim = await client.claimTask("wf-1", T1, "worker-1", { ttlMs: 300_000 });
  assert.ok(claim);
  assert.deepEqual([claim.instanceId, claim.taskId, claim.workerId], ["wf-1", T1, "worker-1"]);
  assert.ok(claim.expiresAt && claim.expiresAt.getTime() >= claim.claimedAt.getTime() + 299_000);
  assert.equal(await client.claimTask("wf-1", T1, "worker-2", { ttlMs: 300_000 }), null);
});

test("an expired claim is replaced; a claim without TTL never expires", async () => {
  await seedAtTask(client, "wf-1");
  assert.ok(await client.claimTask("wf-1", T1, "worker-1", { ttlMs: 300 }));
  await sleep(500);
  assert.equal((await client.claimTask("wf-1", T1, "worker-2", { ttlMs: 300_000 }))?.workerId, "worker-2");

  await seedAtTask(client, "eternal");
  const eternal = await client.claimTask("eternal", T1, "worker-1");
  assert.equal(eternal?.expiresAt, null);
  assert.equal(await client.claimTask("eternal", T1, "worker-2", { ttlMs: 300_000 }), null);
});

test("a claim of a missing instance is NotFoundError; of another task, null", async () => {
  await assert.rejects(client.claimTask("nope", T1, "worker-1", { ttlMs: 300_000 }), NotFoundError);
  await seedAtTask(client, "wf-1");
  assert.equal(await client.claimTask("wf-1", taskId("not-current"), "worker-1", { ttlMs: 300_000 }), null);
});

test("release, and ClaimLostError for another worker or task", async () => {
  await seedAtTask(client, "wf-1");
  assert.ok(await client.claimTask("wf-1", T1, "worker-1", { ttlMs: 300_000 }));
  await assert.rejects(client.releaseTaskClaim("wf-1", T1, "worker-2"), (error: unknown) => {
    assert.ok(error instanceof ClaimLostError);
    assert.equal(error.code, 10 /* ABORTED */);
    return true;
  });
  await assert.rejects(client.releaseTaskClaim("wf-1", taskId("other"), "worker-1"), ClaimLostError);
  await client.releaseTaskClaim("wf-1", T1, "worker-1");
  assert.ok(await client.claimTask("wf-1", T1, "worker-2", { ttlMs: 300_000 }));
});

test("extend sets the expiry from now; ClaimLostError for another worker", async () => {
  await seedAtTask(client, "wf-1");
  assert.ok(await client.claimTask("wf-1", T1, "worker-1", { ttlMs: 10_000 }));
  await client.extendTaskClaim("wf-1", T1, "worker-1", 3_600_000);
  const [row] = await query<{ remaining: number }>(
    service.databaseUrl,
    "SELECT extract(epoch FROM expires_at - now())::float8 AS remaining FROM sayiir_workflow_claims WHERE instance_id = 'wf-1'",
  );
  assert.ok(row.remaining > 3590 && row.remaining <= 3600, String(row.remaining));
  await assert.rejects(client.extendTaskClaim("wf-1", T1, "worker-2", 60_000), ClaimLostError);
});

test("thirty-two concurrent claimers, one winner", async () => {
  await seedAtTask(client, "wf-1");
  const claims = await Promise.all(Array.from({ length: 32 }, (_, i) => client.claimTask("wf-1", T1, `worker-${i}`, { ttlMs: 300_000 })));
  assert.equal(claims.filter(Boolean).length, 1);
});

test("findAvailableTasks: the ready task with its input and snapshot", async () => {
  await seedAtTask(client, "wf-1");
  const [task, ...rest] = await client.findAvailableTasks("worker-1");
  assert.deepEqual(rest, []);
  assert.deepEqual([task.instanceId, task.taskId, task.input?.toString()], ["wf-1", T1, '"input"']);
  assert.equal(task.workflowDefinitionHash, definitionHash("hash-1"));
  assert.equal(currentTaskId(task.snapshot), T1);
});

test("findAvailableTasks skips cancelled, paused, completed and claimed workflows", async () => {
  await seedAtTask(client, "wf-cancel");
  await client.storeSignal("wf-cancel", "Cancel");
  await seedAtTask(client, "wf-pause", "task-3");
  await client.storeSignal("wf-pause", "Pause");
  const done = newSnapshot("wf-done", "hash-1");
  done.state = { kind: "Completed", finalOutput: Buffer.from("x") };
  await client.saveSnapshot(done);
  await seedAtTask(client, "wf-claimed");
  assert.ok(await client.claimTask("wf-claimed", T1, "other", { ttlMs: 300_000 }));
  await seedAtTask(client, "wf-ready", "task-2");
  assert.deepEqual(await ids(), ["wf-ready"]);
  // The idle cancel and pause were applied by that dispatch.
  assert.equal((await client.loadSnapshot("wf-cancel")).state.kind, "Cancelled");
  assert.equal((await client.loadSnapshot("wf-pause")).state.kind, "Paused");
});

test("worker tags: a subset rule, untagged tasks for everyone", async () => {
  await seedAtTask(client, "wf-multi", "t1", { taskTags: ["gpu", "cuda"] });
  await seedAtTask(client, "wf-gpu", "t2", { taskTags: ["gpu"] });
  await seedAtTask(client, "wf-cpu", "t3", { taskTags: ["cpu"] });
  await seedAtTask(client, "wf-plain", "t4");
  assert.deepEqual((await ids({ workerTags: ["gpu"] })).sort(), ["wf-gpu", "wf-plain"]);
  assert.deepEqual((await ids({ workerTags: ["gpu", "cuda", "fast"] })).sort(), ["wf-gpu", "wf-multi", "wf-plain"]);
  assert.deepEqual((await ids()).sort(), ["wf-cpu", "wf-gpu", "wf-multi", "wf-plain"]);
  assert.deepEqual((await client.loadSnapshot("wf-multi")).taskTags, ["gpu", "cuda"]);
});

test("priority order, and aging lifts a task that waited", async () => {
  await seedAtTask(client, "minimal", "t1", { taskPriority: 5 });
  await seedAtTask(client, "critical", "t2", { taskPriority: 1 });
  await seedAtTask(client, "normal", "t3");
  assert.deepEqual(await ids(), ["critical", "normal", "minimal"]);
  await query(service.databaseUrl, "UPDATE sayiir_workflow_snapshots SET updated_at = now() - interval '10 minutes' WHERE instance_id = 'minimal'");
  assert.equal((await ids({ agingIntervalMs: 60_000 }))[0], "minimal");
});

test("due delays are advanced by dispatch", async () => {
  const past = new Date(Date.now() - 5000);
  const delayed = newSnapshot("delayed", "h", { initialInput: "in" });
  delayed.state = {
    kind: "InProgress",
    position: { kind: "AtDelay", delayId: taskId("d"), enteredAt: past, wakeAt: past, nextTaskId: taskId("after") },
    completedTasks: [{ taskId: taskId("before"), output: Buffer.from("carried") }],
    lastCompletedTaskId: taskId("before"),
  };
  await client.saveSnapshot(delayed);
  await seedAt(client, "still-sleeping", { kind: "AtDelay", delayId: taskId("d3"), enteredAt: past, wakeAt: new Date(Date.now() + 3_600_000), nextTaskId: taskId("x") });
  // The service's background sweep advances due delays too: while it holds
  // the row, the scan skips it (SKIP LOCKED), so look again for a moment.
  let tasks = await client.findAvailableTasks("w1");
  for (let tries = 0; tasks.length === 0 && tries < 20; tries++) {
    await sleep(100);
    tasks = await client.findAvailableTasks("w1");
  }
  assert.deepEqual(tasks.map((t) => [t.instanceId, t.taskId, t.input?.toString()]), [["delayed", taskId("after"), "carried"]]);
  const sleeping = (await client.loadSnapshot("still-sleeping")).state;
  assert.equal(sleeping.kind === "InProgress" && sleeping.position.kind, "AtDelay");
});

test("a fenced save needs the live claim", async () => {
  const snapshot = await seedAtTask(client, "wf-1");
  if (snapshot.state.kind === "InProgress") snapshot.state.completedTasks.push({ taskId: T1, output: Buffer.from("stale") });
  assert.equal(await client.saveSnapshotFenced(snapshot, T1, "worker-1"), false);
  assert.ok(await client.claimTask("wf-1", T1, "worker-1", { ttlMs: 300 }));
  await sleep(500);
  assert.ok(await client.claimTask("wf-1", T1, "worker-2", { ttlMs: 300_000 }));
  assert.equal(await client.saveSnapshotFenced(snapshot, T1, "worker-1"), false);
  assert.equal(getTaskResult(await client.loadSnapshot("wf-1"), T1), undefined);
  assert.equal(await client.saveSnapshotFenced(snapshot, T1, "worker-2"), true);
  assert.equal((await client.loadTaskResult("wf-1", T1))?.toString(), "stale");
});

test("waitForWakeup returns the hint of a save, or null after the timeout", async () => {
  let started = Date.now();
  assert.equal(await client.waitForWakeup(300), null);
  assert.ok(Date.now() - started >= 280);

  started = Date.now();
  const producer = sleep(150).then(() => seedAtTask(client, "wf-hinted", "task-a", { taskTags: ["gpu"] }));
  const hint = await client.waitForWakeup(5000);
  await producer;
  assert.ok(Date.now() - started < 2000);
  assert.deepEqual(hint, { instanceId: "wf-hinted", taskId: taskId("task-a"), definitionHash: definitionHash("hash-1"), tags: ["gpu"] });
});

test("a hint committed before the wait is not missed; collected hints can be dropped", async () => {
  await seedAtTask(client, "early");
  assert.equal((await client.waitForWakeup(2000))?.instanceId, "early");
  await seedAtTask(client, "hint-a");
  await seedAtTask(client, "hint-b", "t2");
  await sleep(500);
  assert.equal(client.dropWakeups(), 2);
  assert.equal(await client.waitForWakeup(200), null);
});

test("watchWakeups filters by worker tags", async () => {
  const stream = client.watchWakeups(["gpu"]);
  const first = stream.next();
  await sleep(300);
  await seedAtTask(client, "cpu-task", "t1", { taskTags: ["cpu"] });
  await seedAtTask(client, "gpu-task", "t2", { taskTags: ["gpu"] });
  const { value } = await first;
  assert.equal((value as TaskWakeupHint).instanceId, "gpu-task");
  await stream.return(undefined);
});

test("findHintedTask: available, stale, claimed, paused", async () => {
  await seedAtTask(client, "wf-h");
  const hint: TaskWakeupHint = { instanceId: "wf-h", taskId: T1, definitionHash: definitionHash("hash-1"), tags: [] };
  assert.equal((await client.findHintedTask(hint))?.input?.toString(), '"input"');
  assert.equal(await client.findHintedTask({ ...hint, taskId: taskId("old-step") }), null);
  assert.ok(await client.claimTask("wf-h", T1, "w1", { ttlMs: 300_000 }));
  assert.equal(await client.findHintedTask(hint), null);
  await client.releaseTaskClaim("wf-h", T1, "w1");
  await client.storeSignal("wf-h", "Pause");
  assert.equal(await client.findHintedTask(hint), null);
});

test("fast path: claimAvailableTasks claims what it returns; completeTask advances, completes, releases", async () => {
  await seedAtTask(client, "fast-1");
  await seedAtTask(client, "fast-gpu", "t2", { taskTags: ["gpu"] });
  const tasks = await client.claimAvailableTasks("w1", { ttlMs: 30_000 });
  assert.deepEqual(tasks.map((t) => t.instanceId).sort(), ["fast-1", "fast-gpu"]);
  assert.equal(await client.claimTask("fast-1", T1, "w2", { ttlMs: 30_000 }), null);
  assert.deepEqual(await client.claimAvailableTasks("w2"), []);

  const t2 = taskId("task-2");
  assert.equal(await client.completeTask("fast-1", T1, "w1", '"one"', { nextTaskId: t2, nextTaskPriority: 2, nextTaskTags: ["x"] }), true);
  const loaded = await client.loadSnapshot("fast-1");
  assert.equal(currentTaskId(loaded), t2);
  assert.deepEqual([loaded.taskPriority, loaded.taskTags], [2, ["x"]]);
  assert.equal(await claimCount("instance_id = 'fast-1'"), 0);
  const [following] = await client.claimAvailableTasks("w2", { limit: 1, workerTags: ["x"] });
  assert.deepEqual([following.taskId, following.input?.toString()], [t2, '"one"']);
  assert.equal(await client.completeTask("fast-1", t2, "w2", '"two"', { finalOutput: '"done"' }), true);
  const state = (await client.loadSnapshot("fast-1")).state;
  assert.equal(state.kind === "Completed" && state.finalOutput.toString(), '"done"');
});

test("completeTask refuses a lost claim and writes nothing", async () => {
  await seedAtTask(client, "fast-3");
  assert.ok(await client.claimTask("fast-3", T1, "owner", { ttlMs: 300 }));
  await sleep(500);
  assert.ok(await client.claimTask("fast-3", T1, "new-owner", { ttlMs: 30_000 }));
  assert.equal(await client.completeTask("fast-3", T1, "owner", "stale"), false);
  assert.equal(await client.loadTaskResult("fast-3", T1), null);
});

// The fast path's long poll and "continue where you are" (issue 14), against
// a real service: claimAvailableTasks({ waitMs }) and completeTask({ claimNextTtlMs }).

import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, beforeEach, test } from "node:test";
import { connect, taskId, type SayiirClient } from "../src/index.js";
import { seedAtTask } from "./support/fixtures.js";
import { freshService, query, truncate, type Service } from "./support/service.js";

const T1 = taskId("task-1");
const T2 = taskId("task-2");
let service: Service;
let client: SayiirClient;

before(async () => {
  service = await freshService();
});
beforeEach(async () => {
  client?.close();
  await truncate(service.databaseUrl);
  client = await connect(service.target);
});
after(async () => {
  client?.close();
  await service?.stop();
});

async function claimsOf(instanceId: string): Promise<{ worker_id: string; task_id: string }[]> {
  return query(
    service.databaseUrl,
    `SELECT worker_id, encode(task_id, 'hex') AS task_id FROM sayiir_workflow_claims WHERE instance_id = '${instanceId}'`,
  );
}

test("long poll: returns as soon as a task submitted after the call started is ready", async () => {
  const started = Date.now();
  const polling = client.claimTasks("w1", { waitMs: 20_000, ttlMs: 60_000 });
  await sleep(500);
  await seedAtTask(client, "late-1");
  const tasks = await polling;
  const elapsed = Date.now() - started;
  assert.equal(tasks.length, 1);
  const [task] = tasks;
  assert.deepEqual([task.instanceId, task.taskId, task.input?.toString()], ["late-1", T1, '"input"']);
  assert.equal(typeof task.version, "number");
  assert.ok(task.version >= 1, `version ${task.version}`);
  assert.equal("snapshot" in task, false);
  assert.ok(elapsed >= 450 && elapsed < 10_000, `answered after ${elapsed} ms`);
  assert.deepEqual(await claimsOf("late-1"), [{ worker_id: "w1", task_id: T1 }]);
});

test("long poll: an empty list after the wait when no task comes", async () => {
  const started = Date.now();
  assert.deepEqual(await client.claimAvailableTasks("w1", { waitMs: 800 }), []);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 700 && elapsed < 10_000, `answered after ${elapsed} ms`);
});

test("long poll: the client's deadline is lengthened by the wait", async () => {
  // Unlengthened, the 1 s deadline would cut the server's wait short; the
  // second left after the wait is room for a loaded machine's final claim.
  const short = await connect(service.target, { timeoutMs: 1_000 });
  try {
    const started = Date.now();
    assert.deepEqual(await short.claimAvailableTasks("w1", { waitMs: 2_500, omitSnapshot: true }), []);
    assert.ok(Date.now() - started >= 2_000);
  } finally {
    short.close();
  }
});

test("claimAvailableTasks keeps the snapshot unless omitSnapshot, and carries the version", async () => {
  await seedAtTask(client, "full-1");
  const [task] = await client.claimAvailableTasks("w1", { waitMs: 5_000 });
  assert.equal(task.snapshot.instanceId, "full-1");
  assert.ok(task.version >= 1);
  await assert.rejects(client.claimAvailableTasks("w1", { waitMs: -1 }), /waitMs/);
  await assert.rejects(client.claimAvailableTasks("w1", { waitMs: 301_000 }), /wait/);
});

test("completeTask with claimNextTtlMs hands the next task to the same worker", async () => {
  await seedAtTask(client, "cont-1");
  const [first] = await client.claimTasks("w1");
  const result = await client.completeTask("cont-1", first.taskId, "w1", '"one"', {
    nextTaskId: T2,
    claimNextTtlMs: 60_000,
  });
  assert.equal(result.completed, true);
  assert.ok(result.next, "the next task is handed over");
  assert.deepEqual([result.next.instanceId, result.next.taskId, result.next.input?.toString()], ["cont-1", T2, '"one"']);
  assert.ok(result.next.version > first.version);
  // Claimed for w1 in the same transaction: nobody else gets it.
  assert.deepEqual(await claimsOf("cont-1"), [{ worker_id: "w1", task_id: T2 }]);
  assert.deepEqual(await client.claimTasks("w2"), []);
  assert.equal(await client.completeTask("cont-1", T2, "w1", '"two"'), true);
  assert.deepEqual(await claimsOf("cont-1"), []);
  assert.equal((await client.loadSnapshot("cont-1")).state.kind, "Completed");
});

test("completeTaskAndContinue: a lost claim writes nothing and hands nothing over", async () => {
  await seedAtTask(client, "cont-2");
  assert.deepEqual(await client.completeTaskAndContinue("cont-2", T1, "nobody", '"one"', T2, 30_000), {
    completed: false,
    next: null,
  });
  assert.equal((await client.loadSnapshot("cont-2")).state.kind, "InProgress");
  await assert.rejects(
    client.completeTask("cont-2", T1, "w1", '"one"', { claimNextTtlMs: 30_000 } as never),
    /claim_next_ttl/,
  );
});

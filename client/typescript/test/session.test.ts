// WorkerSession against a real service, as tests/integration/test_worker_session.py:
// a workflow run on a session, many requests in flight on one stream, and
// error replies as the unary calls' error classes.

import assert from "node:assert/strict";
import { after, before, beforeEach, test } from "node:test";
import {
  connect,
  InvalidArgumentError,
  NotFoundError,
  taskId,
  type ClaimedTask,
  type SayiirClient,
  type WorkerSession,
} from "../src/index.js";
import { seedAtTask } from "./support/fixtures.js";
import { freshService, query, truncate, type Service } from "./support/service.js";

const STEPS = ["task-1", "task-2", "task-3"].map((name) => taskId(name));
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

/** Complete `task` (the first step) and the next two, continuing on the session; the final output. */
async function runToTheEnd(session: WorkerSession, worker: string, task: ClaimedTask): Promise<void> {
  let current: ClaimedTask = task;
  for (let step = 0; step < STEPS.length - 1; step++) {
    assert.equal(current.taskId, STEPS[step]);
    const result = await session.completeTaskAndContinue(current.instanceId, current.taskId, worker, `${step + 1}`, STEPS[step + 1]);
    assert.equal(result.completed, true);
    assert.ok(result.next, `step ${step + 2} of ${current.instanceId} handed over`);
    current = result.next;
  }
  assert.equal(await session.completeTask(current.instanceId, current.taskId, worker, "3"), true);
}

test("a workflow runs to its end on a session: claim, continue twice, complete", async () => {
  await seedAtTask(client, "one");
  const session = client.workerSession();
  const [task, ...others] = await session.claimTasks("w1", { limit: 5, waitMs: 2_000 });
  assert.deepEqual(others, []);
  assert.deepEqual([task.instanceId, task.taskId, task.input?.toString()], ["one", STEPS[0], '"input"']);
  await runToTheEnd(session, "w1", task);
  await session.close();

  const state = (await client.loadSnapshot("one")).state;
  assert.equal(state.kind === "Completed" && state.finalOutput.toString(), "3");
  assert.equal((await client.loadTaskResult("one", STEPS[1]))?.toString(), "2");
  const claims = await query<{ n: string }>(service.databaseUrl, "SELECT count(*) AS n FROM sayiir_workflow_claims");
  assert.equal(claims[0].n, "0");
});

test("many requests in flight at once on one session are each answered", async () => {
  const names = Array.from({ length: 24 }, (_, i) => `many-${i}`);
  for (const name of names) await seedAtTask(client, name);
  const session = client.workerSession();
  const claimed = await session.claimAvailableTasks("w1", { limit: 100, omitSnapshot: true });
  assert.deepEqual(claimed.map((t) => t.instanceId).sort(), [...names].sort());
  // Every workflow advances at once on the one stream, with polls that find
  // nothing in between; replies come back in any order.
  const polls = Array.from({ length: 8 }, () => session.claimTasks("w1", { workerTags: ["nobody-has-this"] }));
  await Promise.all([...claimed.map((task) => runToTheEnd(session, "w1", task)), ...polls]);
  for (const poll of polls) assert.deepEqual(await poll, []);
  await session.close();
  for (const name of names) assert.equal((await client.loadSnapshot(name)).state.kind, "Completed");
});

test("an error reply is the unary call's error class, and the session goes on", async () => {
  await seedAtTask(client, "after-errors");
  const session = client.workerSession();
  await assert.rejects(session.completeTask("no-such-instance", STEPS[0], "w1", "x"), NotFoundError);
  await assert.rejects(session.claimTasks("", { limit: 1 }), (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError, String(error));
    assert.equal(error.info.field, "worker_id");
    assert.equal(error.kind, "InvalidArgument");
    return true;
  });
  // The claim is not held: false, as the unary call answers.
  assert.equal(await session.completeTask("after-errors", STEPS[0], "somebody-else", "x"), false);
  const [task] = await session.claimTasks("w1", { limit: 1 });
  assert.equal(task.instanceId, "after-errors");
  await session.close();
  await assert.rejects(session.claimTasks("w1"), /closed/, "a closed session takes no more requests");
});

test("the same errors as the unary calls, for the same requests", async () => {
  const session = client.workerSession();
  const unary = await client.completeTask("missing", STEPS[0], "w1", "x").catch((error: unknown) => error);
  const streamed = await session.completeTask("missing", STEPS[0], "w1", "x").catch((error: unknown) => error);
  assert.ok(unary instanceof NotFoundError && streamed instanceof NotFoundError);
  assert.deepEqual([streamed.code, streamed.kind, streamed.info, streamed.message], [unary.code, unary.kind, unary.info, unary.message]);
  session.cancel();
});

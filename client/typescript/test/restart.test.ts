// A client outlives a restart of the service: safe calls retry onto the new
// process, the wakeup stream is reopened by the next waitForWakeup, and a
// worker session repeats its requests on a new stream.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connect, taskId, UnavailableError, type SayiirClient } from "../src/index.js";
import { seedAtTask, uniqueId } from "./support/fixtures.js";
import { createDatabase, dropDatabase, startService, type Service } from "./support/service.js";

let databaseUrl: string;
let service: Service | undefined;
let client: SayiirClient | undefined;
before(async () => {
  databaseUrl = await createDatabase();
});
after(async () => {
  client?.close();
  await service?.stop();
  if (databaseUrl) await dropDatabase(databaseUrl);
});

test("calls and wakeups resume after the service restarts on the same address", async () => {
  service = await startService(databaseUrl);
  const target = service.target;
  client = await connect(target, { watchWakeups: true, retryDelaysMs: [100, 200, 400, 800, 1600, 3200] });
  const before = uniqueId("before");
  await seedAtTask(client, before);
  assert.equal((await client.waitForWakeup(5000))?.instanceId, before);

  await service.stop();
  await assert.rejects(client.sendEvent(before, "x", "y"), UnavailableError, "never retried: fails at once");
  service = await startService(databaseUrl, "--listen", target);

  // A safe call is retried until the new process answers.
  assert.equal((await client.loadSnapshot(before)).instanceId, before);
  // The stream ended with the old process; a wait reopens it, and hints flow again.
  const after = uniqueId("after");
  let hint = null;
  for (let attempt = 0; attempt < 10 && !hint?.instanceId.startsWith(after); attempt++) {
    await seedAtTask(client, `${after}-${attempt}`);
    hint = await client.waitForWakeup(2000);
  }
  assert.ok(hint?.instanceId.startsWith(after), `a hint after the restart, got ${JSON.stringify(hint)}`);
});

test("a worker session carries on after the service restarts on the same address", async () => {
  service ??= await startService(databaseUrl);
  const target = service.target;
  const worker = await connect(target, { retryDelaysMs: [100, 200, 400, 800, 1600, 3200, 6400] });
  try {
    const session = worker.workerSession();
    const instance = uniqueId("session");
    await seedAtTask(worker, instance);
    // The other test's workflows may be claimed with it: they are left alone.
    const task = (await session.claimTasks("w1", { limit: 100, ttlMs: 300_000 })).find((t) => t.instanceId === instance);
    assert.ok(task);

    await service.stop();
    // Sent while nothing listens: repeated, with its request id, until the new process answers.
    const completing = session.completeTaskAndContinue(instance, task.taskId, "w1", "1", taskId("task-2"));
    service = await startService(databaseUrl, "--listen", target);
    const result = await completing;
    assert.equal(result.completed, true);
    assert.equal(result.next?.taskId, taskId("task-2"));
    assert.equal(await session.completeTask(instance, taskId("task-2"), "w1", "2"), true);
    await session.close();
    assert.equal((await worker.loadSnapshot(instance)).state.kind, "Completed");
  } finally {
    worker.close();
  }
});

// A client outlives a restart of the service: safe calls retry onto the new
// process, and the wakeup stream is reopened by the next waitForWakeup.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connect, UnavailableError, type SayiirClient } from "../src/index.js";
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

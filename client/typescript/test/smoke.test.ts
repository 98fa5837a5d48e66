import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { atTask, connect, newSnapshot, taskId, type SayiirClient } from "../src/index.js";
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

test("smoke", async () => {
  await client.saveSnapshot(newSnapshot("smoke-1", "wf", { position: atTask(taskId("a")), initialInput: "3" }));
  const loaded = await client.loadSnapshot("smoke-1");
  console.log(loaded);
  assert.equal(loaded.instanceId, "smoke-1");
});

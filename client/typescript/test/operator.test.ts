// The WorkflowOperator service through OperatorClient, against a real service.

import assert from "node:assert/strict";
import { after, before, beforeEach, test } from "node:test";
import {
  connect,
  connectOperator,
  markFailed,
  newSnapshot,
  NotFoundError,
  taskId,
  type OperatorClient,
  type SayiirClient,
} from "../src/index.js";
import { seedAtTask, seedCompleted, seedHeldAtTask } from "./support/fixtures.js";
import { freshService, truncate, type Service } from "./support/service.js";

let service: Service;
let client: SayiirClient;
let ops: OperatorClient;
before(async () => {
  service = await freshService();
  client = await connect(service.target);
  ops = await connectOperator(service.target);
});
beforeEach(async () => {
  await truncate(service.databaseUrl);
});
after(async () => {
  client?.close();
  ops?.close();
  await service?.stop();
});

async function seedFleet(): Promise<void> {
  await seedAtTask(client, "op-a");
  await seedAtTask(client, "op-b", "task-2", { taskTags: ["gpu"] });
  await seedAtTask(client, "op-c");
  await seedCompleted(client, "op-d");
  const failed = newSnapshot("op-e", "hash-1");
  markFailed(failed, "boom at step 3");
  await client.saveSnapshot(failed);
}

test("list and page through workflows by filter", async () => {
  await seedFleet();
  const failed = await ops.listWorkflows({ statuses: ["Failed"] });
  assert.deepEqual(failed.workflows.map((w) => [w.instanceId, w.status, w.error]), [["op-e", "Failed", "boom at step 3"]]);
  assert.equal(failed.nextAfter, null);
  const gpu = await ops.listWorkflows({ tag: "gpu" });
  assert.deepEqual(gpu.workflows.map((w) => [w.instanceId, w.currentTaskId, w.positionKind]), [["op-b", taskId("task-2"), "AtTask"]]);
  const all = [];
  for await (const workflow of ops.iterWorkflows({}, 2)) all.push(workflow.instanceId);
  assert.deepEqual(all, ["op-a", "op-b", "op-c", "op-d", "op-e"]);
  assert.deepEqual((await ops.listWorkflows({ errorContains: "BOOM" })).workflows.map((w) => w.instanceId), ["op-e"]);
});

test("describe a workflow, its history and one version", async () => {
  await seedHeldAtTask(client, "op-x");
  await client.saveTaskResult("op-x", taskId("task-1"), "12345");
  await client.storeSignal("op-x", "Pause", { reason: "later", requestedBy: "ops" });
  await client.sendEvent("op-x", "go", "1");
  await client.sendEvent("op-x", "go", "2");
  const description = await ops.describeWorkflow("op-x");
  assert.equal(description.summary.status, "InProgress");
  assert.deepEqual(description.pendingSignals.map((s) => [s.kind, s.reason, s.requestedBy]), [["Pause", "later", "ops"]]);
  assert.deepEqual(description.bufferedEvents, [{ signalName: "go", count: 2 }]);
  assert.deepEqual(description.completedTasks.map((t) => [t.taskId, t.outputBytes]), [[taskId("task-1"), 5]]);
  assert.ok(description.historyVersions >= 2);
  const history = await ops.workflowHistory("op-x", { limit: 1 });
  assert.equal(history.versions[0].version, 1);
  assert.equal(history.nextAfterVersion, 1);
  const { entry, snapshot } = await ops.workflowVersion("op-x", 1);
  assert.equal(entry.status, "InProgress");
  assert.equal(snapshot.instanceId, "op-x");
  await assert.rejects(ops.describeWorkflow("no-such"), NotFoundError);
});

test("actions by filter and by id: dry run, event, pause, unpause, cancel, delete", async () => {
  await seedFleet();
  const event = await ops.sendEvent(["op-a"], "ping", "x");
  assert.equal(event.applied, 1);
  assert.equal((await client.consumeEvent("op-a", "ping"))?.toString(), "x");

  const paused = await ops.pause(["op-c"], { reason: "hold" });
  assert.equal(paused.applied, 1);
  assert.equal((await client.loadSnapshot("op-c")).state.kind, "Paused");
  assert.equal((await ops.unpause(["op-c"])).applied, 1);
  assert.equal((await client.loadSnapshot("op-c")).state.kind, "InProgress");

  const dry = await ops.cancel({ statuses: ["InProgress"] }, { dryRun: true });
  assert.deepEqual([dry.matched, dry.applied], [3, 0]);
  const cancelled = await ops.cancel({ statuses: ["InProgress"] }, { reason: "drain", requestedBy: "ops" });
  assert.equal(cancelled.applied, 3);
  const state = (await client.loadSnapshot("op-a")).state;
  assert.equal(state.kind === "Cancelled" && state.reason, "drain");
  assert.equal((await ops.cancel(["op-d"])).skipped, 1, "a completed workflow is left alone");

  const deleted = await ops.delete(["op-d", "no-such"]);
  assert.deepEqual([deleted.applied, deleted.notFound], [1, 1]);
  await assert.rejects(client.loadSnapshot("op-d"), NotFoundError);
});

test("list and force-release claims", async () => {
  await seedAtTask(client, "op-claimed");
  assert.ok(await client.claimTask("op-claimed", taskId("task-1"), "worker-9", { ttlMs: 60_000 }));
  const { claims } = await ops.listClaims({ workerId: "worker-9" });
  assert.deepEqual(claims.map((c) => [c.instanceId, c.workerId, c.expired]), [["op-claimed", "worker-9", false]]);
  const released = await ops.releaseClaim("op-claimed");
  assert.equal(released.workerId, "worker-9");
  await assert.rejects(ops.releaseClaim("op-claimed"), NotFoundError);
  assert.ok(await client.claimTask("op-claimed", taskId("task-1"), "worker-1", { ttlMs: 60_000 }));
});

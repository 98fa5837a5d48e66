// SignalStore scenarios, as tests/integration/test_signal_store.py.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  atTask,
  CannotCancelError,
  CannotPauseError,
  connect,
  FailedPreconditionError,
  getTaskResult,
  NotFoundError,
  taskId,
  type SayiirClient,
} from "../src/index.js";
import { seedAtSignal, seedCompleted, seedHeldAtTask, uniqueId } from "./support/fixtures.js";
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

test("store and get a cancel signal", async () => {
  const id = uniqueId("store-get");
  await seedHeldAtTask(client, id);
  const before = Date.now();
  await client.storeSignal(id, "Cancel", { reason: "customer asked", requestedBy: "support" });
  const pending = await client.getSignal(id, "Cancel");
  assert.equal(pending?.reason, "customer asked");
  assert.equal(pending?.requestedBy, "support");
  assert.ok(pending?.requestedAt instanceof Date && pending.requestedAt.getTime() >= before - 5000);
  assert.equal(await client.getSignal(id, "Pause"), null);
});

test("a signal to a missing instance is NotFoundError", async () => {
  await assert.rejects(client.storeSignal("nonexistent-instance", "Cancel"), NotFoundError);
});

test("cancel and pause of a finished workflow are refused with their variants", async () => {
  const id = uniqueId("finished");
  await seedCompleted(client, id);
  await assert.rejects(client.storeSignal(id, "Cancel"), (error: unknown) => {
    assert.ok(error instanceof CannotCancelError && error instanceof FailedPreconditionError);
    assert.equal(error.kind, "CannotCancel");
    return true;
  });
  await assert.rejects(client.storeSignal(id, "Pause"), CannotPauseError);
});

test("clear a signal; the same kind stored again replaces it", async () => {
  const id = uniqueId("clear");
  await seedHeldAtTask(client, id);
  await client.storeSignal(id, "Pause", { reason: "first" });
  await client.storeSignal(id, "Pause", { reason: "second", requestedBy: "ops" });
  assert.equal((await client.getSignal(id, "Pause"))?.reason, "second");
  await client.clearSignal(id, "Pause");
  assert.equal(await client.getSignal(id, "Pause"), null);
  await client.clearSignal(id, "Pause"); // no error when there is none
});

test("checkAndCancel applies a pending cancel once, keeping the task results", async () => {
  const id = uniqueId("cancel");
  await seedHeldAtTask(client, id);
  await client.saveTaskResult(id, taskId("task-1"), "partial");
  assert.equal(await client.checkAndCancel(id), false, "nothing pending");
  await client.storeSignal(id, "Cancel", { reason: "stop", requestedBy: "ops" });
  const results = await Promise.all(Array.from({ length: 10 }, () => client.checkAndCancel(id, taskId("task-1"))));
  assert.equal(results.filter(Boolean).length, 1, "ten callers, one cancel");
  const state = (await client.loadSnapshot(id)).state;
  assert.equal(state.kind, "Cancelled");
  if (state.kind !== "Cancelled") return;
  assert.equal(state.reason, "stop");
  assert.equal(state.cancelledBy, "ops");
  assert.equal(state.interruptedAtTask, taskId("task-1"));
  assert.equal(state.completedTasks[0]?.output.toString(), "partial");
  assert.equal(await client.getSignal(id, "Cancel"), null);
});

test("checkAndPause, then unpause resumes where it stopped", async () => {
  const id = uniqueId("pause");
  await seedHeldAtTask(client, id, "resume-here");
  assert.equal(await client.checkAndPause(id), false);
  await client.storeSignal(id, "Pause", { reason: "maintenance" });
  assert.equal(await client.checkAndPause(id), true);
  const paused = (await client.loadSnapshot(id)).state;
  assert.equal(paused.kind === "Paused" && paused.reason, "maintenance");
  const resumed = await client.unpause(id);
  assert.deepEqual(resumed.state, { kind: "InProgress", position: atTask(taskId("resume-here")), completedTasks: [], lastCompletedTaskId: null });
});

test("unpause of a running workflow names its state", async () => {
  const id = uniqueId("unpause-running");
  await seedHeldAtTask(client, id);
  await assert.rejects(client.unpause(id), (error: unknown) => {
    assert.ok(error instanceof FailedPreconditionError);
    assert.match(error.message, /InProgress/);
    return true;
  });
  await assert.rejects(client.unpause("nonexistent-instance"), NotFoundError);
});

test("sendEvent resumes a workflow parked at the signal", async () => {
  const id = uniqueId("resume");
  const signalId = await seedAtSignal(client, id, "go", "after-signal");
  assert.equal(await client.sendEvent(id, "go", "payload"), true);
  const loaded = await client.loadSnapshot(id);
  assert.equal(loaded.state.kind === "InProgress" && loaded.state.position.kind === "AtTask" && loaded.state.position.taskId, taskId("after-signal"));
  assert.equal(getTaskResult(loaded, signalId)?.output.toString(), "payload");
  assert.equal(await client.consumeEvent(id, "go"), null, "consumed by the resume, not buffered");
});

test("a terminal signal completes the workflow with the payload", async () => {
  const id = uniqueId("terminal-signal");
  await seedAtSignal(client, id, "done", null);
  assert.equal(await client.sendEvent(id, "done", "final"), true);
  const state = (await client.loadSnapshot(id)).state;
  assert.equal(state.kind === "Completed" && state.finalOutput.toString(), "final");
});

test("events are buffered in order when nobody waits, for missing and finished instances too", async () => {
  const id = uniqueId("buffer");
  await seedHeldAtTask(client, id);
  assert.equal(await client.sendEvent(id, "go", "early"), false);
  assert.equal((await client.consumeEvent(id, "go"))?.toString(), "early");

  const missing = uniqueId("missing");
  for (const i of [0, 1, 2]) await client.sendEvent(missing, "ping", `m${i}`);
  const done = uniqueId("done");
  await seedCompleted(client, done);
  await client.sendEvent(done, "ping", "late");
  const taken = [];
  for (let i = 0; i < 4; i++) taken.push((await client.consumeEvent(missing, "ping"))?.toString() ?? null);
  assert.deepEqual(taken, ["m0", "m1", "m2", null]);
  assert.equal((await client.consumeEvent(done, "ping"))?.toString(), "late");
});

test("concurrent consumers take each event exactly once", async () => {
  const id = uniqueId("consumers");
  for (let i = 0; i < 20; i++) await client.sendEvent(id, "work", `e${i}`);
  const taken = await Promise.all(Array.from({ length: 30 }, () => client.consumeEvent(id, "work")));
  const payloads = taken.filter((p) => p !== null).map((p) => p!.toString());
  assert.equal(payloads.length, 20);
  assert.equal(new Set(payloads).size, 20);
});

test("checkControlSignals: cancel first, then pause, else nothing", async () => {
  const id = uniqueId("control");
  await seedHeldAtTask(client, id);
  assert.equal(await client.checkControlSignals(id), null);
  await client.storeSignal(id, "Pause");
  await client.storeSignal(id, "Cancel");
  assert.equal(await client.checkControlSignals(id, taskId("task-1")), "Cancelled");
  const other = uniqueId("control-pause");
  await seedHeldAtTask(client, other);
  await client.storeSignal(other, "Pause");
  assert.equal(await client.checkControlSignals(other), "Paused");
  assert.equal((await client.loadSnapshot(other)).state.kind, "Paused");
});

// Snapshots the scenario tests seed.

import { randomBytes } from "node:crypto";
import { atTask, newSnapshot, taskId, type ExecutionPosition, type SayiirClient, type WorkflowSnapshot } from "../../src/index.js";

/** An instance id no other test uses. */
export function uniqueId(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

export async function seedAt(
  client: SayiirClient,
  instanceId: string,
  position: ExecutionPosition,
  extra: Partial<WorkflowSnapshot> = {},
): Promise<WorkflowSnapshot> {
  const snapshot = { ...newSnapshot(instanceId, "hash-1", { initialInput: '"input"', position }), ...extra };
  await client.saveSnapshot(snapshot);
  return snapshot;
}

export function seedAtTask(client: SayiirClient, instanceId: string, task = "task-1", extra: Partial<WorkflowSnapshot> = {}) {
  return seedAt(client, instanceId, atTask(taskId(task)), extra);
}

/** A workflow at `task` that a worker holds, as when a worker checks for
 * signals between steps. The service's background sweep (every 0.5 s by
 * default) applies the pending cancel or pause of a workflow that no worker
 * holds on its own, which would race a test's own checks of those signals. */
export async function seedHeldAtTask(client: SayiirClient, instanceId: string, task = "task-1"): Promise<void> {
  await seedAtTask(client, instanceId, task);
  const claim = await client.claimTask(instanceId, taskId(task), "holding-worker", { ttlMs: 300_000 });
  if (claim === null) throw new Error(`${instanceId}: the seeded task could not be claimed`);
}

export async function seedAtSignal(client: SayiirClient, instanceId: string, signalName: string, next: string | null) {
  const signalId = taskId(`signal-${signalName}`);
  await seedAt(client, instanceId, {
    kind: "AtSignal",
    signalId,
    signalName,
    wakeAt: null,
    nextTaskId: next === null ? null : taskId(next),
  });
  return signalId;
}

export async function seedCompleted(client: SayiirClient, instanceId: string): Promise<void> {
  const snapshot = newSnapshot(instanceId, "hash-1");
  snapshot.state = { kind: "Completed", finalOutput: Buffer.from("done") };
  await client.saveSnapshot(snapshot);
}

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

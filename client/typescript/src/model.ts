// The snapshot model as plain typed objects, field for field the Rust
// `sayiir_core::snapshot` (and proto/sayiir/v1/snapshot.proto):
// - ids (task ids, node ids, definition hashes) are 64-character hex strings;
// - times are `Date`s (see time.ts for the nanoseconds), durations milliseconds;
// - payloads are `Buffer`s when read, and any `Uint8Array` (or a string,
//   written as UTF-8) when written;
// - variants are discriminated unions on `kind`, named as in Rust;
// - maps of the Rust model (completed tasks, retries, loop iterations,
//   branch results) are arrays that keep the writer's order.

import { sha256Hex, type Hex32 } from "./ids.js";

/** A payload to send: bytes, or a string sent as UTF-8. */
export type Payload = Uint8Array | string;

export interface TaskResult {
  taskId: Hex32;
  output: Buffer;
}

export interface BranchResult {
  label: string;
  result: TaskResult;
}

export type ExecutionPosition =
  | { kind: "NotStarted" }
  | { kind: "AtTask"; taskId: Hex32 }
  | { kind: "AtFork"; forkId: Hex32; completedBranches: BranchResult[]; wakeAt: Date }
  | { kind: "AtJoin"; joinId: Hex32; completedBranches: BranchResult[] }
  | { kind: "AtDelay"; delayId: Hex32; enteredAt: Date; wakeAt: Date; nextTaskId: Hex32 | null }
  | { kind: "AtSignal"; signalId: Hex32; signalName: string; wakeAt: Date | null; nextTaskId: Hex32 | null }
  | { kind: "InLoop"; loopId: Hex32; iteration: number; nextTaskId: Hex32 | null };

export interface InProgress {
  kind: "InProgress";
  position: ExecutionPosition;
  completedTasks: TaskResult[];
  lastCompletedTaskId: Hex32 | null;
}

export interface Completed {
  kind: "Completed";
  finalOutput: Buffer;
}

export interface Failed {
  kind: "Failed";
  error: string;
}

export interface Cancelled {
  kind: "Cancelled";
  reason: string | null;
  cancelledBy: string | null;
  cancelledAt: Date;
  completedTasks: TaskResult[];
  interruptedAtTask: Hex32 | null;
}

export interface Paused {
  kind: "Paused";
  reason: string | null;
  pausedBy: string | null;
  pausedAt: Date;
  completedTasks: TaskResult[];
  position: ExecutionPosition;
  lastCompletedTaskId: Hex32 | null;
}

export type WorkflowState = InProgress | Completed | Failed | Cancelled | Paused;

/** The `status` column's values. */
export type SnapshotStatus = WorkflowState["kind"];

export interface RetryPolicy {
  maxRetries: number;
  initialDelayMs: number;
  /** A 32-bit float on the wire, as in Rust. */
  backoffMultiplier: number;
  maxDelayMs: number | null;
}

export interface TaskRetryState {
  taskId: Hex32;
  attempts: number;
  policy: RetryPolicy;
  lastError: string;
  lastFailedWorker: string | null;
  nextRetryAt: Date;
}

export interface TaskDeadline {
  taskId: Hex32;
  deadline: Date;
  timeoutMs: number;
}

export interface LoopIteration {
  loopId: Hex32;
  iteration: number;
}

export interface WorkflowSnapshot {
  instanceId: string;
  definitionHash: Hex32;
  state: WorkflowState;
  /** Whole seconds on the wire. */
  createdAt: Date;
  /** Whole seconds on the wire. */
  updatedAt: Date;
  initialInput: Buffer | null;
  taskDeadline: TaskDeadline | null;
  taskRetries: TaskRetryState[];
  loopIterations: LoopIteration[];
  /** 1 (critical) to 5 (minimal); null means the default, 3. */
  taskPriority: number | null;
  taskTags: string[];
  /** W3C traceparent; stored in its own column, never in the blob. */
  traceParent: string | null;
}

export type SignalKind = "Cancel" | "Pause";

/** What `checkControlSignals` applied. */
export type ControlSignal = "Cancelled" | "Paused";

export interface SignalRequest {
  reason?: string | null;
  requestedBy?: string | null;
  /** Set by the service; ignored by storeSignal. */
  requestedAt?: Date | null;
}

export interface TaskClaim {
  instanceId: string;
  taskId: Hex32;
  workerId: string;
  /** Whole seconds. */
  claimedAt: Date;
  /** Null for a claim without TTL. */
  expiresAt: Date | null;
}

/** A task in the light form: all a worker needs to run it, without the snapshot. */
export interface ClaimedTask {
  instanceId: string;
  taskId: Hex32;
  /** The initial input for a first task, else the last completed task's output. */
  input: Buffer | null;
  workflowDefinitionHash: Hex32;
  traceParent: string | null;
  /** The snapshot's history version the task was read at. */
  version: number;
}

export interface AvailableTask extends ClaimedTask {
  /** The snapshot at dispatch time, task outputs included. */
  snapshot: WorkflowSnapshot;
}

export interface TaskWakeupHint {
  instanceId: string;
  taskId: Hex32;
  definitionHash: Hex32;
  tags: string[];
}

// -- helpers, as the Rust/Python WorkflowSnapshot methods -----------------------

function wholeSecondsNow(): Date {
  return new Date(Math.floor(Date.now() / 1000) * 1000);
}

export function toBuffer(value: Payload): Buffer {
  return typeof value === "string" ? Buffer.from(value, "utf8") : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/**
 * A new in-progress snapshot. `definition` is a workflow name (hashed with
 * SHA-256, as Rust's `DefinitionHash::from`) or, with `{ hash }`, a hex hash.
 * `position` defaults to NotStarted.
 */
export function newSnapshot(
  instanceId: string,
  definition: string | { hash: Hex32 },
  options: { initialInput?: Payload; position?: ExecutionPosition } = {},
): WorkflowSnapshot {
  const now = wholeSecondsNow();
  return {
    instanceId,
    definitionHash: typeof definition === "string" ? sha256Hex(definition) : definition.hash,
    state: { kind: "InProgress", position: options.position ?? { kind: "NotStarted" }, completedTasks: [], lastCompletedTaskId: null },
    createdAt: now,
    updatedAt: now,
    initialInput: options.initialInput === undefined ? null : toBuffer(options.initialInput),
    taskDeadline: null,
    taskRetries: [],
    loopIterations: [],
    taskPriority: null,
    taskTags: [],
    traceParent: null,
  };
}

/** The position at a task, by id (`atTask(taskId("charge-card"))`). */
export function atTask(taskId: Hex32): ExecutionPosition {
  return { kind: "AtTask", taskId };
}

/** Move an in-progress workflow to `position` (no-op in other states, as in Rust). */
export function updatePosition(snapshot: WorkflowSnapshot, position: ExecutionPosition): void {
  if (snapshot.state.kind === "InProgress") {
    snapshot.state.position = position;
    snapshot.updatedAt = wholeSecondsNow();
  }
}

function clearRuntimeState(snapshot: WorkflowSnapshot): void {
  snapshot.taskDeadline = null;
  snapshot.taskRetries = [];
  snapshot.loopIterations = [];
}

export function markCompleted(snapshot: WorkflowSnapshot, finalOutput: Payload = new Uint8Array()): void {
  clearRuntimeState(snapshot);
  snapshot.state = { kind: "Completed", finalOutput: toBuffer(finalOutput) };
  snapshot.updatedAt = wholeSecondsNow();
}

export function markFailed(snapshot: WorkflowSnapshot, error: string): void {
  clearRuntimeState(snapshot);
  snapshot.state = { kind: "Failed", error };
  snapshot.updatedAt = wholeSecondsNow();
}

export function isTerminal(state: WorkflowState): boolean {
  return state.kind === "Completed" || state.kind === "Failed" || state.kind === "Cancelled";
}

/** The completed task's result, if the state keeps results (InProgress, Cancelled, Paused). */
export function getTaskResult(snapshot: WorkflowSnapshot, taskId: Hex32): TaskResult | undefined {
  const state = snapshot.state;
  if (state.kind === "InProgress" || state.kind === "Cancelled" || state.kind === "Paused") {
    return state.completedTasks.find((result) => result.taskId === taskId);
  }
  return undefined;
}

/** The final output of a Completed workflow, else null. */
export function finalOutput(snapshot: WorkflowSnapshot): Buffer | null {
  return snapshot.state.kind === "Completed" ? snapshot.state.finalOutput : null;
}

/** The task to run next: set only when in progress at a task. */
export function currentTaskId(snapshot: WorkflowSnapshot): Hex32 | null {
  const state = snapshot.state;
  return state.kind === "InProgress" && state.position.kind === "AtTask" ? state.position.taskId : null;
}

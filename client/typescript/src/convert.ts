// Every conversion between the model (model.ts) and the generated messages
// (gen/), both ways, in one place. Bad input to the *ToProto functions
// throws InvalidArgumentError naming the field; a reply missing a required
// part throws SerializationError.

import { InvalidArgumentError, SerializationError } from "./errors.js";
import type * as pb from "./gen/sayiir/v1/snapshot.js";
import { SnapshotStatus as ProtoStatus } from "./gen/sayiir/v1/snapshot.js";
import * as sig from "./gen/sayiir/v1/signal_store.js";
import type * as claim from "./gen/sayiir/v1/task_claim_store.js";
import { bytesToHex, hexToBytes } from "./ids.js";
import type * as m from "./model.js";
import { toBuffer } from "./model.js";
import {
  dateFromTimestamp,
  dateFromUnixSeconds,
  durationFromMs,
  msFromDuration,
  timestampFromDate,
  unixSecondsFromDate,
} from "./time.js";

function required<T>(value: T | undefined, field: string): T {
  if (value === undefined) throw new SerializationError(`reply without ${field}`);
  return value;
}

const buffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
const optionalHex = (bytes: Uint8Array | undefined): string | null => (bytes === undefined ? null : bytesToHex(bytes));
const optionalHexToBytes = (hex: string | null | undefined, field: string): Uint8Array | undefined =>
  hex === null || hex === undefined ? undefined : hexToBytes(hex, field);

function payload(value: m.Payload, field: string): Buffer {
  if (typeof value !== "string" && !(value instanceof Uint8Array)) {
    throw new InvalidArgumentError(`${field}: expected a Uint8Array or a string, got ${typeof value}`);
  }
  return toBuffer(value);
}

export { payload as payloadToBytes };

// -- status and signal enums ------------------------------------------------------

const STATUS_TO_PROTO: Record<m.SnapshotStatus, ProtoStatus> = {
  InProgress: ProtoStatus.SNAPSHOT_STATUS_IN_PROGRESS,
  Completed: ProtoStatus.SNAPSHOT_STATUS_COMPLETED,
  Failed: ProtoStatus.SNAPSHOT_STATUS_FAILED,
  Cancelled: ProtoStatus.SNAPSHOT_STATUS_CANCELLED,
  Paused: ProtoStatus.SNAPSHOT_STATUS_PAUSED,
};

export function statusToProto(status: m.SnapshotStatus, field: string): ProtoStatus {
  const value = STATUS_TO_PROTO[status];
  if (value === undefined) {
    throw new InvalidArgumentError(`${field}: unknown status ${JSON.stringify(status)}; one of ${Object.keys(STATUS_TO_PROTO).join(", ")}`);
  }
  return value;
}

export function statusFromProto(value: ProtoStatus): m.SnapshotStatus {
  const found = (Object.keys(STATUS_TO_PROTO) as m.SnapshotStatus[]).find((status) => STATUS_TO_PROTO[status] === value);
  if (found === undefined) throw new SerializationError(`unknown status ${value} in the reply`);
  return found;
}

export function signalKindFromProto(value: sig.SignalKind): m.SignalKind {
  if (value === sig.SignalKind.SIGNAL_KIND_CANCEL) return "Cancel";
  if (value === sig.SignalKind.SIGNAL_KIND_PAUSE) return "Pause";
  throw new SerializationError(`unknown signal kind ${value} in the reply`);
}

export function signalKindToProto(kind: m.SignalKind): sig.SignalKind {
  if (kind === "Cancel") return sig.SignalKind.SIGNAL_KIND_CANCEL;
  if (kind === "Pause") return sig.SignalKind.SIGNAL_KIND_PAUSE;
  throw new InvalidArgumentError(`kind: expected "Cancel" or "Pause", got ${JSON.stringify(kind)}`);
}

export function controlSignalFromProto(value: sig.ControlSignal): m.ControlSignal | null {
  if (value === sig.ControlSignal.CONTROL_SIGNAL_CANCELLED) return "Cancelled";
  if (value === sig.ControlSignal.CONTROL_SIGNAL_PAUSED) return "Paused";
  return null;
}

// -- from the wire ----------------------------------------------------------------

function taskResultFromProto(value: pb.TaskResult): m.TaskResult {
  return { taskId: bytesToHex(value.taskId), output: buffer(value.output) };
}

function branchFromProto(value: pb.BranchResult): m.BranchResult {
  return { label: value.label, result: taskResultFromProto(required(value.result, "branch result")) };
}

function positionFromProto(value: pb.ExecutionPosition | undefined): m.ExecutionPosition {
  const kind = required(required(value, "position").kind, "position kind");
  switch (kind.$case) {
    case "notStarted":
      return { kind: "NotStarted" };
    case "atTask":
      return { kind: "AtTask", taskId: bytesToHex(kind.value.taskId) };
    case "atFork":
      return {
        kind: "AtFork",
        forkId: bytesToHex(kind.value.forkId),
        completedBranches: kind.value.completedBranches.map(branchFromProto),
        wakeAt: dateFromTimestamp(required(kind.value.wakeAt, "AtFork.wake_at")),
      };
    case "atJoin":
      return {
        kind: "AtJoin",
        joinId: bytesToHex(kind.value.joinId),
        completedBranches: kind.value.completedBranches.map(branchFromProto),
      };
    case "atDelay":
      return {
        kind: "AtDelay",
        delayId: bytesToHex(kind.value.delayId),
        enteredAt: dateFromTimestamp(required(kind.value.enteredAt, "AtDelay.entered_at")),
        wakeAt: dateFromTimestamp(required(kind.value.wakeAt, "AtDelay.wake_at")),
        nextTaskId: optionalHex(kind.value.nextTaskId),
      };
    case "atSignal":
      return {
        kind: "AtSignal",
        signalId: bytesToHex(kind.value.signalId),
        signalName: kind.value.signalName,
        wakeAt: kind.value.wakeAt === undefined ? null : dateFromTimestamp(kind.value.wakeAt),
        nextTaskId: optionalHex(kind.value.nextTaskId),
      };
    case "inLoop":
      return {
        kind: "InLoop",
        loopId: bytesToHex(kind.value.loopId),
        iteration: kind.value.iteration,
        nextTaskId: optionalHex(kind.value.nextTaskId),
      };
  }
}

function stateFromProto(value: pb.WorkflowSnapshotState | undefined): m.WorkflowState {
  const state = required(required(value, "snapshot state").state, "snapshot state");
  switch (state.$case) {
    case "inProgress":
      return {
        kind: "InProgress",
        position: positionFromProto(state.value.position),
        completedTasks: state.value.completedTasks.map(taskResultFromProto),
        lastCompletedTaskId: optionalHex(state.value.lastCompletedTaskId),
      };
    case "completed":
      return { kind: "Completed", finalOutput: buffer(state.value.finalOutput) };
    case "failed":
      return { kind: "Failed", error: state.value.error };
    case "cancelled":
      return {
        kind: "Cancelled",
        reason: state.value.reason ?? null,
        cancelledBy: state.value.cancelledBy ?? null,
        cancelledAt: dateFromTimestamp(required(state.value.cancelledAt, "Cancelled.cancelled_at")),
        completedTasks: state.value.completedTasks.map(taskResultFromProto),
        interruptedAtTask: optionalHex(state.value.interruptedAtTask),
      };
    case "paused":
      return {
        kind: "Paused",
        reason: state.value.reason ?? null,
        pausedBy: state.value.pausedBy ?? null,
        pausedAt: dateFromTimestamp(required(state.value.pausedAt, "Paused.paused_at")),
        completedTasks: state.value.completedTasks.map(taskResultFromProto),
        position: positionFromProto(state.value.position),
        lastCompletedTaskId: optionalHex(state.value.lastCompletedTaskId),
      };
  }
}

function retryPolicyFromProto(value: pb.RetryPolicy): m.RetryPolicy {
  return {
    maxRetries: value.maxRetries,
    initialDelayMs: msFromDuration(required(value.initialDelay, "RetryPolicy.initial_delay")),
    backoffMultiplier: value.backoffMultiplier,
    maxDelayMs: value.maxDelay === undefined ? null : msFromDuration(value.maxDelay),
  };
}

export function snapshotFromProto(value: pb.WorkflowSnapshot | undefined): m.WorkflowSnapshot {
  const snapshot = required(value, "snapshot");
  return {
    instanceId: snapshot.instanceId,
    definitionHash: bytesToHex(snapshot.definitionHash),
    state: stateFromProto(snapshot.state),
    createdAt: dateFromUnixSeconds(snapshot.createdAt),
    updatedAt: dateFromUnixSeconds(snapshot.updatedAt),
    initialInput: snapshot.initialInput === undefined ? null : buffer(snapshot.initialInput),
    taskDeadline:
      snapshot.taskDeadline === undefined
        ? null
        : {
            taskId: bytesToHex(snapshot.taskDeadline.taskId),
            deadline: dateFromTimestamp(required(snapshot.taskDeadline.deadline, "TaskDeadline.deadline")),
            timeoutMs: Number(snapshot.taskDeadline.timeoutMs),
          },
    taskRetries: snapshot.taskRetries.map((retry) => ({
      taskId: bytesToHex(retry.taskId),
      attempts: retry.attempts,
      policy: retryPolicyFromProto(required(retry.policy, "TaskRetryState.policy")),
      lastError: retry.lastError,
      lastFailedWorker: retry.lastFailedWorker ?? null,
      nextRetryAt: dateFromTimestamp(required(retry.nextRetryAt, "TaskRetryState.next_retry_at")),
    })),
    loopIterations: snapshot.loopIterations.map((loop) => ({ loopId: bytesToHex(loop.loopId), iteration: loop.iteration })),
    taskPriority: snapshot.taskPriority ?? null,
    taskTags: [...snapshot.taskTags],
    traceParent: snapshot.traceParent ?? null,
  };
}

/** The light form (a reply that left the snapshot out, or one the caller does not need). */
export function claimedTaskFromProto(value: claim.AvailableTask): m.ClaimedTask {
  return {
    instanceId: value.instanceId,
    taskId: bytesToHex(value.taskId),
    input: value.input === undefined ? null : buffer(value.input),
    workflowDefinitionHash: bytesToHex(value.workflowDefinitionHash),
    traceParent: value.traceParent ?? null,
    version: Number(value.version),
  };
}

export function availableTaskFromProto(value: claim.AvailableTask): m.AvailableTask {
  return { ...claimedTaskFromProto(value), snapshot: snapshotFromProto(value.snapshot) };
}

export function hintFromProto(value: claim.TaskWakeupHint): m.TaskWakeupHint {
  return {
    instanceId: value.instanceId,
    taskId: bytesToHex(value.taskId),
    definitionHash: bytesToHex(value.definitionHash),
    tags: [...value.tags],
  };
}

export function hintToProto(value: m.TaskWakeupHint): claim.TaskWakeupHint {
  return {
    instanceId: value.instanceId,
    taskId: hexToBytes(value.taskId, "hint.taskId"),
    definitionHash: hexToBytes(value.definitionHash, "hint.definitionHash"),
    tags: [...value.tags],
  };
}

export function claimFromProto(value: claim.TaskClaim): m.TaskClaim {
  return {
    instanceId: value.instanceId,
    taskId: bytesToHex(value.taskId),
    workerId: value.workerId,
    claimedAt: dateFromUnixSeconds(value.claimedAt),
    expiresAt: value.expiresAt === undefined ? null : dateFromUnixSeconds(value.expiresAt),
  };
}

export function signalRequestFromProto(value: sig.SignalRequest): m.SignalRequest {
  return {
    reason: value.reason ?? null,
    requestedBy: value.requestedBy ?? null,
    requestedAt: value.requestedAt === undefined ? null : dateFromTimestamp(value.requestedAt),
  };
}

// -- to the wire ------------------------------------------------------------------

function taskResultToProto(value: m.TaskResult, field: string): pb.TaskResult {
  return { taskId: hexToBytes(value.taskId, `${field}.taskId`), output: payload(value.output, `${field}.output`) };
}

function branchesToProto(values: m.BranchResult[], field: string): pb.BranchResult[] {
  return values.map((branch, i) => ({
    label: branch.label,
    result: taskResultToProto(branch.result, `${field}[${i}].result`),
  }));
}

function positionToProto(value: m.ExecutionPosition, field: string): pb.ExecutionPosition {
  switch (value?.kind) {
    case "NotStarted":
      return { kind: { $case: "notStarted", value: {} } };
    case "AtTask":
      return { kind: { $case: "atTask", value: { taskId: hexToBytes(value.taskId, `${field}.taskId`) } } };
    case "AtFork":
      return {
        kind: {
          $case: "atFork",
          value: {
            forkId: hexToBytes(value.forkId, `${field}.forkId`),
            completedBranches: branchesToProto(value.completedBranches, `${field}.completedBranches`),
            wakeAt: timestampFromDate(value.wakeAt, `${field}.wakeAt`),
          },
        },
      };
    case "AtJoin":
      return {
        kind: {
          $case: "atJoin",
          value: {
            joinId: hexToBytes(value.joinId, `${field}.joinId`),
            completedBranches: branchesToProto(value.completedBranches, `${field}.completedBranches`),
          },
        },
      };
    case "AtDelay":
      return {
        kind: {
          $case: "atDelay",
          value: {
            delayId: hexToBytes(value.delayId, `${field}.delayId`),
            enteredAt: timestampFromDate(value.enteredAt, `${field}.enteredAt`),
            wakeAt: timestampFromDate(value.wakeAt, `${field}.wakeAt`),
            nextTaskId: optionalHexToBytes(value.nextTaskId, `${field}.nextTaskId`),
          },
        },
      };
    case "AtSignal":
      return {
        kind: {
          $case: "atSignal",
          value: {
            signalId: hexToBytes(value.signalId, `${field}.signalId`),
            signalName: value.signalName,
            wakeAt: value.wakeAt === null ? undefined : timestampFromDate(value.wakeAt, `${field}.wakeAt`),
            nextTaskId: optionalHexToBytes(value.nextTaskId, `${field}.nextTaskId`),
          },
        },
      };
    case "InLoop":
      return {
        kind: {
          $case: "inLoop",
          value: {
            loopId: hexToBytes(value.loopId, `${field}.loopId`),
            iteration: value.iteration,
            nextTaskId: optionalHexToBytes(value.nextTaskId, `${field}.nextTaskId`),
          },
        },
      };
    default:
      throw new InvalidArgumentError(`${field}: unknown position kind ${JSON.stringify((value as { kind?: unknown })?.kind)}`);
  }
}

function stateToProto(value: m.WorkflowState, field: string): pb.WorkflowSnapshotState {
  const tasks = (results: m.TaskResult[]): pb.TaskResult[] =>
    results.map((result, i) => taskResultToProto(result, `${field}.completedTasks[${i}]`));
  switch (value?.kind) {
    case "InProgress":
      return {
        state: {
          $case: "inProgress",
          value: {
            position: positionToProto(value.position, `${field}.position`),
            completedTasks: tasks(value.completedTasks),
            lastCompletedTaskId: optionalHexToBytes(value.lastCompletedTaskId, `${field}.lastCompletedTaskId`),
          },
        },
      };
    case "Completed":
      return { state: { $case: "completed", value: { finalOutput: payload(value.finalOutput, `${field}.finalOutput`) } } };
    case "Failed":
      return { state: { $case: "failed", value: { error: value.error } } };
    case "Cancelled":
      return {
        state: {
          $case: "cancelled",
          value: {
            reason: value.reason ?? undefined,
            cancelledBy: value.cancelledBy ?? undefined,
            cancelledAt: timestampFromDate(value.cancelledAt, `${field}.cancelledAt`),
            completedTasks: tasks(value.completedTasks),
            interruptedAtTask: optionalHexToBytes(value.interruptedAtTask, `${field}.interruptedAtTask`),
          },
        },
      };
    case "Paused":
      return {
        state: {
          $case: "paused",
          value: {
            reason: value.reason ?? undefined,
            pausedBy: value.pausedBy ?? undefined,
            pausedAt: timestampFromDate(value.pausedAt, `${field}.pausedAt`),
            completedTasks: tasks(value.completedTasks),
            position: positionToProto(value.position, `${field}.position`),
            lastCompletedTaskId: optionalHexToBytes(value.lastCompletedTaskId, `${field}.lastCompletedTaskId`),
          },
        },
      };
    default:
      throw new InvalidArgumentError(`${field}: unknown state kind ${JSON.stringify((value as { kind?: unknown })?.kind)}`);
  }
}

export function snapshotToProto(value: m.WorkflowSnapshot, field = "snapshot"): pb.WorkflowSnapshot {
  if (typeof value !== "object" || value === null) throw new InvalidArgumentError(`${field}: expected a WorkflowSnapshot`);
  const deadline = value.taskDeadline;
  return {
    instanceId: value.instanceId,
    definitionHash: hexToBytes(value.definitionHash, `${field}.definitionHash`),
    state: stateToProto(value.state, `${field}.state`),
    createdAt: unixSecondsFromDate(value.createdAt, `${field}.createdAt`),
    updatedAt: unixSecondsFromDate(value.updatedAt, `${field}.updatedAt`),
    initialInput: value.initialInput === null || value.initialInput === undefined ? undefined : payload(value.initialInput, `${field}.initialInput`),
    taskDeadline:
      deadline === null || deadline === undefined
        ? undefined
        : {
            taskId: hexToBytes(deadline.taskId, `${field}.taskDeadline.taskId`),
            deadline: timestampFromDate(deadline.deadline, `${field}.taskDeadline.deadline`),
            timeoutMs: BigInt(Math.trunc(deadline.timeoutMs)),
          },
    taskRetries: (value.taskRetries ?? []).map((retry, i) => ({
      taskId: hexToBytes(retry.taskId, `${field}.taskRetries[${i}].taskId`),
      attempts: retry.attempts,
      policy: {
        maxRetries: retry.policy.maxRetries,
        initialDelay: durationFromMs(retry.policy.initialDelayMs, `${field}.taskRetries[${i}].policy.initialDelayMs`),
        backoffMultiplier: retry.policy.backoffMultiplier,
        maxDelay:
          retry.policy.maxDelayMs === null
            ? undefined
            : durationFromMs(retry.policy.maxDelayMs, `${field}.taskRetries[${i}].policy.maxDelayMs`),
      },
      lastError: retry.lastError,
      lastFailedWorker: retry.lastFailedWorker ?? undefined,
      nextRetryAt: timestampFromDate(retry.nextRetryAt, `${field}.taskRetries[${i}].nextRetryAt`),
    })),
    loopIterations: (value.loopIterations ?? []).map((loop, i) => ({
      loopId: hexToBytes(loop.loopId, `${field}.loopIterations[${i}].loopId`),
      iteration: loop.iteration,
    })),
    taskPriority: value.taskPriority ?? undefined,
    taskTags: [...(value.taskTags ?? [])],
    traceParent: value.traceParent ?? undefined,
  };
}

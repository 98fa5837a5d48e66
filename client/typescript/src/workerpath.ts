// The worker's fast path (ClaimAvailableTasks, CompleteTask): its options,
// request builders and result conversions, shared by the unary calls
// (SayiirClient) and the WorkerSession stream, so both send and return the same.

import { availableTaskFromProto, claimedTaskFromProto, payloadToBytes } from "./convert.js";
import { InvalidArgumentError } from "./errors.js";
import type {
  ClaimAvailableTasksRequest,
  ClaimAvailableTasksResponse,
  CompleteTaskRequest,
  CompleteTaskResponse,
} from "./gen/sayiir/v1/task_claim_store.js";
import { hexToBytes, type Hex32 } from "./ids.js";
import type { AvailableTask, ClaimedTask, Payload } from "./model.js";
import { durationFromMs } from "./time.js";

export const DEFAULT_AGING_INTERVAL_MS = 5 * 60_000;

export interface FindOptions {
  /** At most this many tasks, 1 to 1000 (default 10). */
  limit?: number;
  /** One priority level gained per interval waited (default 5 minutes). */
  agingIntervalMs?: number;
  /** The worker's tags; empty takes every task. */
  workerTags?: readonly string[];
}

export interface ClaimAvailableOptions extends FindOptions {
  /** Lifetime of each claim (default 30 000 ms); null: the claims never expire. */
  ttlMs?: number | null;
  /**
   * Long poll: when no task is ready, the service waits up to this long (at
   * most 300 000 ms) and answers as soon as one can be claimed; an empty
   * list after the wait. The call's deadline is lengthened by this much.
   * Absent or 0 answers at once.
   */
  waitMs?: number;
  /** Leave the snapshot out of the tasks (the light form, `ClaimedTask`). */
  omitSnapshot?: boolean;
}

export interface CompleteTaskOptions {
  /** The task to run next; absent completes the workflow. */
  nextTaskId?: Hex32 | null;
  /** The workflow's final output when it completes (default: `output`). */
  finalOutput?: Payload;
  /** Priority of the next task, 1 to 5. */
  nextTaskPriority?: number;
  /** Tags of the next task. */
  nextTaskTags?: readonly string[];
  /**
   * Continue where you are: with `nextTaskId`, the next task is claimed for
   * this worker in the same transaction, with this lifetime, and returned
   * (see `CompletedTask`).
   */
  claimNextTtlMs?: number;
  /** Aging of the fairness check of `claimNextTtlMs` (default 5 minutes). */
  agingIntervalMs?: number;
}

/** CompleteTask with `claimNextTtlMs`. */
export interface CompletedTask {
  /** False, with nothing written, when the claim was lost. */
  completed: boolean;
  /**
   * The next task, claimed for this worker (light form); null when the
   * claim was lost, or when the service gave the turn to a ready task of
   * another workflow that outranks it (the claim is then released and the
   * task dispatched as usual).
   */
  next: ClaimedTask | null;
}

export function ttl(ms: number | null | undefined, field: string) {
  return ms === null || ms === undefined ? undefined : durationFromMs(ms, field);
}

export function text(value: unknown, field: string): string {
  if (typeof value !== "string") throw new InvalidArgumentError(`${field}: expected a string, got ${typeof value}`);
  return value;
}

export function claimRequest(workerId: string, options: ClaimAvailableOptions): ClaimAvailableTasksRequest {
  return {
    workerId: text(workerId, "workerId"),
    limit: options.limit ?? 10,
    ttl: ttl(options.ttlMs === undefined ? 30_000 : options.ttlMs, "ttlMs"),
    agingInterval: durationFromMs(options.agingIntervalMs ?? DEFAULT_AGING_INTERVAL_MS, "agingIntervalMs"),
    workerTags: [...(options.workerTags ?? [])],
    wait: durationFromMs(options.waitMs ?? 0, "waitMs"),
    omitSnapshot: options.omitSnapshot === true,
  };
}

export function claimResult(
  response: ClaimAvailableTasksResponse,
  options: ClaimAvailableOptions,
): ClaimedTask[] | AvailableTask[] {
  return options.omitSnapshot === true
    ? response.tasks.map(claimedTaskFromProto)
    : response.tasks.map(availableTaskFromProto);
}

export function completeRequest(
  instanceId: string,
  taskId: Hex32,
  workerId: string,
  output: Payload,
  options: CompleteTaskOptions,
): CompleteTaskRequest {
  const next = options.nextTaskId;
  return {
    instanceId: text(instanceId, "instanceId"),
    taskId: hexToBytes(taskId, "taskId"),
    workerId: text(workerId, "workerId"),
    output: payloadToBytes(output, "output"),
    nextTaskId: next === null || next === undefined ? undefined : hexToBytes(next, "nextTaskId"),
    nextTaskPriority: options.nextTaskPriority,
    nextTaskTags: [...(options.nextTaskTags ?? [])],
    finalOutput: options.finalOutput === undefined ? undefined : payloadToBytes(options.finalOutput, "finalOutput"),
    claimNextTtl:
      options.claimNextTtlMs === undefined ? undefined : durationFromMs(options.claimNextTtlMs, "claimNextTtlMs"),
    agingInterval:
      options.agingIntervalMs === undefined ? undefined : durationFromMs(options.agingIntervalMs, "agingIntervalMs"),
  };
}

export function completeResult(response: CompleteTaskResponse, options: CompleteTaskOptions): boolean | CompletedTask {
  if (options.claimNextTtlMs === undefined) return response.completed;
  return { completed: response.completed, next: response.next === undefined ? null : claimedTaskFromProto(response.next) };
}

// SayiirClient: the Python client's method set (GrpcBackend) in camelCase,
// on the typed model. One instance holds one channel; call close() when done.

import { setTimeout as sleep } from "node:timers/promises";
import {
  availableTaskFromProto,
  claimFromProto,
  controlSignalFromProto,
  hintToProto,
  payloadToBytes,
  signalKindToProto,
  signalRequestFromProto,
  snapshotFromProto,
  snapshotToProto,
  statusToProto,
} from "./convert.js";
import { SignalStoreService } from "./gen/sayiir/v1/signal_store.js";
import { SnapshotStoreService } from "./gen/sayiir/v1/snapshot_store.js";
import { TaskClaimStoreService, TaskResultStoreService } from "./gen/sayiir/v1/task_claim_store.js";
import { hexToBytes, type Hex32 } from "./ids.js";
import type {
  AvailableTask,
  ClaimedTask,
  ControlSignal,
  Payload,
  SignalKind,
  SignalRequest,
  SnapshotStatus,
  TaskClaim,
  TaskWakeupHint,
  WorkflowSnapshot,
} from "./model.js";
import { durationFromMs } from "./time.js";
import { Transport, type ConnectOptions, type MethodDefinition } from "./transport.js";
import { iterateWakeups, WakeupCollector } from "./wakeups.js";
import { WorkerSession } from "./session.js";
import {
  claimRequest,
  claimResult,
  completeRequest,
  completeResult,
  DEFAULT_AGING_INTERVAL_MS,
  text,
  ttl,
  type ClaimAvailableOptions,
  type CompletedTask,
  type CompleteTaskOptions,
  type FindOptions,
} from "./workerpath.js";

export type { ClaimAvailableOptions, CompletedTask, CompleteTaskOptions, FindOptions } from "./workerpath.js";

// How long startWakeups waits for the service to confirm the subscription.
const SUBSCRIBE_TIMEOUT_MS = 10_000;

export interface SnapshotPage {
  instanceIds: string[];
  /** Pass as `after` for the next page; null on the last page. */
  nextAfter: string | null;
}

export class SayiirClient {
  readonly transport: Transport;
  #wakeups: WakeupCollector | null = null;
  readonly #sessions = new Set<WorkerSession>();

  constructor(target: string, options: ConnectOptions = {}) {
    this.transport = new Transport(target, options);
  }

  async #call<Req, Res>(method: MethodDefinition<Req, Res>, request: Req, extraTimeMs = 0): Promise<Res> {
    return (await this.transport.unary(method, request, extraTimeMs)) as Res;
  }

  // -- SnapshotStore ------------------------------------------------------------

  async saveSnapshot(snapshot: WorkflowSnapshot): Promise<void> {
    await this.saveSnapshotWritten(snapshot);
  }

  /** Like saveSnapshot; false when the stored snapshot was terminal and was kept. */
  async saveSnapshotWritten(snapshot: WorkflowSnapshot): Promise<boolean> {
    const response = await this.#call(SnapshotStoreService.saveSnapshot, { snapshot: snapshotToProto(snapshot) });
    return response.written;
  }

  async saveTaskResult(instanceId: string, taskId: Hex32, output: Payload): Promise<void> {
    await this.#call(SnapshotStoreService.saveTaskResult, {
      instanceId: text(instanceId, "instanceId"),
      taskId: hexToBytes(taskId, "taskId"),
      output: payloadToBytes(output, "output"),
    });
  }

  /** The current snapshot with its task outputs; NotFoundError when missing. */
  async loadSnapshot(instanceId: string): Promise<WorkflowSnapshot> {
    const response = await this.#call(SnapshotStoreService.loadSnapshot, { instanceId: text(instanceId, "instanceId") });
    return snapshotFromProto(response.snapshot);
  }

  /** Delete the instance everywhere; NotFoundError when missing. */
  async deleteSnapshot(instanceId: string): Promise<void> {
    await this.#call(SnapshotStoreService.deleteSnapshot, { instanceId: text(instanceId, "instanceId") });
  }

  /** Every instance id, in order (paged underneath). */
  async listSnapshots(): Promise<string[]> {
    const ids: string[] = [];
    let after: string | null = null;
    do {
      const page: SnapshotPage = await this.listSnapshotsPage(after, 1000);
      ids.push(...page.instanceIds);
      after = page.nextAfter;
    } while (after !== null);
    return ids;
  }

  /** One page of ids after `after`, optionally only in some statuses. */
  async listSnapshotsPage(
    after: string | null = null,
    limit = 1000,
    statuses: readonly SnapshotStatus[] = [],
  ): Promise<SnapshotPage> {
    const response = await this.#call(SnapshotStoreService.listSnapshots, {
      afterInstanceId: after ?? "",
      pageSize: limit,
      statuses: statuses.map((status, i) => statusToProto(status, `statuses[${i}]`)),
    });
    return { instanceIds: response.instanceIds, nextAfter: response.nextAfterInstanceId || null };
  }

  // -- SignalStore --------------------------------------------------------------

  /** Record a cancel or pause request; CannotCancelError / CannotPauseError once finished. */
  async storeSignal(instanceId: string, kind: SignalKind, request: SignalRequest = {}): Promise<void> {
    await this.#call(SignalStoreService.storeSignal, {
      instanceId: text(instanceId, "instanceId"),
      kind: signalKindToProto(kind),
      request: {
        reason: request.reason ?? undefined,
        requestedBy: request.requestedBy ?? undefined,
        requestedAt: undefined,
      },
    });
  }

  /** The pending request of that kind, or null. */
  async getSignal(instanceId: string, kind: SignalKind): Promise<SignalRequest | null> {
    const response = await this.#call(SignalStoreService.getSignal, {
      instanceId: text(instanceId, "instanceId"),
      kind: signalKindToProto(kind),
    });
    return response.request === undefined ? null : signalRequestFromProto(response.request);
  }

  async clearSignal(instanceId: string, kind: SignalKind): Promise<void> {
    await this.#call(SignalStoreService.clearSignal, {
      instanceId: text(instanceId, "instanceId"),
      kind: signalKindToProto(kind),
    });
  }

  /** Deliver an event; true when it resumed a workflow parked at that signal, false when buffered. */
  async sendEvent(instanceId: string, signalName: string, payload: Payload): Promise<boolean> {
    const response = await this.#call(SignalStoreService.sendEvent, {
      instanceId: text(instanceId, "instanceId"),
      signalName: text(signalName, "signalName"),
      payload: payloadToBytes(payload, "payload"),
    });
    return response.resumed;
  }

  /** The oldest buffered event of that name (each one exactly once), or null. */
  async consumeEvent(instanceId: string, signalName: string): Promise<Buffer | null> {
    const response = await this.#call(SignalStoreService.consumeEvent, {
      instanceId: text(instanceId, "instanceId"),
      signalName: text(signalName, "signalName"),
    });
    return response.payload === undefined ? null : Buffer.from(response.payload);
  }

  /** Apply a pending cancel; true when it did. */
  async checkAndCancel(instanceId: string, interruptedAtTask: Hex32 | null = null): Promise<boolean> {
    const response = await this.#call(SignalStoreService.checkAndCancel, {
      instanceId: text(instanceId, "instanceId"),
      interruptedAtTask: interruptedAtTask === null ? undefined : hexToBytes(interruptedAtTask, "interruptedAtTask"),
    });
    return response.cancelled;
  }

  /** Apply a pending pause; true when it did. */
  async checkAndPause(instanceId: string): Promise<boolean> {
    const response = await this.#call(SignalStoreService.checkAndPause, { instanceId: text(instanceId, "instanceId") });
    return response.paused;
  }

  /** Cancel, else pause, between two tasks: what was applied, or null. */
  async checkControlSignals(instanceId: string, interruptedAtTask: Hex32 | null = null): Promise<ControlSignal | null> {
    const response = await this.#call(SignalStoreService.checkControlSignals, {
      instanceId: text(instanceId, "instanceId"),
      interruptedAtTask: interruptedAtTask === null ? undefined : hexToBytes(interruptedAtTask, "interruptedAtTask"),
    });
    return controlSignalFromProto(response.signal);
  }

  /** Resume a paused workflow where it stopped; FailedPreconditionError naming the state otherwise. */
  async unpause(instanceId: string): Promise<WorkflowSnapshot> {
    const response = await this.#call(SignalStoreService.unpause, { instanceId: text(instanceId, "instanceId") });
    return snapshotFromProto(response.snapshot);
  }

  // -- TaskClaimStore -----------------------------------------------------------

  /** Claim the current task; null when another live claim holds it or it is not current. */
  async claimTask(
    instanceId: string,
    taskId: Hex32,
    workerId: string,
    options: { ttlMs?: number | null } = {},
  ): Promise<TaskClaim | null> {
    const response = await this.#call(TaskClaimStoreService.claimTask, {
      instanceId: text(instanceId, "instanceId"),
      taskId: hexToBytes(taskId, "taskId"),
      workerId: text(workerId, "workerId"),
      ttl: ttl(options.ttlMs, "ttlMs"),
    });
    return response.claim === undefined ? null : claimFromProto(response.claim);
  }

  /** Drop the claim; ClaimLostError when another worker or task holds it. */
  async releaseTaskClaim(instanceId: string, taskId: Hex32, workerId: string): Promise<void> {
    await this.#call(TaskClaimStoreService.releaseTaskClaim, {
      instanceId: text(instanceId, "instanceId"),
      taskId: hexToBytes(taskId, "taskId"),
      workerId: text(workerId, "workerId"),
    });
  }

  /** Heartbeat: the claim expires `ttlMs` from now; ClaimLostError when another worker or task holds it. */
  async extendTaskClaim(instanceId: string, taskId: Hex32, workerId: string, ttlMs: number): Promise<void> {
    await this.#call(TaskClaimStoreService.extendTaskClaim, {
      instanceId: text(instanceId, "instanceId"),
      taskId: hexToBytes(taskId, "taskId"),
      workerId: text(workerId, "workerId"),
      ttl: durationFromMs(ttlMs, "ttlMs"),
    });
  }

  /** Tasks ready for this worker, best first. */
  async findAvailableTasks(workerId: string, options: FindOptions = {}): Promise<AvailableTask[]> {
    const response = await this.#call(TaskClaimStoreService.findAvailableTasks, {
      workerId: text(workerId, "workerId"),
      limit: options.limit ?? 10,
      agingInterval: durationFromMs(options.agingIntervalMs ?? DEFAULT_AGING_INTERVAL_MS, "agingIntervalMs"),
      workerTags: [...(options.workerTags ?? [])],
    });
    return response.tasks.map(availableTaskFromProto);
  }

  /**
   * Fast path: find ready tasks and claim them for `workerId` in one call;
   * with `waitMs`, a long poll. With `omitSnapshot: true`, the light form.
   */
  claimAvailableTasks(workerId: string, options: ClaimAvailableOptions & { omitSnapshot: true }): Promise<ClaimedTask[]>;
  claimAvailableTasks(
    workerId: string,
    options?: ClaimAvailableOptions & { omitSnapshot?: false },
  ): Promise<AvailableTask[]>;
  claimAvailableTasks(workerId: string, options?: ClaimAvailableOptions): Promise<ClaimedTask[] | AvailableTask[]>;
  async claimAvailableTasks(
    workerId: string,
    options: ClaimAvailableOptions = {},
  ): Promise<ClaimedTask[] | AvailableTask[]> {
    const response = await this.#call(
      TaskClaimStoreService.claimAvailableTasks,
      claimRequest(workerId, options),
      options.waitMs ?? 0,
    );
    return claimResult(response, options);
  }

  /** The Python client's claim_tasks: claimAvailableTasks in the light form (what a worker needs). */
  async claimTasks(workerId: string, options: Omit<ClaimAvailableOptions, "omitSnapshot"> = {}): Promise<ClaimedTask[]> {
    return this.claimAvailableTasks(workerId, { ...options, omitSnapshot: true });
  }

  /**
   * Fast path: record the output, move to `nextTaskId` (or complete the
   * workflow), release the claim; one transaction. False, with nothing
   * written, when the claim was lost. With `claimNextTtlMs` the claim moves
   * to the next task instead, which comes back claimed (`CompletedTask`).
   */
  completeTask(
    instanceId: string,
    taskId: Hex32,
    workerId: string,
    output: Payload,
    options: CompleteTaskOptions & { nextTaskId: Hex32; claimNextTtlMs: number },
  ): Promise<CompletedTask>;
  completeTask(
    instanceId: string,
    taskId: Hex32,
    workerId: string,
    output: Payload,
    options?: CompleteTaskOptions & { claimNextTtlMs?: undefined },
  ): Promise<boolean>;
  completeTask(
    instanceId: string,
    taskId: Hex32,
    workerId: string,
    output: Payload,
    options?: CompleteTaskOptions,
  ): Promise<boolean | CompletedTask>;
  async completeTask(
    instanceId: string,
    taskId: Hex32,
    workerId: string,
    output: Payload,
    options: CompleteTaskOptions = {},
  ): Promise<boolean | CompletedTask> {
    const response = await this.#call(
      TaskClaimStoreService.completeTask,
      completeRequest(instanceId, taskId, workerId, output, options),
    );
    return completeResult(response, options);
  }

  /** The Python client's complete_task_and_continue: completeTask keeping the workflow (lifetime `ttlMs`). */
  async completeTaskAndContinue(
    instanceId: string,
    taskId: Hex32,
    workerId: string,
    output: Payload,
    nextTaskId: Hex32,
    ttlMs = 30_000,
    options: Omit<CompleteTaskOptions, "nextTaskId" | "claimNextTtlMs" | "finalOutput"> = {},
  ): Promise<CompletedTask> {
    return this.completeTask(instanceId, taskId, workerId, output, { ...options, nextTaskId, claimNextTtlMs: ttlMs });
  }

  /**
   * A worker's session: claimTasks, claimAvailableTasks, completeTask and
   * completeTaskAndContinue as messages on one stream (cheaper than a call
   * each), with the same arguments, results and errors. The stream opens on
   * the first request; a broken one is replaced, its unanswered requests
   * repeated with their idempotency keys. close() it when done.
   */
  workerSession(): WorkerSession {
    const session: WorkerSession = new WorkerSession(this.transport, () => this.#sessions.delete(session));
    this.#sessions.add(session);
    return session;
  }

  /** The hinted task if it is still available, else null. */
  async findHintedTask(hint: TaskWakeupHint): Promise<AvailableTask | null> {
    const response = await this.#call(TaskClaimStoreService.findHintedTask, { hint: hintToProto(hint) });
    return response.task === undefined ? null : availableTaskFromProto(response.task);
  }

  /** Save only while `workerId` holds the live claim on `taskId`; false when fenced off. */
  async saveSnapshotFenced(snapshot: WorkflowSnapshot, taskId: Hex32, workerId: string): Promise<boolean> {
    const response = await this.#call(TaskClaimStoreService.saveSnapshotFenced, {
      snapshot: snapshotToProto(snapshot),
      taskId: hexToBytes(taskId, "taskId"),
      workerId: text(workerId, "workerId"),
    });
    return response.written;
  }

  /**
   * Task-ready hints as they happen, for tasks these tags allow (`for await`).
   * Ends when the service shuts down; UnavailableError when the connection
   * breaks. Hints are best effort: poll findAvailableTasks now and then too.
   */
  watchWakeups(workerTags: readonly string[] = []): AsyncGenerator<TaskWakeupHint> {
    return iterateWakeups(this.transport, workerTags);
  }

  /** The Python client's name for watchWakeups. */
  wakeups(workerTags: readonly string[] = []): AsyncGenerator<TaskWakeupHint> {
    return this.watchWakeups(workerTags);
  }

  /**
   * Start collecting hints in the background (idempotent). Resolves once the
   * service confirmed the subscription: every hint committed afterwards
   * reaches waitForWakeup.
   */
  async startWakeups(): Promise<void> {
    if (this.#wakeups === null || this.#wakeups.ended) {
      this.#wakeups?.close();
      this.#wakeups = new WakeupCollector(this.transport);
    }
    // A service that never confirms must not hang the worker: polling still works.
    await Promise.race([this.#wakeups.ready, sleep(SUBSCRIBE_TIMEOUT_MS, undefined, { ref: false })]);
  }

  /**
   * The next hint, or null after `timeoutMs` (Rust `wait_for_wakeup`): the
   * long-poll of a worker loop. Hints are collected from startWakeups on, so
   * one committed while the worker was busy is still returned. With
   * `workerTags`, hints for tasks those tags do not allow are skipped.
   */
  async waitForWakeup(timeoutMs: number, workerTags?: readonly string[]): Promise<TaskWakeupHint | null> {
    await this.startWakeups();
    return (this.#wakeups as WakeupCollector).wait(timeoutMs, workerTags);
  }

  /** Forget the hints collected so far (after a poll that saw them anyway); how many. */
  dropWakeups(): number {
    return this.#wakeups?.drop() ?? 0;
  }

  // -- TaskResultStore ------------------------------------------------------------

  /** The stored output of a task, or null for unknown tasks or instances. */
  async loadTaskResult(instanceId: string, taskId: Hex32): Promise<Buffer | null> {
    const response = await this.#call(TaskResultStoreService.loadTaskResult, {
      instanceId: text(instanceId, "instanceId"),
      taskId: hexToBytes(taskId, "taskId"),
    });
    return response.output === undefined ? null : Buffer.from(response.output);
  }

  /** Stop the wakeup stream and the worker sessions (cancelled), close the channel. */
  close(): void {
    for (const session of [...this.#sessions]) session.cancel();
    this.#wakeups?.close();
    this.#wakeups = null;
    this.transport.close();
  }
}

/**
 * Connect to a sayiir-grpc service. With `watchWakeups: true` the wakeup
 * stream starts now (as the Rust backend listens from connect on), so no
 * hint is missed before the first waitForWakeup.
 */
export async function connect(
  target = "127.0.0.1:50051",
  options: ConnectOptions & { watchWakeups?: boolean } = {},
): Promise<SayiirClient> {
  const client = new SayiirClient(target, options);
  if (options.watchWakeups) await client.startWakeups();
  return client;
}

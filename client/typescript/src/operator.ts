// OperatorClient: the WorkflowOperator service (find, inspect and act on
// workflows; look after claims), as the Python client's OperatorClient in
// camelCase. Reads are retried on UNAVAILABLE; actions never are (a repeat
// could act twice).

import { InvalidArgumentError, SerializationError } from "./errors.js";
import { signalKindFromProto, snapshotFromProto, statusFromProto, statusToProto, payloadToBytes } from "./convert.js";
import {
  WorkflowAction as ProtoAction,
  WorkflowOperatorService,
  type ActOnWorkflowsRequest,
  type ActOnWorkflowsResponse,
  type ClaimSummary,
  type HistoryVersion,
  type WorkflowFilter as ProtoFilter,
  type WorkflowSummary as ProtoSummary,
} from "./gen/sayiir/v1/operator.js";
import { bytesToHex, hexToBytes, type Hex32 } from "./ids.js";
import type { Payload, SignalKind, SnapshotStatus, WorkflowSnapshot } from "./model.js";
import { dateFromTimestamp, timestampFromDate } from "./time.js";
import { Transport, type ConnectOptions, type MethodDefinition } from "./transport.js";

/** Which workflows a list or an action applies to; every field set must match. */
export interface WorkflowFilter {
  statuses?: readonly SnapshotStatus[];
  definitionHash?: Hex32;
  currentTaskId?: Hex32;
  tag?: string;
  createdAfter?: Date;
  createdBefore?: Date;
  updatedAfter?: Date;
  updatedBefore?: Date;
  /** Case-insensitive substring of a failed workflow's error. */
  errorContains?: string;
}

export interface WorkflowSummary {
  instanceId: string;
  status: SnapshotStatus;
  definitionHash: Hex32;
  currentTaskId: Hex32 | null;
  positionKind: string | null;
  createdAt: Date | null;
  updatedAt: Date | null;
  error: string | null;
  taskTags: string[];
  taskPriority: number;
  claimedBy: string | null;
  claimExpiresAt: Date | null;
}

export interface WorkflowDescription {
  summary: WorkflowSummary;
  pendingSignals: { kind: SignalKind; reason: string | null; requestedBy: string | null; requestedAt: Date | null }[];
  bufferedEvents: { signalName: string; count: number }[];
  completedTasks: { taskId: Hex32; completedAt: Date | null; outputBytes: number }[];
  retryStates: { taskId: Hex32; attempts: number; lastError: string; nextRetryAt: Date | null; lastFailedWorker: string | null }[];
  historyVersions: number;
}

export interface HistoryEntry {
  version: number;
  createdAt: Date | null;
  status: SnapshotStatus;
  positionKind: string | null;
  currentTaskId: Hex32 | null;
  size: number;
  /** SHA-256 of the stored blob, hex. */
  sha256: Hex32;
}

export interface ClaimInfo {
  instanceId: string;
  taskId: Hex32;
  workerId: string;
  claimedAt: Date | null;
  expiresAt: Date | null;
  expired: boolean;
}

/** What an action did, summed over its batches. */
export interface ActionResult {
  matched: number;
  applied: number;
  skipped: number;
  notFound: number;
}

/** Instances named by id, or every match of a filter. */
export type Targets = readonly string[] | WorkflowFilter;

export type WorkflowAction = "Cancel" | "Pause" | "Unpause" | "SendEvent" | "Delete";

const ACTIONS: Record<WorkflowAction, ProtoAction> = {
  Cancel: ProtoAction.WORKFLOW_ACTION_CANCEL,
  Pause: ProtoAction.WORKFLOW_ACTION_PAUSE,
  Unpause: ProtoAction.WORKFLOW_ACTION_UNPAUSE,
  SendEvent: ProtoAction.WORKFLOW_ACTION_SEND_EVENT,
  Delete: ProtoAction.WORKFLOW_ACTION_DELETE,
};

// The service's caps: named instances per call, and the default batch of a filtered action.
const MAX_NAMED_INSTANCES = 1000;
const DEFAULT_BATCH_SIZE = 500;

const optionalDate = (value: Parameters<typeof dateFromTimestamp>[0] | undefined): Date | null =>
  value === undefined ? null : dateFromTimestamp(value);
const optionalHex = (value: Uint8Array | undefined): Hex32 | null => (value === undefined ? null : bytesToHex(value));
const optionalTimestamp = (value: Date | undefined, field: string) =>
  value === undefined ? undefined : timestampFromDate(value, field);

export function filterToProto(filter: WorkflowFilter): ProtoFilter {
  return {
    statuses: (filter.statuses ?? []).map((status, i) => statusToProto(status, `filter.statuses[${i}]`)),
    definitionHash: filter.definitionHash === undefined ? undefined : hexToBytes(filter.definitionHash, "filter.definitionHash"),
    currentTaskId: filter.currentTaskId === undefined ? undefined : hexToBytes(filter.currentTaskId, "filter.currentTaskId"),
    tag: filter.tag,
    createdAfter: optionalTimestamp(filter.createdAfter, "filter.createdAfter"),
    createdBefore: optionalTimestamp(filter.createdBefore, "filter.createdBefore"),
    updatedAfter: optionalTimestamp(filter.updatedAfter, "filter.updatedAfter"),
    updatedBefore: optionalTimestamp(filter.updatedBefore, "filter.updatedBefore"),
    errorContains: filter.errorContains,
  };
}

function summaryFromProto(value: ProtoSummary | undefined): WorkflowSummary {
  if (value === undefined) throw new SerializationError("reply without a workflow summary");
  return {
    instanceId: value.instanceId,
    status: statusFromProto(value.status),
    definitionHash: bytesToHex(value.definitionHash),
    currentTaskId: optionalHex(value.currentTaskId),
    positionKind: value.positionKind ?? null,
    createdAt: optionalDate(value.createdAt),
    updatedAt: optionalDate(value.updatedAt),
    error: value.error ?? null,
    taskTags: [...value.taskTags],
    taskPriority: value.taskPriority,
    claimedBy: value.claimedBy ?? null,
    claimExpiresAt: optionalDate(value.claimExpiresAt),
  };
}

function historyFromProto(value: HistoryVersion): HistoryEntry {
  return {
    version: value.version,
    createdAt: optionalDate(value.createdAt),
    status: statusFromProto(value.status),
    positionKind: value.positionKind ?? null,
    currentTaskId: optionalHex(value.currentTaskId),
    size: Number(value.size),
    sha256: bytesToHex(value.sha256),
  };
}

function claimFromProto(value: ClaimSummary | undefined): ClaimInfo {
  if (value === undefined) throw new SerializationError("reply without a claim");
  return {
    instanceId: value.instanceId,
    taskId: bytesToHex(value.taskId),
    workerId: value.workerId,
    claimedAt: optionalDate(value.claimedAt),
    expiresAt: optionalDate(value.expiresAt),
    expired: value.expired,
  };
}

function add(total: ActionResult, response: ActOnWorkflowsResponse): ActionResult {
  return {
    matched: total.matched + Number(response.matched),
    applied: total.applied + Number(response.applied),
    skipped: total.skipped + Number(response.skipped),
    notFound: total.notFound + Number(response.notFound),
  };
}

export interface ActionOptions {
  /** Only count the matches; change nothing. */
  dryRun?: boolean;
  /** Cancel and pause: the reason recorded with the request. */
  reason?: string;
  /** Cancel and pause: who asked. */
  requestedBy?: string;
  /** Send event: the signal name. */
  signalName?: string;
  /** Send event: the payload. */
  payload?: Payload;
  /** With a filter: instances per call, 1 to 1000 (default 500). */
  batchSize?: number;
}

export class OperatorClient {
  readonly transport: Transport;

  constructor(target: string, options: ConnectOptions = {}) {
    this.transport = new Transport(target, options);
  }

  async #call<Req, Res>(method: MethodDefinition<Req, Res>, request: Req): Promise<Res> {
    return (await this.transport.unary(method, request)) as Res;
  }

  /** One page of summaries matching `filter`, in instance id order. */
  async listWorkflows(
    filter: WorkflowFilter = {},
    options: { limit?: number; after?: string | null } = {},
  ): Promise<{ workflows: WorkflowSummary[]; nextAfter: string | null }> {
    const response = await this.#call(WorkflowOperatorService.listWorkflows, {
      filter: filterToProto(filter),
      pageSize: options.limit ?? 100,
      afterInstanceId: options.after ?? "",
    });
    return { workflows: response.workflows.map(summaryFromProto), nextAfter: response.nextAfterInstanceId || null };
  }

  /** Every summary matching `filter`, page by page. */
  async *iterWorkflows(filter: WorkflowFilter = {}, limit = 100): AsyncGenerator<WorkflowSummary> {
    let after: string | null = null;
    do {
      const page: { workflows: WorkflowSummary[]; nextAfter: string | null } = await this.listWorkflows(filter, { limit, after });
      yield* page.workflows;
      after = page.nextAfter;
    } while (after !== null);
  }

  /** One workflow with its pending signals, buffered events, completed tasks, retries and history size. */
  async describeWorkflow(instanceId: string): Promise<WorkflowDescription> {
    const response = await this.#call(WorkflowOperatorService.describeWorkflow, { instanceId });
    return {
      summary: summaryFromProto(response.summary),
      pendingSignals: response.pendingSignals.map((signal) => ({
        kind: signalKindFromProto(signal.kind),
        reason: signal.reason ?? null,
        requestedBy: signal.requestedBy ?? null,
        requestedAt: optionalDate(signal.requestedAt),
      })),
      bufferedEvents: response.bufferedEvents.map((events) => ({ signalName: events.signalName, count: events.count })),
      completedTasks: response.completedTasks.map((task) => ({
        taskId: bytesToHex(task.taskId),
        completedAt: optionalDate(task.completedAt),
        outputBytes: Number(task.outputBytes),
      })),
      retryStates: response.retryStates.map((retry) => ({
        taskId: bytesToHex(retry.taskId),
        attempts: retry.attempts,
        lastError: retry.lastError,
        nextRetryAt: optionalDate(retry.nextRetryAt),
        lastFailedWorker: retry.lastFailedWorker ?? null,
      })),
      historyVersions: response.historyVersions,
    };
  }

  /** One page of a workflow's history versions, oldest first. */
  async workflowHistory(
    instanceId: string,
    options: { limit?: number; afterVersion?: number } = {},
  ): Promise<{ versions: HistoryEntry[]; nextAfterVersion: number | null }> {
    const response = await this.#call(WorkflowOperatorService.listWorkflowHistory, {
      instanceId,
      pageSize: options.limit ?? 100,
      afterVersion: options.afterVersion ?? 0,
    });
    return { versions: response.versions.map(historyFromProto), nextAfterVersion: response.nextAfterVersion || null };
  }

  /** One history version and the snapshot it stored (task outputs are not in history blobs). */
  async workflowVersion(instanceId: string, version: number): Promise<{ entry: HistoryEntry; snapshot: WorkflowSnapshot }> {
    const response = await this.#call(WorkflowOperatorService.getWorkflowVersion, { instanceId, version });
    if (response.version === undefined) throw new SerializationError("reply without a version");
    return { entry: historyFromProto(response.version), snapshot: snapshotFromProto(response.snapshot) };
  }

  /** One page of claims, live and expired, in instance id order. */
  async listClaims(
    options: { workerId?: string; expiredOnly?: boolean; limit?: number; after?: string | null } = {},
  ): Promise<{ claims: ClaimInfo[]; nextAfter: string | null }> {
    const response = await this.#call(WorkflowOperatorService.listClaims, {
      workerId: options.workerId ?? "",
      expiredOnly: options.expiredOnly ?? false,
      pageSize: options.limit ?? 100,
      afterInstanceId: options.after ?? "",
    });
    return { claims: response.claims.map(claimFromProto), nextAfter: response.nextAfterInstanceId || null };
  }

  /**
   * Apply `action` to the named instances, or to every match of a filter
   * batch by batch (one call each); the counts are summed. A dry run only counts.
   */
  async act(action: WorkflowAction, targets: Targets, options: ActionOptions = {}): Promise<ActionResult> {
    const kind = ACTIONS[action];
    if (kind === undefined) throw new InvalidArgumentError(`action: unknown action ${JSON.stringify(action)}`);
    const base: Omit<ActOnWorkflowsRequest, "target"> = {
      action: kind,
      dryRun: options.dryRun ?? false,
      reason: options.reason,
      requestedBy: options.requestedBy,
      signalName: options.signalName ?? "",
      payload: options.payload === undefined ? new Uint8Array() : payloadToBytes(options.payload, "payload"),
      batchSize: 0,
      afterInstanceId: "",
    };
    let total: ActionResult = { matched: 0, applied: 0, skipped: 0, notFound: 0 };
    if (!Array.isArray(targets)) {
      const filter = filterToProto(targets as WorkflowFilter);
      let after = "";
      do {
        const response = await this.#call(WorkflowOperatorService.actOnWorkflows, {
          ...base,
          target: { $case: "filter", value: filter },
          batchSize: options.batchSize ?? DEFAULT_BATCH_SIZE,
          afterInstanceId: after,
        });
        total = add(total, response);
        after = response.nextAfterInstanceId;
      } while (after !== "");
      return total;
    }
    const ids = targets as readonly string[];
    for (let start = 0; start < ids.length; start += MAX_NAMED_INSTANCES) {
      const response = await this.#call(WorkflowOperatorService.actOnWorkflows, {
        ...base,
        target: { $case: "instances", value: { instanceIds: ids.slice(start, start + MAX_NAMED_INSTANCES) } },
      });
      total = add(total, response);
    }
    return total;
  }

  cancel(targets: Targets, options: Pick<ActionOptions, "reason" | "requestedBy" | "dryRun"> = {}): Promise<ActionResult> {
    return this.act("Cancel", targets, options);
  }

  pause(targets: Targets, options: Pick<ActionOptions, "reason" | "requestedBy" | "dryRun"> = {}): Promise<ActionResult> {
    return this.act("Pause", targets, options);
  }

  unpause(targets: Targets, options: Pick<ActionOptions, "dryRun"> = {}): Promise<ActionResult> {
    return this.act("Unpause", targets, options);
  }

  delete(targets: Targets, options: Pick<ActionOptions, "dryRun"> = {}): Promise<ActionResult> {
    return this.act("Delete", targets, options);
  }

  sendEvent(targets: Targets, signalName: string, payload: Payload = "", options: Pick<ActionOptions, "dryRun"> = {}): Promise<ActionResult> {
    return this.act("SendEvent", targets, { ...options, signalName, payload });
  }

  /** Force-release the claim on an instance, whoever holds it; NotFoundError when there is none. */
  async releaseClaim(instanceId: string): Promise<ClaimInfo> {
    const response = await this.#call(WorkflowOperatorService.releaseClaim, { instanceId });
    return claimFromProto(response.claim);
  }

  close(): void {
    this.transport.close();
  }
}

/** Connect an OperatorClient (the same options as connect). */
export async function connectOperator(target = "127.0.0.1:50051", options: ConnectOptions = {}): Promise<OperatorClient> {
  return new OperatorClient(target, options);
}

// WorkerSession: a worker's claims and completions as messages on one
// stream (the WorkerSession RPC) instead of one unary call each; a stream
// message costs the worker and the service a fraction of a call. Requests
// run concurrently: any number of tasks of one process may share a session.
//
// Each request carries a fresh `requestId`, its idempotency key. When the
// stream breaks, the requests still unanswered fail with UNAVAILABLE and are
// sent again, with the same ids, on a new stream (the service answers a
// repeat with the first outcome), after the client's retry delays; an
// UNAVAILABLE error reply is repeated the same way. As the Python client's
// sayiir_client.session.

import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { status as Status, type ClientDuplexStream, type ServiceError } from "@grpc/grpc-js";
import {
  type BackendError,
  DeadlineExceededError,
  errorFromGrpc,
  errorFromStatusDetails,
  FailedPreconditionError,
  InvalidArgumentError,
  SerializationError,
  UnavailableError,
} from "./errors.js";
import { TaskClaimStoreService, type WorkerSessionReply, type WorkerSessionRequest } from "./gen/sayiir/v1/task_claim_store.js";
import type { Hex32 } from "./ids.js";
import type { AvailableTask, ClaimedTask, Payload } from "./model.js";
import type { Transport } from "./transport.js";
import {
  claimRequest,
  claimResult,
  completeRequest,
  completeResult,
  type ClaimAvailableOptions,
  type CompletedTask,
  type CompleteTaskOptions,
} from "./workerpath.js";

type Stream = ClientDuplexStream<Buffer, WorkerSessionReply>;
type Call = NonNullable<WorkerSessionRequest["call"]>;
type Result = NonNullable<WorkerSessionReply["result"]>;
type ResultOf<K extends Call["$case"]> = Extract<Result, { $case: K }>["value"];

/** A request waiting for its reply on one stream. */
interface Waiter {
  stream: Stream;
  resolve(reply: WorkerSessionReply): void;
  reject(error: BackendError): void;
}

export class WorkerSession {
  readonly #transport: Transport;
  readonly #onClosed: () => void;
  #stream: Stream | null = null;
  // Settles once the current stream has ended (close() waits for it).
  #streamEnded: Promise<void> = Promise.resolve();
  readonly #pending = new Map<string, Waiter>();
  #closed = false;

  /** Use SayiirClient.workerSession(). */
  constructor(transport: Transport, onClosed: () => void = () => {}) {
    this.#transport = transport;
    this.#onClosed = onClosed;
  }

  // -- the worker path ----------------------------------------------------------

  /** SayiirClient.claimAvailableTasks, on the session. */
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
    const call = { $case: "claimAvailableTasks" as const, value: claimRequest(workerId, options) };
    return claimResult(await this.#request(call, options.waitMs ?? 0), options);
  }

  /** SayiirClient.claimTasks (the light form), on the session. */
  async claimTasks(workerId: string, options: Omit<ClaimAvailableOptions, "omitSnapshot"> = {}): Promise<ClaimedTask[]> {
    return this.claimAvailableTasks(workerId, { ...options, omitSnapshot: true });
  }

  /** SayiirClient.completeTask, on the session. */
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
    const call = { $case: "completeTask" as const, value: completeRequest(instanceId, taskId, workerId, output, options) };
    return completeResult(await this.#request(call), options);
  }

  /** SayiirClient.completeTaskAndContinue, on the session. */
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
   * Half-close the stream and wait until the service has answered the
   * requests under way. Later requests fail with FailedPreconditionError.
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#onClosed();
    this.#stream?.end();
    await this.#streamEnded;
  }

  /** End the stream now: the requests still waiting fail with FailedPreconditionError. */
  cancel(): void {
    this.#closed = true;
    this.#onClosed();
    const stream = this.#stream;
    if (stream === null) return;
    this.#broken(stream, closedError());
    stream.cancel();
  }

  // -- the stream ---------------------------------------------------------------

  /**
   * Send one request and return its reply; throw its error. Repeated with
   * the same id on a new stream when the stream breaks or the service
   * answers UNAVAILABLE, up to the client's retry delays.
   */
  async #request<K extends Call["$case"]>(call: Extract<Call, { $case: K }>, extraTimeMs = 0): Promise<ResultOf<K>> {
    const requestId = randomUUID();
    let body: Buffer;
    try {
      body = TaskClaimStoreService.workerSession.requestSerialize({ requestId, call, batch: [] });
    } catch (error) {
      // The encoder rejects out-of-range numbers (a negative uint32, ...).
      throw new InvalidArgumentError(`WorkerSession: ${(error as Error).message}`);
    }
    const timeoutMs = this.#transport.timeoutMs === null ? null : this.#transport.timeoutMs + extraTimeMs;
    const delays = this.#transport.retryDelaysMs;
    for (let attempt = 0; ; attempt++) {
      let error: BackendError;
      try {
        const result = (await this.#exchange(requestId, body, timeoutMs)).result;
        if (result?.$case === call.$case) return result.value as ResultOf<K>;
        if (result?.$case !== "error") throw new SerializationError(`WorkerSession: reply without ${call.$case}`);
        error = errorFromStatusDetails(result.value);
      } catch (caught) {
        error = caught as BackendError;
      }
      if (error.code !== Status.UNAVAILABLE || attempt >= delays.length) throw error;
      await sleep(delays[attempt]);
    }
  }

  #exchange(requestId: string, body: Buffer, timeoutMs: number | null): Promise<WorkerSessionReply> {
    if (this.#closed) return Promise.reject(closedError());
    const stream = this.#open();
    return new Promise((resolve, reject) => {
      const settle = () => {
        clearTimeout(timer);
        this.#pending.delete(requestId);
      };
      const timer =
        timeoutMs === null
          ? undefined
          : setTimeout(() => {
              settle();
              const message = `no answer on the worker session within ${timeoutMs} ms`;
              reject(new DeadlineExceededError(message, { code: Status.DEADLINE_EXCEEDED }));
            }, timeoutMs);
      this.#pending.set(requestId, {
        stream,
        resolve: (reply) => {
          settle();
          resolve(reply);
        },
        reject: (error) => {
          settle();
          reject(error);
        },
      });
      // No await between #open() and here: a stream that breaks fails this request too.
      stream.write(body);
    });
  }

  #open(): Stream {
    if (this.#stream !== null) return this.#stream;
    const stream = this.#transport.bidiStream(TaskClaimStoreService.workerSession);
    this.#stream = stream;
    let ended: () => void = () => {};
    this.#streamEnded = new Promise((resolve) => (ended = resolve));
    // The status error comes before 'end', and 'end' after every reply read:
    // the waiters fail only once the replies that did come are delivered.
    let cause: BackendError | undefined;
    stream.on("data", (reply: WorkerSessionReply) => {
      const waiter = this.#pending.get(reply.requestId);
      if (waiter?.stream === stream) waiter.resolve(reply);
    });
    stream.on("error", (error: ServiceError) => {
      cause ??= typeof error.code === "number" ? errorFromGrpc(error) : undefined;
    });
    const finish = () => {
      this.#broken(stream, cause ?? new UnavailableError("the worker session's stream ended", { code: Status.UNAVAILABLE }));
      ended();
    };
    stream.on("end", finish);
    stream.on("close", finish);
    return stream;
  }

  /** `stream` ended: every request still waiting on it fails (an UNAVAILABLE one is repeated on a new stream). */
  #broken(stream: Stream, cause: BackendError): void {
    if (this.#stream === stream) this.#stream = null;
    for (const waiter of [...this.#pending.values()]) {
      if (waiter.stream === stream) waiter.reject(cause);
    }
  }
}

function closedError(): FailedPreconditionError {
  return new FailedPreconditionError("the worker session is closed", { code: Status.FAILED_PRECONDITION });
}

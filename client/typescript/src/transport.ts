// One channel to the service and the one place calls are made: deadlines,
// bearer token, idempotency key, retries, and error classes.

import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import {
  Client,
  credentials as grpcCredentials,
  Metadata,
  status as Status,
  type ChannelOptions,
  type ClientDuplexStream,
  type ClientReadableStream,
  type ServiceError,
} from "@grpc/grpc-js";
import { errorFromGrpc, InvalidArgumentError } from "./errors.js";

/** The shape of one generated method definition (gen/…Service entries). */
export interface MethodDefinition<Req, Res> {
  path: string;
  requestSerialize(value: Req): Buffer;
  responseDeserialize(value: Buffer): Res;
}

/** PEM material for TLS; `certChain` and `privateKey` together for mutual TLS. */
export interface TlsOptions {
  rootCerts?: Buffer;
  certChain?: Buffer;
  privateKey?: Buffer;
}

export interface ConnectOptions {
  /** Per-call deadline in milliseconds (default 30 000); null for none. */
  timeoutMs?: number | null;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** TLS: `true` trusts the system roots; an object gives PEM material. Default: plaintext. */
  tls?: boolean | TlsOptions;
  /** Waits before each retry of a call that is safe to retry (default 100, 200, 400, 800 ms). */
  retryDelaysMs?: readonly number[];
  /** Extra @grpc/grpc-js channel options. */
  channelOptions?: ChannelOptions;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
// About 1.5 s of back-off in all: long enough for a service restart behind a load balancer.
export const DEFAULT_RETRY_DELAYS_MS: readonly number[] = [100, 200, 400, 800];

/** The idempotency key of a logical call; one per call, the same on its retries. */
export const REQUEST_ID_METADATA = "x-request-id";

export type RetryRule = "safe" | "done-if-not-found" | "never";

// As the Python client: every unary RPC is listed (a test checks). Retried
// on UNAVAILABLE: reads, and writes whose repetition changes nothing (saves
// write the same state again; a claim by the same worker for the same task
// returns the claim it holds). Delete and release are retried too, and
// NOT_FOUND on a retry means the first attempt did it. Never retried: calls
// a repeat would double or hide (sendEvent, consumeEvent, the checkAnd*
// composites, unpause, the fast path).
export const RETRY_RULES: Readonly<Record<string, RetryRule>> = {
  SaveSnapshot: "safe",
  SaveTaskResult: "safe",
  LoadSnapshot: "safe",
  ListSnapshots: "safe",
  DeleteSnapshot: "done-if-not-found",
  StoreSignal: "safe",
  GetSignal: "safe",
  ClearSignal: "safe",
  SendEvent: "never",
  ConsumeEvent: "never",
  CheckAndCancel: "never",
  CheckAndPause: "never",
  CheckControlSignals: "never",
  Unpause: "never",
  ClaimTask: "safe",
  ReleaseTaskClaim: "done-if-not-found",
  ExtendTaskClaim: "safe",
  FindAvailableTasks: "safe",
  FindHintedTask: "safe",
  SaveSnapshotFenced: "safe",
  ClaimAvailableTasks: "never",
  CompleteTask: "never",
  LoadTaskResult: "safe",
  ListWorkflows: "safe",
  DescribeWorkflow: "safe",
  ListWorkflowHistory: "safe",
  GetWorkflowVersion: "safe",
  ListClaims: "safe",
  ActOnWorkflows: "never",
  ReleaseClaim: "never",
};

export function retryRule(path: string): RetryRule {
  return RETRY_RULES[path.slice(path.lastIndexOf("/") + 1)] ?? "never";
}

function channelCredentials(tls: ConnectOptions["tls"]) {
  if (!tls) return grpcCredentials.createInsecure();
  const pem = tls === true ? {} : tls;
  if (Boolean(pem.certChain) !== Boolean(pem.privateKey)) {
    throw new InvalidArgumentError("tls: certChain and privateKey go together (mutual TLS)");
  }
  return grpcCredentials.createSsl(pem.rootCerts ?? null, pem.privateKey ?? null, pem.certChain ?? null);
}

export class Transport {
  readonly client: Client;
  readonly timeoutMs: number | null;
  readonly retryDelaysMs: readonly number[];
  readonly #token: string | undefined;

  constructor(target: string, options: ConnectOptions = {}) {
    if (typeof target !== "string" || target === "") throw new InvalidArgumentError("target: expected HOST:PORT");
    this.timeoutMs = options.timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : options.timeoutMs;
    this.retryDelaysMs = options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
    this.#token = options.token;
    const credentials = channelCredentials(options.tls);
    try {
      this.client = this.#open(target, credentials, options.channelOptions);
    } catch (error) {
      throw new InvalidArgumentError(`target: ${(error as Error).message}`);
    }
  }

  #open(target: string, credentials: ReturnType<typeof channelCredentials>, channelOptions: ChannelOptions = {}): Client {
    return new Client(target, credentials, {
      // Reconnect quickly after the service restarts, so retried calls land.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2000,
      // The service's default message limit (SAYIIR_MAX_MESSAGE_BYTES).
      "grpc.max_receive_message_length": 16 * 1024 * 1024,
      ...channelOptions,
    });
  }

  metadata(requestId?: string): Metadata {
    const metadata = new Metadata();
    if (this.#token) metadata.set("authorization", `Bearer ${this.#token}`);
    if (requestId) metadata.set(REQUEST_ID_METADATA, requestId);
    return metadata;
  }

  #attempt<Res>(
    path: string,
    body: Buffer,
    deserialize: (value: Buffer) => Res,
    requestId: string,
    extraTimeMs: number,
  ): Promise<Res> {
    const deadline = this.timeoutMs === null ? undefined : new Date(Date.now() + this.timeoutMs + extraTimeMs);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest<Buffer, Res>(
        path,
        (value) => value,
        deserialize,
        body,
        this.metadata(requestId),
        deadline ? { deadline } : {},
        (error: ServiceError | null, response?: Res) => {
          if (error) reject(error);
          else resolve(response as Res);
        },
      );
    });
  }

  /**
   * One logical unary call: encoded once, sent with a fresh `x-request-id`,
   * retried on UNAVAILABLE where its rule allows; failures become BackendError
   * subclasses. Resolves to null only for "done-if-not-found" calls whose retry
   * found the work already done. `extraTimeMs` lengthens the deadline: a
   * long poll may legitimately wait that long on the service.
   */
  async unary<Req, Res>(method: MethodDefinition<Req, Res>, request: Req, extraTimeMs = 0): Promise<Res | null> {
    let body: Buffer;
    try {
      body = method.requestSerialize(request);
    } catch (error) {
      // The encoder rejects out-of-range numbers (a negative uint32, ...).
      throw new InvalidArgumentError(`${method.path}: ${(error as Error).message}`);
    }
    const rule = retryRule(method.path);
    const requestId = randomUUID();
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#attempt(method.path, body, (value) => method.responseDeserialize(value), requestId, extraTimeMs);
      } catch (caught) {
        const error = caught as ServiceError;
        if (attempt > 0 && rule === "done-if-not-found" && error.code === Status.NOT_FOUND) return null;
        if (error.code !== Status.UNAVAILABLE || rule === "never" || attempt >= this.retryDelaysMs.length) {
          throw errorFromGrpc(error);
        }
        await sleep(this.retryDelaysMs[attempt]);
      }
    }
  }

  /** A server stream (no deadline, no retry: the caller reopens it). */
  serverStream<Req, Res>(method: MethodDefinition<Req, Res>, request: Req): ClientReadableStream<Res> {
    return this.client.makeServerStreamRequest<Req, Res>(
      method.path,
      (value) => method.requestSerialize(value),
      (value) => method.responseDeserialize(value),
      request,
      this.metadata(),
    );
  }

  /**
   * A bidirectional stream of encoded requests (the caller encodes each
   * once, for its repeats). No deadline: it lives as long as its user; no
   * retry: WorkerSession repeats its own requests.
   */
  bidiStream<Req, Res>(method: MethodDefinition<Req, Res>): ClientDuplexStream<Buffer, Res> {
    return this.client.makeBidiStreamRequest<Buffer, Res>(
      method.path,
      (value) => value,
      (value) => method.responseDeserialize(value),
      this.metadata(),
    );
  }

  close(): void {
    this.client.close();
  }
}

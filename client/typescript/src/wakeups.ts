// The wakeup stream, raw (an async iterable) and collected in the background
// for waitForWakeup, as the Rust backend's LISTEN connection.

import type { ClientReadableStream, ServiceError } from "@grpc/grpc-js";
import { status as Status } from "@grpc/grpc-js";
import { hintFromProto } from "./convert.js";
import { errorFromGrpc } from "./errors.js";
import { TaskClaimStoreService, type WakeupEvent } from "./gen/sayiir/v1/task_claim_store.js";
import type { TaskWakeupHint } from "./model.js";
import type { Transport } from "./transport.js";

/** Hints kept for waitForWakeup between calls; past this the oldest go. */
export const WAKEUP_BUFFER = 10_000;

export function openWakeupStream(transport: Transport, workerTags: readonly string[]): ClientReadableStream<WakeupEvent> {
  return transport.serverStream(TaskClaimStoreService.watchWakeups, { workerTags: [...workerTags] });
}

/** Hints as they happen; ends when the service shuts down; UnavailableError when the connection breaks. */
export async function* iterateWakeups(transport: Transport, workerTags: readonly string[]): AsyncGenerator<TaskWakeupHint> {
  const stream = openWakeupStream(transport, workerTags);
  try {
    for await (const event of stream as AsyncIterable<WakeupEvent>) {
      if (event.event?.$case === "hint") yield hintFromProto(event.event.value);
    }
  } catch (error) {
    const failure = error as ServiceError;
    if (failure.code !== Status.CANCELLED) throw errorFromGrpc(failure);
  } finally {
    stream.on("error", () => {}); // the CANCELLED that cancel() emits is ours
    stream.cancel();
  }
}

/** Collects hints from one stream in the background; `wait` takes them in order. */
export class WakeupCollector {
  readonly #queue: TaskWakeupHint[] = [];
  readonly #waiters = new Set<() => void>();
  readonly #stream: ClientReadableStream<WakeupEvent>;
  #ended = false;
  #closed = false;
  /** Resolves once the service confirmed the subscription (or the stream ended). */
  readonly ready: Promise<void>;

  constructor(transport: Transport) {
    this.#stream = openWakeupStream(transport, []);
    let markReady: () => void = () => {};
    this.ready = new Promise((resolve) => {
      markReady = resolve;
    });
    this.#stream.on("data", (event: WakeupEvent) => {
      if (event.event?.$case === "subscribed") markReady();
      else if (event.event?.$case === "hint") {
        // Keep the newest hints; the oldest are the stalest.
        if (this.#queue.length >= WAKEUP_BUFFER) this.#queue.shift();
        this.#queue.push(hintFromProto(event.event.value));
        this.#notify();
      }
    });
    const end = () => {
      this.#ended = true;
      markReady();
      this.#notify();
    };
    // A broken stream just ends: the next waitForWakeup opens a new one.
    this.#stream.on("error", end);
    this.#stream.on("end", end);
  }

  get ended(): boolean {
    return this.#ended;
  }

  #notify(): void {
    for (const wake of this.#waiters) wake();
  }

  /** The next hint these tags allow (all when `workerTags` is undefined), or null after `timeoutMs`. */
  async wait(timeoutMs: number, workerTags?: readonly string[]): Promise<TaskWakeupHint | null> {
    const allowed = workerTags === undefined || workerTags.length === 0 ? null : new Set(workerTags);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.#queue.length > 0) {
        const hint = this.#queue.shift() as TaskWakeupHint;
        if (allowed === null || hint.tags.every((tag) => allowed.has(tag))) return hint;
      }
      const remaining = deadline - Date.now();
      // An ended stream still waits out the timeout, so a worker loop never spins.
      if (remaining <= 0 || this.#closed) return null;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.#waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, remaining);
        this.#waiters.add(wake);
      });
    }
  }

  /** Forget the hints collected so far; how many. */
  drop(): number {
    return this.#queue.splice(0).length;
  }

  close(): void {
    this.#ended = true;
    this.#closed = true;
    this.#stream.cancel();
    this.#notify();
  }
}

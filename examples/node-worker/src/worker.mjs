// A Sayiir worker on the sayiir-grpc-client package (client/typescript).
//
// Loop: wake on a wakeup hint (waitForWakeup) or every `pollMs`, find tasks
// (findHintedTask / findAvailableTasks), and for each task of a workflow
// the registry knows:
//
//   claimTask -> checkControlSignals (a signal stored since dispatch)
//   -> run the task function, with a heartbeat that extends the claim and
//      watches for a cancel (getSignal); a cancel aborts the task and is
//      applied with checkAndCancel(interruptedAtTask)
//   -> saveTaskResult -> loadSnapshot -> position AtTask(next step), or
//      Completed with the last output -> saveSnapshotFenced
//   -> checkControlSignals (a cancel or pause stored while the task ran
//      takes effect at the new position) -> releaseTaskClaim.
//
// Every step of that is reported through `onEvent` (see README.md).

import { setTimeout as sleep } from "node:timers/promises";
import {
  atTask,
  ClaimLostError,
  connect,
  markCompleted,
  markFailed,
  NotFoundError,
  updatePosition,
} from "sayiir-grpc-client";
import { Registry } from "./registry.mjs";

// The longest a hint wait blocks, so a stop is noticed promptly.
const HINT_WAIT_MS = 500;

/** Lost claims (and instances deleted meanwhile) end a task's run quietly. */
const isLost = (error) => error instanceof ClaimLostError || error instanceof NotFoundError;

export class Worker {
  #client = null;
  #registry;
  #inFlight = new Map(); // instanceId -> promise of its task
  #stopping = false;
  #woken = false;
  #wakeWaiter = null;
  #loopDone = null;
  #hintsDone = null;

  /**
   * @param {object} options
   * @param {string} options.target host:port of sayiir-grpc
   * @param {string} options.workerId unique per worker process
   * @param {Registry} [options.registry]
   * @param {number} [options.concurrency] tasks run at once (default 4)
   * @param {number} [options.claimTtlMs] claim lifetime, renewed every third of it (default 30 s)
   * @param {number} [options.pollMs] poll findAvailableTasks at least this often (default 2 s)
   * @param {number} [options.signalPollMs] look for a cancel this often while a task runs (default 1 s)
   * @param {string[]} [options.tags] worker tags: only tasks whose tags are all among them
   * @param {string} [options.token] bearer token of a service that requires one
   * @param {import("sayiir-grpc-client").ConnectOptions["tls"]} [options.tls] TLS (see the package README)
   * @param {(event: object) => void} [options.onEvent]
   * @param {(message: string) => void} [options.log]
   */
  constructor({
    target,
    workerId,
    registry = new Registry(),
    concurrency = 4,
    claimTtlMs = 30_000,
    pollMs = 2_000,
    signalPollMs = 1_000,
    tags = [],
    token,
    tls,
    onEvent = () => {},
    log = (message) => console.error(message),
  }) {
    if (!workerId) throw new Error("a workerId is required");
    this.target = target;
    this.workerId = workerId;
    this.concurrency = concurrency;
    this.claimTtlMs = claimTtlMs;
    this.pollMs = pollMs;
    this.signalPollMs = signalPollMs;
    this.tags = tags;
    this.token = token;
    this.tls = tls;
    this.#registry = registry;
    this.onEvent = onEvent;
    this.log = log;
  }

  /** Make the loop poll again now (a slot freed, or a stop). */
  #wakeUp() {
    this.#woken = true;
    this.#wakeWaiter?.();
  }

  #emit(event, fields = {}) {
    this.onEvent({ event, worker: this.workerId, ...fields });
  }

  /** Connect and subscribe to wakeups, then start the loops. Resolves once the subscription is live. */
  async start() {
    this.#client = await connect(this.target, { token: this.token, tls: this.tls, watchWakeups: true });
    this.#loopDone = this.#loop();
    this.#hintsDone = this.#hintLoop();
    this.#emit("ready");
  }

  /** Stop taking tasks, let running ones finish, close the channel. */
  async stop() {
    this.#stopping = true;
    this.#wakeUp();
    await Promise.all([this.#loopDone, this.#hintsDone]);
    await Promise.allSettled([...this.#inFlight.values()]);
    this.#client?.close();
    this.#emit("stopped");
  }

  // -- wakeups ---------------------------------------------------------------

  async #hintLoop() {
    while (!this.#stopping) {
      try {
        // Hints come from a stream the client keeps open (and reopens after a failure).
        const hint = await this.#client.waitForWakeup(HINT_WAIT_MS, this.tags);
        if (hint) this.#onHint(hint);
      } catch (error) {
        this.log(`wakeups: ${error.message}`);
        await sleep(HINT_WAIT_MS);
      }
    }
  }

  #onHint(hint) {
    if (this.#stopping || this.#inFlight.has(hint.instanceId)) return;
    if (!this.#registry.workflow(hint.definitionHash)) return; // not ours
    if (this.#inFlight.size >= this.concurrency) return; // the loop polls once a slot frees
    this.#reserve(hint.instanceId, async () => {
      const task = await this.#client.findHintedTask(hint);
      if (task) await this.#handle(task);
    });
  }

  // -- the loop --------------------------------------------------------------

  async #loop() {
    while (!this.#stopping) {
      this.#woken = false;
      if (this.#inFlight.size < this.concurrency) {
        try {
          await this.#poll();
        } catch (error) {
          this.log(`findAvailableTasks failed: ${error.message}`);
        }
      }
      if (this.#woken || this.#stopping) continue;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, this.pollMs);
        this.#wakeWaiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wakeWaiter = null;
    }
  }

  async #poll() {
    const free = this.concurrency - this.#inFlight.size;
    const tasks = await this.#client.findAvailableTasks(this.workerId, {
      // Ask for more than the free slots: some tasks may belong to
      // workflows this worker does not know.
      limit: Math.min(1000, free * 2 + 8),
      workerTags: this.tags,
    });
    for (const task of tasks) {
      if (this.#stopping || this.#inFlight.size >= this.concurrency) break;
      if (!this.#registry.workflow(task.workflowDefinitionHash)) continue;
      this.#reserve(task.instanceId, () => this.#handle(task));
    }
  }

  /** Run `body` as the one in-flight job of an instance; false when one already runs. */
  #reserve(instanceId, body) {
    if (this.#inFlight.has(instanceId) || this.#inFlight.size >= this.concurrency) return false;
    const job = Promise.resolve()
      .then(body)
      .catch((error) => {
        this.log(`instance ${instanceId}: ${error.stack ?? error.message}`);
        this.#emit("error", { instance: instanceId, message: error.message });
      })
      .finally(() => {
        this.#inFlight.delete(instanceId);
        this.#wakeUp(); // a slot is free: look for more work
      });
    this.#inFlight.set(instanceId, job);
    return true;
  }

  // -- one task --------------------------------------------------------------

  async #handle(task) {
    const client = this.#client;
    const resolved = this.#registry.resolve(task.workflowDefinitionHash, task.taskId);
    const instance = task.instanceId;
    if (!resolved) {
      this.#emit("unknown-task", { instance, task: task.taskId });
      return;
    }
    const { workflow, step, next } = resolved;
    const about = { instance, workflow: workflow.name, step: step.name };

    const claim = await client.claimTask(instance, step.id, this.workerId, { ttlMs: this.claimTtlMs });
    if (!claim) return; // another worker was faster, or the task moved on

    let release = true;
    try {
      // A cancel or pause stored after the task was dispatched.
      if (this.#reportSignal(await client.checkControlSignals(instance, step.id), about)) return;

      const outcome = await this.#runWithHeartbeat(task, step, about);
      if (outcome.kind === "lost") {
        release = false;
        this.#emit("claim-lost", about);
        return;
      }
      if (outcome.kind === "cancelled") {
        const applied = await client.checkAndCancel(instance, step.id);
        this.#emit("cancelled", { ...about, applied });
        return;
      }

      if (outcome.kind === "ok") await client.saveTaskResult(instance, step.id, outcome.output);
      const snapshot = await client.loadSnapshot(instance);
      if (snapshot.state.kind !== "InProgress") {
        // Finished or paused meanwhile (for instance by an operator).
        this.#emit("not-in-progress", { ...about, state: snapshot.state.kind });
        return;
      }

      let done;
      if (outcome.kind === "failed") {
        markFailed(snapshot, `${step.name}: ${outcome.error}`);
        done = "failed";
      } else if (next) {
        updatePosition(snapshot, atTask(next.id));
        done = "advanced";
      } else {
        markCompleted(snapshot, outcome.output);
        done = "completed";
      }
      if (!(await client.saveSnapshotFenced(snapshot, step.id, this.workerId))) {
        release = false;
        this.#emit("claim-lost", about);
        return;
      }
      this.#emit(done, {
        ...about,
        ...(done === "advanced" ? { next: next.name } : {}),
        ...(done === "failed" ? { error: outcome.error } : {}),
      });

      if (done === "advanced") {
        // A cancel or pause stored while the task ran applies here, at the
        // next task, while this worker still holds the claim.
        this.#reportSignal(await client.checkControlSignals(instance), { ...about, step: next.name });
      }
    } finally {
      if (release) await this.#release(instance, step, about);
    }
  }

  #reportSignal(signal, about) {
    if (signal === "Cancelled") {
      this.#emit("cancelled", { ...about, applied: true });
      return true;
    }
    if (signal === "Paused") {
      this.#emit("paused", about);
      return true;
    }
    return false;
  }

  async #release(instance, step, about) {
    try {
      await this.#client.releaseTaskClaim(instance, step.id, this.workerId);
    } catch (error) {
      if (!isLost(error)) throw error;
      this.#emit("claim-lost", about);
    }
  }

  /**
   * Run the step's function. Resolves to {kind: "ok", output: Buffer},
   * {kind: "failed", error}, {kind: "cancelled"} or {kind: "lost"}.
   */
  async #runWithHeartbeat(task, step, about) {
    const client = this.#client;
    const abort = new AbortController();
    const stopHeartbeat = new AbortController();
    let interrupted = null;
    const interrupt = (kind) => {
      if (!interrupted) {
        interrupted = kind;
        abort.abort(new Error(`workflow ${kind}`));
      }
    };

    const heartbeat = (async () => {
      let lastExtend = Date.now();
      while (!interrupted) {
        try {
          await sleep(this.signalPollMs, undefined, { signal: stopHeartbeat.signal });
        } catch {
          break; // the task finished
        }
        try {
          if (await client.getSignal(task.instanceId, "Cancel")) interrupt("cancelled");
          if (!interrupted && Date.now() - lastExtend >= this.claimTtlMs / 3) {
            await client.extendTaskClaim(task.instanceId, step.id, this.workerId, this.claimTtlMs);
            lastExtend = Date.now();
          }
        } catch (error) {
          if (isLost(error)) interrupt("lost");
          else this.log(`heartbeat of ${task.instanceId}: ${error.message}`);
        }
      }
    })();

    const interruption = new Promise((resolve) => abort.signal.addEventListener("abort", resolve, { once: true }));
    this.#emit("started", about);
    try {
      const input = task.input === null ? null : JSON.parse(task.input.toString("utf8"));
      const running = Promise.resolve().then(() =>
        step.run(input, { signal: abort.signal, instanceId: task.instanceId, step: step.name }),
      );
      running.catch(() => {}); // it may settle after an interruption
      const value = await Promise.race([running, interruption.then(() => undefined)]);
      if (interrupted) return { kind: interrupted };
      const output = Buffer.from(JSON.stringify(value ?? null), "utf8");
      this.#emit("ran", { ...about, output: output.toString("utf8") });
      return { kind: "ok", output };
    } catch (error) {
      if (interrupted) return { kind: interrupted };
      return { kind: "failed", error: error.message };
    } finally {
      stopHeartbeat.abort();
      await heartbeat;
    }
  }
}

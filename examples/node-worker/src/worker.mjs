// A Sayiir worker on the sayiir-grpc-client package (client/typescript).
//
// Loop: long-poll claimTasks (the service answers as soon as a task for
// this worker's tags is ready, or empty after `pollMs`); each task comes
// back already claimed. Claims and completions go on one WorkerSession
// stream (a message each instead of a call each). For each task of a workflow the registry knows:
//
//   checkControlSignals (a signal stored since dispatch)
//   -> run the task function, with a heartbeat that extends the claim and
//      watches for a cancel (getSignal); a cancel aborts the task and is
//      applied with checkAndCancel(interruptedAtTask)
//   -> completeTask: output stored, position moved to the next step (or the
//      workflow completed), claim released, in one transaction. With a next
//      step the claim moves to it instead ("continue where you are"): the
//      service hands the next task back, claimed, unless a ready task of
//      another workflow outranks it, and this worker runs it at once.
//   A failed step: loadSnapshot -> markFailed -> saveSnapshotFenced ->
//   releaseTaskClaim. Tasks of workflows the registry does not know are
//   released at once for other workers (route them away with tags).
//
// Every step of that is reported through `onEvent` (see README.md).

import { setTimeout as sleep } from "node:timers/promises";
import { ClaimLostError, connect, markFailed, NotFoundError } from "sayiir-grpc-client";
import { Registry } from "./registry.mjs";

/** Lost claims (and instances deleted meanwhile) end a task's run quietly. */
const isLost = (error) => error instanceof ClaimLostError || error instanceof NotFoundError;

export class Worker {
  #client = null;
  #session = null; // claimTasks and completeTask, on one stream
  #registry;
  #inFlight = new Map(); // instanceId -> promise of its task
  #stopping = false;
  #wakeWaiter = null;
  #loopDone = null;

  /**
   * @param {object} options
   * @param {string} options.target host:port of sayiir-grpc
   * @param {string} options.workerId unique per worker process
   * @param {Registry} [options.registry]
   * @param {number} [options.concurrency] tasks run at once (default 4)
   * @param {number} [options.claimTtlMs] claim lifetime, renewed every third of it (default 30 s)
   * @param {number} [options.pollMs] how long one long poll waits on the service (default 2 s)
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

  /** A slot freed, or a stop: the loop looks again. */
  #wakeUp() {
    this.#wakeWaiter?.();
  }

  #emit(event, fields = {}) {
    this.onEvent({ event, worker: this.workerId, ...fields });
  }

  /** Connect, then start the loop. */
  async start() {
    this.#client = await connect(this.target, { token: this.token, tls: this.tls });
    this.#session = this.#client.workerSession();
    this.#loopDone = this.#loop();
    this.#emit("ready");
  }

  /** Stop taking tasks, let running ones finish, close the session and the channel. */
  async stop() {
    this.#stopping = true;
    this.#wakeUp();
    await this.#loopDone;
    await Promise.allSettled([...this.#inFlight.values()]);
    await this.#session?.close();
    this.#client?.close();
    this.#emit("stopped");
  }

  // -- the loop --------------------------------------------------------------

  async #loop() {
    while (!this.#stopping) {
      const free = this.concurrency - this.#inFlight.size;
      if (free <= 0) {
        await new Promise((resolve) => (this.#wakeWaiter = resolve));
        this.#wakeWaiter = null;
        continue;
      }
      try {
        if (!(await this.#poll(free))) await sleep(this.pollMs);
      } catch (error) {
        this.log(`claimTasks failed: ${error.message}`);
        await sleep(Math.min(this.pollMs, 1_000));
      }
    }
  }

  /** One long poll; false when it only brought tasks this worker does not run. */
  async #poll(free) {
    // The wait bounds how long a stop waits for the loop.
    const tasks = await this.#session.claimTasks(this.workerId, {
      limit: free,
      ttlMs: this.claimTtlMs,
      workerTags: this.tags,
      waitMs: this.pollMs,
    });
    let ours = tasks.length === 0;
    for (const task of tasks) {
      if (this.#registry.workflow(task.workflowDefinitionHash) && this.#reserve(task.instanceId, () => this.#handle(task))) {
        ours = true;
        continue;
      }
      // Not ours (or no slot after all): give it back to the other workers now.
      await this.#release(task.instanceId, task.taskId, { instance: task.instanceId });
    }
    return ours;
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

  /** Run a claimed task, then the next ones the service hands back with it. */
  async #handle(task) {
    let continued = false;
    for (let current = task; current; continued = true) current = await this.#runClaimed(current, continued);
  }

  /**
   * Run one claimed task to its end; the next task when it comes back
   * claimed, else null. `continued`: handed over by completeTask.
   */
  async #runClaimed(task, continued) {
    const client = this.#client;
    const session = this.#session;
    const resolved = this.#registry.resolve(task.workflowDefinitionHash, task.taskId);
    const instance = task.instanceId;
    if (!resolved) {
      this.#emit("unknown-task", { instance, task: task.taskId });
      await this.#release(instance, task.taskId, { instance });
      return null;
    }
    const { workflow, step, next } = resolved;
    const about = { instance, workflow: workflow.name, step: step.name };

    let release = true;
    this.#emit("claimed", { ...about, continued });
    try {
      // A cancel or pause stored after the task was dispatched (or while
      // the previous step ran, for a continued task).
      if (this.#reportSignal(await client.checkControlSignals(instance, step.id), about)) return null;

      const outcome = await this.#runWithHeartbeat(task, step, about);
      if (outcome.kind === "lost") {
        release = false;
        this.#emit("claim-lost", about);
        return null;
      }
      if (outcome.kind === "cancelled") {
        const applied = await client.checkAndCancel(instance, step.id);
        this.#emit("cancelled", { ...about, applied });
        return null;
      }
      if (outcome.kind === "failed") {
        release = await this.#fail(instance, step, outcome.error, about);
        return null;
      }

      // Continue where you are, unless stopping: a stop lets running tasks
      // finish, not their workflows.
      const continuing = Boolean(next) && !this.#stopping;
      const result = continuing
        ? await session.completeTask(instance, step.id, this.workerId, outcome.output, {
            nextTaskId: next.id,
            claimNextTtlMs: this.claimTtlMs,
          })
        : {
            completed: await session.completeTask(instance, step.id, this.workerId, outcome.output, {
              nextTaskId: next?.id ?? null,
            }),
            next: null,
          };
      if (!result.completed) {
        release = await this.#notCompleted(instance, about);
        return null;
      }
      release = false; // completeTask released it, or moved it to the next task
      this.#emit(next ? "advanced" : "completed", { ...about, ...(next ? { next: next.name } : {}) });
      return result.next;
    } finally {
      if (release) await this.#release(instance, step.id, about);
    }
  }

  /** Mark the workflow failed (a fenced save); whether the claim is still to be released. */
  async #fail(instance, step, error, about) {
    const snapshot = await this.#client.loadSnapshot(instance);
    if (snapshot.state.kind !== "InProgress") {
      this.#emit("not-in-progress", { ...about, state: snapshot.state.kind });
      return true;
    }
    markFailed(snapshot, `${step.name}: ${error}`);
    if (!(await this.#client.saveSnapshotFenced(snapshot, step.id, this.workerId))) {
      this.#emit("claim-lost", about);
      return false;
    }
    this.#emit("failed", { ...about, error });
    return true;
  }

  /** completeTask wrote nothing: finished or paused meanwhile (by an operator), or the claim was lost. */
  async #notCompleted(instance, about) {
    let state = null;
    try {
      state = (await this.#client.loadSnapshot(instance)).state.kind;
    } catch (error) {
      if (!isLost(error)) throw error;
    }
    if (state !== null && state !== "InProgress") {
      this.#emit("not-in-progress", { ...about, state });
      return true;
    }
    this.#emit("claim-lost", about);
    return false;
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

  async #release(instance, taskId, about) {
    try {
      await this.#client.releaseTaskClaim(instance, taskId, this.workerId);
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

// A Sayiir worker on the TaskClaimStore / SnapshotStore / SignalStore
// services of sayiir-grpc.
//
// Loop: wake on a hint from the WatchWakeups stream (or every `pollMs`),
// find tasks (FindHintedTask / FindAvailableTasks), and for each task of a
// workflow the registry knows:
//
//   ClaimTask -> CheckControlSignals (a signal stored since dispatch)
//   -> run the task function, with a heartbeat that extends the claim and
//      watches for a cancel (GetSignal); a cancel aborts the task and is
//      applied with CheckAndCancel(interrupted_at_task)
//   -> SaveTaskResult -> LoadSnapshot -> position AtTask(next step), or
//      Completed with the last output -> SaveSnapshotFenced
//   -> CheckControlSignals (a cancel or pause stored while the task ran
//      takes effect at the new position) -> ReleaseTaskClaim.
//
// Every step of that is reported through `onEvent` (see README.md).

import { setTimeout as sleep } from "node:timers/promises";
import { connect, durationFromMs } from "./client.mjs";
import { Registry } from "./registry.mjs";

const RESTARTING_STREAM_MS = 1_000;

export class Worker {
  #client;
  #registry;
  #inFlight = new Map(); // instance_id -> promise of its task
  #stopping = false;
  #woken = false;
  #wakeWaiter = null;
  #stream = null;
  #loopDone = null;

  /**
   * @param {object} options
   * @param {string} options.target host:port of sayiir-grpc
   * @param {string} options.workerId unique per worker process
   * @param {Registry} [options.registry]
   * @param {number} [options.concurrency] tasks run at once (default 4)
   * @param {number} [options.claimTtlMs] claim lifetime, renewed every third of it (default 30 s)
   * @param {number} [options.pollMs] poll FindAvailableTasks at least this often (default 2 s)
   * @param {number} [options.signalPollMs] look for a cancel this often while a task runs (default 1 s)
   * @param {string[]} [options.tags] worker tags: only tasks whose tags are all among them
   * @param {string} [options.protoDir] the proto/ directory
   * @param {string} [options.token] bearer token of a service that requires one
   * @param {true | {rootCerts?: Buffer, certChain?: Buffer, privateKey?: Buffer}} [options.tls] TLS (see client.mjs)
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
    protoDir,
    token,
    tls,
    onEvent = () => {},
    log = (message) => console.error(message),
  }) {
    if (!workerId) throw new Error("a workerId is required");
    this.workerId = workerId;
    this.concurrency = concurrency;
    this.claimTtlMs = claimTtlMs;
    this.pollMs = pollMs;
    this.signalPollMs = signalPollMs;
    this.tags = tags;
    this.#registry = registry;
    this.#client = connect(target, { token, tls, ...(protoDir ? { protoDir } : {}) });
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

  #call(service, method, request) {
    return this.#client.call(service, method, request);
  }

  /** Subscribe to wakeups, then start the loop. Resolves once the subscription is live. */
  async start() {
    await this.#openWakeups();
    this.#loopDone = this.#loop();
    this.#emit("ready");
  }

  /** Stop taking tasks, let running ones finish, close the channel. */
  async stop() {
    this.#stopping = true;
    this.#wakeUp();
    this.#stream?.cancel();
    await this.#loopDone;
    await Promise.allSettled([...this.#inFlight.values()]);
    this.#client.close();
    this.#emit("stopped");
  }

  // -- wakeups ---------------------------------------------------------------

  #openWakeups() {
    return new Promise((resolve) => {
      let settled = false;
      const settle = () => {
        if (!settled) {
          settled = true;
          resolve();
        }
      };
      const stream = this.#client.watchWakeups(this.tags);
      this.#stream = stream;
      stream.on("data", (message) => {
        if (message.event === "subscribed") settle();
        else if (message.event === "hint") this.#onHint(message.hint);
      });
      const reopen = (why) => {
        settle(); // start anyway: polling covers the gap
        if (this.#stopping || this.#stream !== stream) return;
        this.log(`wakeup stream ${why}; reopening in ${RESTARTING_STREAM_MS} ms`);
        this.#stream = null;
        sleep(RESTARTING_STREAM_MS).then(() => {
          if (!this.#stopping) this.#openWakeups();
        });
      };
      stream.on("error", (error) => reopen(`failed: ${error.message}`));
      stream.on("end", () => reopen("ended"));
      // Never block the start on the stream: polling works without it.
      sleep(10_000, undefined, { ref: false }).then(settle);
    });
  }

  #onHint(hint) {
    if (this.#stopping || this.#inFlight.has(hint.instance_id)) return;
    if (!this.#registry.workflow(hint.definition_hash)) return; // not ours
    if (this.#inFlight.size >= this.concurrency) return; // the loop polls once a slot frees
    this.#reserve(hint.instance_id, async () => {
      const found = await this.#call("TaskClaimStore", "FindHintedTask", { hint });
      if (found.task) await this.#handle(found.task);
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
          this.log(`FindAvailableTasks failed: ${error.message}`);
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
    const { tasks } = await this.#call("TaskClaimStore", "FindAvailableTasks", {
      worker_id: this.workerId,
      // Ask for more than the free slots: some tasks may belong to
      // workflows this worker does not know.
      limit: Math.min(1000, free * 2 + 8),
      worker_tags: this.tags,
    });
    for (const task of tasks) {
      if (this.#stopping || this.#inFlight.size >= this.concurrency) break;
      if (!this.#registry.workflow(task.workflow_definition_hash)) continue;
      this.#reserve(task.instance_id, () => this.#handle(task));
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
    const resolved = this.#registry.resolve(task.workflow_definition_hash, task.task_id);
    const instance = task.instance_id;
    if (!resolved) {
      this.#emit("unknown-task", { instance, task: task.task_id.toString("hex") });
      return;
    }
    const { workflow, step, next } = resolved;
    const about = { instance, workflow: workflow.name, step: step.name };

    const { claim } = await this.#call("TaskClaimStore", "ClaimTask", {
      instance_id: instance,
      task_id: step.id,
      worker_id: this.workerId,
      ttl: durationFromMs(this.claimTtlMs),
    });
    if (!claim) return; // another worker was faster, or the task moved on

    let release = true;
    try {
      // A cancel or pause stored after the task was dispatched.
      const before = await this.#call("SignalStore", "CheckControlSignals", {
        instance_id: instance,
        interrupted_at_task: step.id,
      });
      if (this.#reportSignal(before.signal, about)) return;

      const outcome = await this.#runWithHeartbeat(task, step, about);
      if (outcome.kind === "lost") {
        release = false;
        this.#emit("claim-lost", about);
        return;
      }
      if (outcome.kind === "cancelled") {
        const { cancelled } = await this.#call("SignalStore", "CheckAndCancel", {
          instance_id: instance,
          interrupted_at_task: step.id,
        });
        this.#emit("cancelled", { ...about, applied: cancelled });
        return;
      }

      const snapshot = await (async () => {
        if (outcome.kind === "failed") return (await this.#load(instance)).snapshot;
        await this.#call("SnapshotStore", "SaveTaskResult", {
          instance_id: instance,
          task_id: step.id,
          output: outcome.output,
        });
        return (await this.#load(instance)).snapshot;
      })();
      if (snapshot.state.state !== "in_progress") {
        // Finished or paused meanwhile (for instance by an operator).
        this.#emit("not-in-progress", { ...about, state: snapshot.state.state });
        return;
      }

      let done;
      if (outcome.kind === "failed") {
        markFailed(snapshot, `${step.name}: ${outcome.error}`);
        done = "failed";
      } else if (next) {
        snapshot.state.in_progress.position = { at_task: { task_id: next.id } };
        touch(snapshot);
        done = "advanced";
      } else {
        markCompleted(snapshot, outcome.output);
        done = "completed";
      }
      const { written } = await this.#call("TaskClaimStore", "SaveSnapshotFenced", {
        snapshot,
        task_id: step.id,
        worker_id: this.workerId,
      });
      if (!written) {
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
        const after = await this.#call("SignalStore", "CheckControlSignals", { instance_id: instance });
        this.#reportSignal(after.signal, { ...about, step: next.name });
      }
    } finally {
      if (release) await this.#release(instance, step, about);
    }
  }

  #reportSignal(signal, about) {
    if (signal === "CONTROL_SIGNAL_CANCELLED") {
      this.#emit("cancelled", { ...about, applied: true });
      return true;
    }
    if (signal === "CONTROL_SIGNAL_PAUSED") {
      this.#emit("paused", about);
      return true;
    }
    return false;
  }

  #load(instance) {
    return this.#call("SnapshotStore", "LoadSnapshot", { instance_id: instance });
  }

  async #release(instance, step, about) {
    try {
      await this.#call("TaskClaimStore", "ReleaseTaskClaim", {
        instance_id: instance,
        task_id: step.id,
        worker_id: this.workerId,
      });
    } catch (error) {
      if (error.variant !== "ClaimLost" && error.variant !== "NotFound") throw error;
      this.#emit("claim-lost", about);
    }
  }

  /**
   * Run the step's function. Resolves to {kind: "ok", output: Buffer},
   * {kind: "failed", error}, {kind: "cancelled"} or {kind: "lost"}.
   */
  async #runWithHeartbeat(task, step, about) {
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
          const { request } = await this.#call("SignalStore", "GetSignal", {
            instance_id: task.instance_id,
            kind: "SIGNAL_KIND_CANCEL",
          });
          if (request) interrupt("cancelled");
          if (!interrupted && Date.now() - lastExtend >= this.claimTtlMs / 3) {
            await this.#call("TaskClaimStore", "ExtendTaskClaim", {
              instance_id: task.instance_id,
              task_id: step.id,
              worker_id: this.workerId,
              ttl: durationFromMs(this.claimTtlMs),
            });
            lastExtend = Date.now();
          }
        } catch (error) {
          if (error.variant === "ClaimLost" || error.variant === "NotFound") interrupt("lost");
          else this.log(`heartbeat of ${task.instance_id}: ${error.message}`);
        }
      }
    })();

    const interruption = new Promise((resolve) => abort.signal.addEventListener("abort", resolve, { once: true }));
    this.#emit("started", about);
    try {
      const input = task.input == null ? null : JSON.parse(task.input.toString("utf8"));
      const running = Promise.resolve().then(() =>
        step.run(input, { signal: abort.signal, instanceId: task.instance_id, step: step.name }),
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

function touch(snapshot) {
  snapshot.updated_at = String(Math.floor(Date.now() / 1000));
}

// As sayiir_core's mark_completed / mark_failed: a terminal state drops the
// runtime bookkeeping of the running task.
function clearRuntimeState(snapshot) {
  snapshot.task_deadline = null;
  snapshot.task_retries = [];
  snapshot.loop_iterations = [];
}

function markCompleted(snapshot, output) {
  clearRuntimeState(snapshot);
  snapshot.state = { completed: { final_output: output } };
  touch(snapshot);
}

function markFailed(snapshot, error) {
  clearRuntimeState(snapshot);
  snapshot.state = { failed: { error } };
  touch(snapshot);
}

// The worker's registry: named task functions, and workflows as ordered
// lists of step names.
//
// Ids follow the Sayiir convention (`TaskId::from("name")`): a task id is
// sha256(step name) and a workflow's definition hash is sha256(workflow
// name), as hex strings in sayiir-grpc-client. The service hands out tasks
// by those ids; the registry maps them back to a function and to the step
// that follows.
//
// Task functions take the JSON value of the task's input (the workflow's
// initial input for the first step, else the previous step's output) and a
// context `{ signal, instanceId, step }`, and return (or resolve to) the
// JSON value of their output. `signal` is an AbortSignal that fires when
// the workflow is cancelled while the task runs.

import { setTimeout as sleep } from "node:timers/promises";
import { sha256Hex } from "sayiir-grpc-client";

// "fleet-N": a step of the fleet-v1 workflow, which the test suite also
// runs from Python workers (tests/integration/test_node_worker.py mirrors
// it): {n, trail, work_ms} -> {n: 2n + N, trail: [...trail, "fleet-N"], work_ms}.
function fleetStep(k) {
  return async (state) => {
    if (state.work_ms > 0) await sleep(state.work_ms);
    return { n: state.n * 2 + k, trail: [...state.trail, `fleet-${k}`], work_ms: state.work_ms };
  };
}

export const TASKS = {
  "add-one": (x) => x + 1,
  double: (x) => x * 2,
  square: (x) => x * x,
  trim: (s) => s.trim(),
  capitalize: (s) => s.charAt(0).toUpperCase() + s.slice(1),
  greet: (s) => `Hello, ${s}!`,
  "fleet-1": fleetStep(1),
  "fleet-2": fleetStep(2),
  "fleet-3": fleetStep(3),
  "fleet-4": fleetStep(4),
  // Sleeps `ms` milliseconds unless the workflow is cancelled meanwhile.
  nap: async ({ ms }, { signal }) => {
    await sleep(ms, undefined, { signal });
    return { slept: ms };
  },
  "after-nap": ({ slept }) => `rested ${slept} ms`,
  explode: (x) => {
    throw new Error(`exploded on ${JSON.stringify(x)}`);
  },
};

export const WORKFLOWS = {
  "arith-v1": ["add-one", "double", "square"],
  "greet-v1": ["trim", "capitalize", "greet"],
  "fleet-v1": ["fleet-1", "fleet-2", "fleet-3", "fleet-4"],
  "nap-v1": ["nap", "after-nap"],
  "broken-v1": ["add-one", "explode", "double"],
};

/** Looks workflows and steps up by the ids the service sends. */
export class Registry {
  #byHash = new Map();

  constructor(workflows = WORKFLOWS, tasks = TASKS) {
    for (const [name, stepNames] of Object.entries(workflows)) {
      if (stepNames.length === 0) throw new Error(`workflow ${name} has no steps`);
      if (new Set(stepNames).size !== stepNames.length) {
        throw new Error(`workflow ${name} repeats a step: task ids must be unique within a workflow`);
      }
      const steps = stepNames.map((step, index) => {
        const run = tasks[step];
        if (typeof run !== "function") throw new Error(`workflow ${name}: no task function named ${step}`);
        return { name: step, index, id: sha256Hex(step), run };
      });
      const hash = sha256Hex(name);
      this.#byHash.set(hash, { name, hash, steps, byTaskId: new Map(steps.map((s) => [s.id, s])) });
    }
  }

  /** The workflow of a definition hash (hex), or undefined. */
  workflow(definitionHash) {
    return this.#byHash.get(definitionHash);
  }

  /** `{ workflow, step, next }` for a task of a workflow, or undefined (next is undefined on the last step). */
  resolve(definitionHash, taskId) {
    const workflow = this.workflow(definitionHash);
    const step = workflow?.byTaskId.get(taskId);
    if (!step) return undefined;
    return { workflow, step, next: workflow.steps[step.index + 1] };
  }

  /** `{ workflowName: [stepName, ...] }`. */
  describe() {
    return Object.fromEntries([...this.#byHash.values()].map((w) => [w.name, w.steps.map((s) => s.name)]));
  }
}

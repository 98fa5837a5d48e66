// A mixed fleet: two TypeScript workers (the fast path: claimAvailableTasks +
// completeTask) and two Python workers (test/fixtures/python_fleet_worker.py,
// the Python README's loop) share one service and run 50 four-step workflows,
// 200 tasks, each exactly once.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { connect, definitionHash, finalOutput, newSnapshot, atTask, taskId, type SayiirClient } from "../src/index.js";
import { freshService, PACKAGE_DIR, python, query, type Service } from "./support/service.js";

const STEPS = ["fleet-1", "fleet-2", "fleet-3", "fleet-4"];
const FLEET = definitionHash("fleet-v1");
const INDEX = new Map(STEPS.map((name, i) => [taskId(name), i]));

interface State {
  n: number;
  trail: string[];
}

function runStep(step: string, state: State): State {
  const k = Number(step.slice(step.lastIndexOf("-") + 1));
  return { n: state.n * 2 + k, trail: [...state.trail, step] };
}

type Run = [instance: string, step: string, worker: string];

async function typescriptWorker(client: SayiirClient, workerId: string, stop: AbortSignal, runs: Run[]): Promise<void> {
  while (!stop.aborted) {
    await client.waitForWakeup(200);
    for (const task of await client.claimAvailableTasks(workerId, { limit: 3, ttlMs: 30_000 })) {
      const index = INDEX.get(task.taskId);
      if (task.workflowDefinitionHash !== FLEET || index === undefined) {
        await client.releaseTaskClaim(task.instanceId, task.taskId, workerId);
        continue;
      }
      runs.push([task.instanceId, STEPS[index], workerId]);
      const output = JSON.stringify(runStep(STEPS[index], JSON.parse(task.input?.toString() ?? "null") as State));
      const next = index + 1 < STEPS.length ? taskId(STEPS[index + 1]) : null;
      assert.equal(await client.completeTask(task.instanceId, task.taskId, workerId, output, { nextTaskId: next }), true);
    }
  }
}

let service: Service;
before(async () => {
  service = await freshService();
});
after(async () => {
  await service?.stop();
});

test("two TypeScript and two Python workers run 200 tasks, each exactly once", async () => {
  const runs: Run[] = [];
  const pythonWorkers = ["py-0", "py-1"].map((workerId) => {
    const child = spawn(python(), [path.join(PACKAGE_DIR, "test", "fixtures", "python_fleet_worker.py"), service.target, workerId], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const ready = new Promise<void>((resolve) => {
      createInterface({ input: child.stdout! }).on("line", (line) => {
        const event = JSON.parse(line) as { event?: string; instance: string; step: string; worker: string };
        if (event.event === "ready") resolve();
        else runs.push([event.instance, event.step, event.worker]);
      });
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    return { child, ready, exited };
  });
  const stop = new AbortController();
  const clients = await Promise.all(["ts-0", "ts-1"].map(() => connect(service.target, { watchWakeups: true })));
  try {
    await Promise.all(pythonWorkers.map((worker) => worker.ready));
    const tsWorkers = clients.map((client, i) => typescriptWorker(client, `ts-${i}`, stop.signal, runs));

    const submitter = await connect(service.target);
    const instances = Array.from({ length: 50 }, (_, i) => `fleet-${String(i).padStart(3, "0")}`);
    for (const [i, id] of instances.entries()) {
      await submitter.saveSnapshot(newSnapshot(id, "fleet-v1", { initialInput: JSON.stringify({ n: i, trail: [] }), position: atTask(taskId(STEPS[0])) }));
    }
    const deadline = Date.now() + 90_000;
    for (;;) {
      const running = await submitter.listSnapshotsPage(null, 1000, ["InProgress"]);
      if (running.instanceIds.length === 0) break;
      assert.ok(Date.now() < deadline, `${running.instanceIds.length} workflows unfinished`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    stop.abort();
    await Promise.all(tsWorkers);

    for (const [i, id] of instances.entries()) {
      const output = finalOutput(await submitter.loadSnapshot(id));
      let expected: State = { n: i, trail: [] };
      for (const step of STEPS) expected = runStep(step, expected);
      assert.deepEqual(JSON.parse(output?.toString() ?? "null"), expected, id);
    }
    submitter.close();
  } finally {
    stop.abort();
    for (const worker of pythonWorkers) worker.child.kill("SIGTERM");
    const codes = await Promise.all(pythonWorkers.map((worker) => worker.exited));
    clients.forEach((client) => client.close());
    assert.deepEqual(codes, [0, 0], "the Python workers stop cleanly");
  }

  const perTask = new Map<string, number>();
  for (const [instance, step] of runs) perTask.set(`${instance}/${step}`, (perTask.get(`${instance}/${step}`) ?? 0) + 1);
  assert.equal(perTask.size, 200);
  assert.deepEqual([...perTask.entries()].filter(([, count]) => count > 1), [], "no task ran twice");
  assert.equal(runs.length, 200);
  const perWorker = new Map<string, number>();
  for (const [, , worker] of runs) perWorker.set(worker, (perWorker.get(worker) ?? 0) + 1);
  assert.ok((perWorker.get("py-0") ?? 0) + (perWorker.get("py-1") ?? 0) > 0, JSON.stringify([...perWorker]));
  assert.ok((perWorker.get("ts-0") ?? 0) + (perWorker.get("ts-1") ?? 0) > 0, JSON.stringify([...perWorker]));
  const [claims] = await query<{ n: string }>(service.databaseUrl, "SELECT count(*) AS n FROM sayiir_workflow_claims");
  assert.equal(Number(claims.n), 0, "no claim is left behind");
  console.log(`runs per worker: ${JSON.stringify(Object.fromEntries(perWorker))}`);
});

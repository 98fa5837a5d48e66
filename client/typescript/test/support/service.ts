// Starts sayiir-grpc services for the tests, each on a database of its own
// created on the test PostgreSQL (SAYIIR_TEST_PG_URL, default
// postgresql://postgres@127.0.0.1:5432/postgres, trust auth) and dropped at
// the end. The service is the repository's (`python -m sayiir_grpc serve`, from
// SAYIIR_PYTHON or the repository's .venv), on 127.0.0.1 with a port the OS
// picks; its "listening on" line tells which.

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";

// .test-build/test/support -> the package directory, then the repository.
export const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const REPO_DIR = path.resolve(PACKAGE_DIR, "..", "..");
export const ADMIN_URL = process.env.SAYIIR_TEST_PG_URL ?? "postgresql://postgres@127.0.0.1:5432/postgres";

export function python(): string {
  const fromEnv = process.env.SAYIIR_PYTHON;
  if (fromEnv) return fromEnv;
  const venv = path.join(REPO_DIR, ".venv", "bin", "python");
  if (existsSync(venv)) return venv;
  throw new Error(`no Python for the service: set SAYIIR_PYTHON or create ${venv} (see the repository README)`);
}

function withDatabase(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

async function admin<T>(run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end();
  }
}

export async function createDatabase(): Promise<string> {
  const name = `sayiir_ts_${randomBytes(6).toString("hex")}`;
  await admin((client) => client.query(`CREATE DATABASE "${name}"`));
  return withDatabase(ADMIN_URL, name);
}

export async function dropDatabase(url: string): Promise<void> {
  const name = new URL(url).pathname.slice(1);
  await admin((client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
}

/** One query on a database (for checks the API cannot make, e.g. leftover claims). */
export async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

export interface Service {
  target: string;
  databaseUrl: string;
  process: ChildProcess;
  stderr: string[];
  /** SIGTERM, then SIGKILL after 15 s. */
  stop(): Promise<void>;
}

/** Start a service on `databaseUrl` with extra `serve` flags; resolves once it listens. */
export async function startService(databaseUrl: string, ...flags: string[]): Promise<Service> {
  const child = spawn(
    python(),
    [
      "-m",
      "sayiir_grpc",
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "off",
      "--database-url",
      databaseUrl,
      "--pool-min-connections",
      "1",
      "--pool-max-connections",
      "6",
      "--log-level",
      "warning",
      "--shutdown-grace",
      "1",
      ...flags,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on("line", (line) => stderr.push(line));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const target = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the service did not start within 60 s: ${stderr.join("\n")}`)), 60_000);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const match = /listening on (\S+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the service exited with ${code}: ${stderr.join("\n")}`));
    });
  });
  return {
    target,
    databaseUrl,
    process: child,
    stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(killer);
    },
  };
}

/** A fresh database and a service on it; `stop` stops the service and drops the database. */
export async function freshService(...flags: string[]): Promise<Service> {
  const url = await createDatabase();
  try {
    const service = await startService(url, ...flags);
    const stop = service.stop;
    return {
      ...service,
      async stop() {
        await stop();
        await dropDatabase(url);
      },
    };
  } catch (error) {
    await dropDatabase(url);
    throw error;
  }
}

/** Empty every table the service writes (between tests that count rows).
 *
 * TRUNCATE locks the tables one by one; a statement of the service's
 * background sweep that reads two of them in the other order can hold one
 * while waiting for the other, and PostgreSQL then ends one of the two as a
 * deadlock (40P01). That is the test's race with the running service, not
 * the service's: the TRUNCATE is tried again. */
export async function truncate(url: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await query(
        url,
        "TRUNCATE sayiir_workflow_snapshots, sayiir_workflow_snapshot_history, sayiir_workflow_tasks, " +
          "sayiir_workflow_signals, sayiir_workflow_claims, sayiir_workflow_events",
      );
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== "40P01" || attempt >= 5) throw error;
    }
  }
}

/**
 * The service a test file shares: SAYIIR_TEST_TARGET when set (then
 * `databaseUrl` is null and tests that read the database skip), else a fresh one.
 */
export async function sharedService(): Promise<{ target: string; databaseUrl: string | null; stop(): Promise<void> }> {
  const external = process.env.SAYIIR_TEST_TARGET;
  if (external) return { target: external, databaseUrl: null, stop: async () => {} };
  return freshService();
}

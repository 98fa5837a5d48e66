#!/usr/bin/env node
// Command line of the example worker. Events go to stdout, one JSON object
// per line; logs go to stderr. SIGTERM or SIGINT stops it gracefully
// (running tasks finish and release their claims); a second one exits now.

import { readFileSync } from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";
import { Registry } from "./registry.mjs";
import { Worker } from "./worker.mjs";

const USAGE = `usage: node src/main.mjs [options]

  --target HOST:PORT     sayiir-grpc address (env SAYIIR_TARGET, default 127.0.0.1:50051)
  --worker-id ID         unique worker id (default node-<host>-<pid>)
  --concurrency N        tasks run at once (default 4)
  --claim-ttl-ms MS      claim lifetime, renewed every third of it (default 30000)
  --poll-ms MS           longest a long poll for tasks waits on the service (default 2000)
  --signal-poll-ms MS    look for a cancel this often while a task runs (default 1000)
  --tag TAG              a worker tag (repeatable): run only tasks whose tags are all held
  --tls                  connect with TLS, trusting the system roots
  --tls-ca FILE          connect with TLS, trusting this PEM CA (implies --tls)
  --tls-cert FILE        client certificate chain (PEM) for mutual TLS, with --tls-key
  --tls-key FILE         private key (PEM) of --tls-cert
  --list                 print the registry's workflows as JSON and exit
  --help

The bearer token of a service that requires one is read from SAYIIR_TOKEN
(not a flag: the command line is visible to every user through ps).`;

function integer(name, text) {
  const value = Number(text);
  if (!Number.isInteger(value) || value <= 0) {
    console.error(`--${name} must be a positive integer, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return value;
}

let args;
try {
  args = parseArgs({
    options: {
      target: { type: "string", default: process.env.SAYIIR_TARGET ?? "127.0.0.1:50051" },
      "worker-id": { type: "string", default: `node-${os.hostname()}-${process.pid}` },
      concurrency: { type: "string", default: "4" },
      "claim-ttl-ms": { type: "string", default: "30000" },
      "poll-ms": { type: "string", default: "2000" },
      "signal-poll-ms": { type: "string", default: "1000" },
      tag: { type: "string", multiple: true, default: [] },
      tls: { type: "boolean", default: false },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      list: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  }).values;
} catch (error) {
  console.error(`${error.message}\n\n${USAGE}`);
  process.exit(2);
}

if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

function tlsOptions() {
  const files = { rootCerts: args["tls-ca"], certChain: args["tls-cert"], privateKey: args["tls-key"] };
  if (!args.tls && !Object.values(files).some(Boolean)) return undefined;
  if (Boolean(files.certChain) !== Boolean(files.privateKey)) {
    console.error("--tls-cert and --tls-key go together");
    process.exit(2);
  }
  return Object.fromEntries(Object.entries(files).map(([key, file]) => [key, file && readFileSync(file)]));
}

const registry = new Registry();
if (args.list) {
  console.log(JSON.stringify({ workflows: registry.describe() }));
  process.exit(0);
}

const worker = new Worker({
  target: args.target,
  workerId: args["worker-id"],
  registry,
  concurrency: integer("concurrency", args.concurrency),
  claimTtlMs: integer("claim-ttl-ms", args["claim-ttl-ms"]),
  pollMs: integer("poll-ms", args["poll-ms"]),
  signalPollMs: integer("signal-poll-ms", args["signal-poll-ms"]),
  tags: args.tag,
  token: process.env.SAYIIR_TOKEN || undefined,
  tls: tlsOptions(),
  onEvent: (event) => process.stdout.write(`${JSON.stringify(event)}\n`),
  log: (message) => process.stderr.write(`[${args["worker-id"]}] ${message}\n`),
});

let stopping = false;
for (const name of ["SIGTERM", "SIGINT"]) {
  process.on(name, () => {
    if (stopping) process.exit(1);
    stopping = true;
    worker.stop().then(
      () => process.stdout.write("", () => process.exit(0)),
      (error) => {
        console.error(`stop failed: ${error.stack ?? error.message}`);
        process.exit(1);
      },
    );
  });
}

await worker.start();

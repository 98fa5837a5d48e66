// gRPC stubs for the sayiir.v1 services, built at run time from the .proto
// files with @grpc/proto-loader: no generated or hand-written wire code.
//
// Messages are plain objects with the proto field names (snake_case):
// bytes are Buffers, 64-bit integers strings, enums their value names, and
// a oneof also names its set member (`snapshot.state.state === "in_progress"`).

import { fileURLToPath } from "node:url";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** The repository's proto/ directory (override with SAYIIR_PROTO_DIR). */
export const DEFAULT_PROTO_DIR = process.env.SAYIIR_PROTO_DIR ?? path.resolve(HERE, "..", "..", "..", "proto");

const PROTO_FILES = [
  "sayiir/v1/snapshot.proto",
  "sayiir/v1/snapshot_store.proto",
  "sayiir/v1/signal_store.proto",
  "sayiir/v1/task_claim_store.proto",
];

export const LOADER_OPTIONS = Object.freeze({
  keepCase: true, // field names exactly as in the .proto files
  longs: String, // uint64/int64 as decimal strings: no precision loss
  enums: String, // enum values by name, e.g. "SIGNAL_KIND_CANCEL"
  bytes: Buffer,
  defaults: true, // scalars and repeated fields always present; unset messages are null
  oneofs: true, // a oneof's name holds the name of its set field
});

/** A gRPC error, with the service's `sayiir-error` variant (e.g. "ClaimLost"). */
export class SayiirError extends Error {
  constructor(method, cause) {
    const variant = cause.metadata?.get("sayiir-error")?.[0]?.toString();
    super(`${method}: ${grpc.status[cause.code] ?? cause.code}${variant ? ` (${variant})` : ""}: ${cause.details}`);
    this.name = "SayiirError";
    this.code = cause.code;
    this.variant = variant;
    this.details = cause.details;
  }
}

/**
 * Connect to a sayiir-grpc service.
 *
 * Options: `token` (sent as `authorization: Bearer <token>` on every call),
 * `tls` (`true` for the system roots, or `{ rootCerts, certChain,
 * privateKey }` as PEM Buffers, the last two for mutual TLS), `protoDir`,
 * `deadlineMs` (per unary call).
 *
 * Returns `{ call(service, method, request), watchWakeups(tags), close() }`;
 * `call` is a promise-returning unary call with a deadline.
 */
export function connect(target, { protoDir = DEFAULT_PROTO_DIR, deadlineMs = 10_000, token, tls } = {}) {
  const definition = protoLoader.loadSync(PROTO_FILES, { ...LOADER_OPTIONS, includeDirs: [protoDir] });
  const pkg = grpc.loadPackageDefinition(definition).sayiir.v1;
  const pem = tls === true ? {} : tls;
  const creds = pem
    ? grpc.credentials.createSsl(pem.rootCerts ?? null, pem.privateKey ?? null, pem.certChain ?? null)
    : grpc.credentials.createInsecure();
  const metadata = () => {
    const md = new grpc.Metadata();
    if (token) md.set("authorization", `Bearer ${token}`);
    return md;
  };
  const channel = new grpc.Channel(target, creds, {});
  const options = { channelOverride: channel };
  const stubs = {
    SnapshotStore: new pkg.SnapshotStore(target, creds, options),
    SignalStore: new pkg.SignalStore(target, creds, options),
    TaskClaimStore: new pkg.TaskClaimStore(target, creds, options),
    TaskResultStore: new pkg.TaskResultStore(target, creds, options),
  };

  function call(service, method, request) {
    const stub = stubs[service];
    if (typeof stub?.[method] !== "function") {
      throw new Error(`unknown RPC ${service}.${method}`);
    }
    return new Promise((resolve, reject) => {
      stub[method](request, metadata(), { deadline: Date.now() + deadlineMs }, (error, response) => {
        if (error) reject(new SayiirError(`${service}.${method}`, error));
        else resolve(response);
      });
    });
  }

  /** The server stream of WakeupEvent messages (a grpc-js ClientReadableStream). */
  function watchWakeups(workerTags = []) {
    return stubs.TaskClaimStore.WatchWakeups({ worker_tags: workerTags }, metadata());
  }

  function close() {
    channel.close(); // the four stubs share this one channel
  }

  return { call, watchWakeups, close };
}

/** A google.protobuf.Duration from milliseconds. */
export function durationFromMs(ms) {
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

// Each status the service answers with arrives as its error class, from a
// real service: the scenario that causes it, the class, the code, the variant.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { status as Status } from "@grpc/grpc-js";
import {
  BackendError,
  CannotCancelError,
  CannotPauseError,
  ClaimLostError,
  connect,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  connectOperator,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  SerializationError,
  taskId,
  UnauthenticatedError,
  UnavailableError,
  type SayiirClient,
} from "../src/index.js";
import { seedAtTask, seedCompleted, uniqueId } from "./support/fixtures.js";
import { createDatabase, dropDatabase, startService, type Service } from "./support/service.js";

let databaseUrl: string;
let service: Service;
let client: SayiirClient;
before(async () => {
  databaseUrl = await createDatabase();
  service = await startService(databaseUrl, "--max-message-bytes", "65536");
  client = await connect(service.target);
});
after(async () => {
  client?.close();
  await service?.stop();
  if (databaseUrl) await dropDatabase(databaseUrl);
});

/** The class and code; and for the Rust variants, the variant name the service sent. */
function expectError(cls: typeof BackendError, code: Status | undefined, kind?: string) {
  return (error: unknown) => {
    assert.ok(error instanceof cls, `expected ${cls.name}, got ${String(error)}`);
    assert.equal(error.constructor, cls);
    assert.equal(error.code, code);
    if (kind !== undefined) assert.equal(error.kind, kind);
    return true;
  };
}

test("NOT_FOUND: NotFoundError, with the ErrorInfo the service sends in the status details", async () => {
  await assert.rejects(client.loadSnapshot("no-such-instance"), (error: unknown) => {
    expectError(NotFoundError, Status.NOT_FOUND, "NotFound")(error);
    assert.deepEqual((error as NotFoundError).info, { instance_id: "no-such-instance" });
    return true;
  });
});

test("INVALID_ARGUMENT: InvalidArgumentError naming the field, from the service and before sending", async () => {
  await assert.rejects(client.findAvailableTasks("w", { limit: 0 }), (error: unknown) => {
    expectError(InvalidArgumentError, Status.INVALID_ARGUMENT, "InvalidArgument")(error);
    assert.match((error as Error).message, /limit/);
    assert.equal((error as InvalidArgumentError).info.field, "limit");
    return true;
  });
  await assert.rejects(client.loadSnapshot(""), expectError(InvalidArgumentError, Status.INVALID_ARGUMENT, "InvalidArgument"));
  // Caught by the client: nothing is sent.
  await assert.rejects(client.saveTaskResult("x", "not-a-task-id", "out"), (error: unknown) => {
    expectError(InvalidArgumentError, undefined, "InvalidArgument")(error);
    assert.match((error as Error).message, /^taskId: /);
    return true;
  });
  await assert.rejects(client.storeSignal("x", "Stop" as "Cancel"), /kind: expected "Cancel" or "Pause"/);
  await assert.rejects(client.claimTask("x", taskId("t"), "w", { ttlMs: -1 }), /ttlMs: expected a non-negative number/);
  await assert.rejects(client.findAvailableTasks("w", { limit: -1 }), expectError(InvalidArgumentError, undefined, "InvalidArgument"));
});

test("FAILED_PRECONDITION: CannotCancelError, CannotPauseError, FailedPreconditionError", async () => {
  const done = uniqueId("done");
  await seedCompleted(client, done);
  await assert.rejects(client.storeSignal(done, "Cancel"), expectError(CannotCancelError, Status.FAILED_PRECONDITION, "CannotCancel"));
  await assert.rejects(client.storeSignal(done, "Pause"), expectError(CannotPauseError, Status.FAILED_PRECONDITION, "CannotPause"));
  const running = uniqueId("running");
  await seedAtTask(client, running);
  await assert.rejects(client.unpause(running), (error: unknown) => {
    assert.ok(error instanceof FailedPreconditionError && error.code === Status.FAILED_PRECONDITION, String(error));
    return true;
  });
});

test("ABORTED: ClaimLostError", async () => {
  const id = uniqueId("claimed");
  await seedAtTask(client, id);
  assert.ok(await client.claimTask(id, taskId("task-1"), "owner", { ttlMs: 60_000 }));
  await assert.rejects(client.extendTaskClaim(id, taskId("task-1"), "thief", 1000), expectError(ClaimLostError, Status.ABORTED, "ClaimLost"));
});

test("DATA_LOSS: SerializationError for a blob of another codec", async () => {
  const protobufService = await startService(databaseUrl, "--codec", "protobuf");
  const writer = await connect(protobufService.target);
  try {
    const id = uniqueId("other-codec");
    await seedAtTask(writer, id);
    await assert.rejects(client.loadSnapshot(id), (error: unknown) => {
      expectError(SerializationError, Status.DATA_LOSS, "Serialization")(error);
      assert.match((error as Error).message, /codec/);
      return true;
    });
  } finally {
    writer.close();
    await protobufService.stop();
  }
});

test("RESOURCE_EXHAUSTED: ResourceExhaustedError for a message over the service's limit", async () => {
  await assert.rejects(
    client.saveTaskResult(uniqueId("big"), taskId("t"), Buffer.alloc(100_000)),
    expectError(ResourceExhaustedError, Status.RESOURCE_EXHAUSTED),
  );
});

test("DEADLINE_EXCEEDED: DeadlineExceededError when timeoutMs passes", async () => {
  const hasty = await connect(service.target, { timeoutMs: 0 });
  try {
    await assert.rejects(hasty.loadSnapshot("anything"), expectError(DeadlineExceededError, Status.DEADLINE_EXCEEDED));
  } finally {
    hasty.close();
  }
});

test("UNAVAILABLE: UnavailableError once the retries are spent", async () => {
  const nowhere = await connect("127.0.0.1:1", { retryDelaysMs: [10, 20] });
  try {
    const started = Date.now();
    await assert.rejects(nowhere.loadSnapshot("x"), expectError(UnavailableError, Status.UNAVAILABLE));
    assert.ok(Date.now() - started >= 30, "retried with back-off");
  } finally {
    nowhere.close();
  }
});

test("UNAUTHENTICATED without the token; TLS with a bearer token works", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "sayiir-ts-pki-"));
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  writeFileSync(path.join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=ts-client-test-ca");
  openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=server");
  openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.ext");
  const token = "ts-client-token-0123456789";
  const secure = await startService(
    databaseUrl,
    "--tls-cert-file",
    path.join(dir, "server.pem"),
    "--tls-key-file",
    path.join(dir, "server.key"),
    "--auth-tokens",
    token,
  );
  const rootCerts = readFileSync(path.join(dir, "ca.pem"));
  const anonymous = await connect(secure.target, { tls: { rootCerts } });
  const authorized = await connect(secure.target, { tls: { rootCerts }, token });
  try {
    await assert.rejects(anonymous.listSnapshotsPage(null, 1), expectError(UnauthenticatedError, Status.UNAUTHENTICATED));
    const id = uniqueId("secure");
    await seedAtTask(authorized, id);
    assert.equal((await authorized.loadSnapshot(id)).instanceId, id);
  } finally {
    anonymous.close();
    authorized.close();
    await secure.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("PERMISSION_DENIED: PermissionDeniedError for a call the token's role does not allow", async () => {
  const reader = "ts-client-reader-token-0123456789";
  const roles = await startService(databaseUrl, "--auth-tokens", `${reader} reader`);
  const client = await connect(roles.target, { token: reader });
  const ops = await connectOperator(roles.target, { token: reader });
  try {
    await assert.rejects(seedAtTask(client, uniqueId("by-reader")), expectError(PermissionDeniedError, Status.PERMISSION_DENIED));
    await assert.rejects(ops.cancel(["anything"]), expectError(PermissionDeniedError, Status.PERMISSION_DENIED));
    await assert.rejects(client.loadSnapshot("no-such-instance"), NotFoundError, "reads are allowed");
    assert.ok(Array.isArray((await ops.listWorkflows({}, { limit: 1 })).workflows));
  } finally {
    client.close();
    ops.close();
    await roles.stop();
  }
});

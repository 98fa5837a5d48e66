// Client behaviour that needs no database: ids, times, conversions, error
// classes from each source, and the retry policy with its idempotency keys
// (against a scripted grpc-js server that fails on purpose).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import {
  Metadata,
  Server,
  ServerCredentials,
  status as Status,
  type ServerDuplexStream,
  type ServiceError,
} from "@grpc/grpc-js";
import {
  BackendError,
  CannotCancelError,
  CannotPauseError,
  ClaimLostError,
  connect,
  DeadlineExceededError,
  errorFromGrpc,
  errorFromStatusDetails,
  FailedPreconditionError,
  InvalidArgumentError,
  newSnapshot,
  NotFoundError,
  PermissionDeniedError,
  REQUEST_ID_METADATA,
  ResourceExhaustedError,
  SerializationError,
  sha256Hex,
  taskId,
  UnauthenticatedError,
  UnavailableError,
  unixNanos,
  OperatorClient,
  SayiirClient,
  type WorkflowSnapshot,
} from "../src/index.js";
import { snapshotFromProto, snapshotToProto } from "../src/convert.js";
import { SignalStoreService } from "../src/gen/sayiir/v1/signal_store.js";
import { SnapshotStoreService } from "../src/gen/sayiir/v1/snapshot_store.js";
import { WorkflowOperatorService } from "../src/gen/sayiir/v1/operator.js";
import {
  TaskClaimStoreService,
  TaskResultStoreService,
  type WorkerSessionReply,
  type WorkerSessionRequest,
} from "../src/gen/sayiir/v1/task_claim_store.js";
import { RETRY_RULES, retryRule } from "../src/transport.js";

function statusDetails(code: number, reason: string, domain: string, metadata: Record<string, string>): Buffer {
  const info = new BinaryWriter().tag(1, WireType.LengthDelimited).string(reason).tag(2, WireType.LengthDelimited).string(domain);
  for (const [key, value] of Object.entries(metadata)) {
    info.tag(3, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string(key).tag(2, WireType.LengthDelimited).string(value).join();
  }
  const any = new BinaryWriter()
    .tag(1, WireType.LengthDelimited)
    .string("type.googleapis.com/google.rpc.ErrorInfo")
    .tag(2, WireType.LengthDelimited)
    .bytes(info.finish());
  const status = new BinaryWriter()
    .tag(1, WireType.Varint)
    .int32(code)
    .tag(2, WireType.LengthDelimited)
    .string("details")
    .tag(3, WireType.LengthDelimited)
    .bytes(any.finish());
  return Buffer.from(status.finish());
}

function serviceError(code: Status, trailers: Record<string, string | Buffer> = {}): ServiceError {
  const metadata = new Metadata();
  for (const [key, value] of Object.entries(trailers)) metadata.set(key, value);
  return Object.assign(new Error("failed"), { code, details: "what went wrong", metadata });
}

describe("ids and times", () => {
  test("a task id is the SHA-256 of its name, as hex (Rust TaskId::from)", () => {
    assert.equal(taskId("a"), "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb");
    assert.equal(sha256Hex("a"), taskId("a"));
  });

  test("nanoseconds read from the service survive a save of the same Date", () => {
    const wire = newWireSnapshot();
    const state = wire.state!.state!;
    assert.equal(state.$case, "cancelled");
    const model = snapshotFromProto(wire);
    const cancelled = model.state;
    assert.equal(cancelled.kind, "Cancelled");
    if (cancelled.kind !== "Cancelled") return;
    assert.equal(cancelled.cancelledAt.toISOString(), "2026-01-02T03:04:05.123Z");
    assert.equal(unixNanos(cancelled.cancelledAt), 1767323045_123456789n);
    const back = snapshotToProto(model);
    assert.deepEqual(back.state, wire.state);
    // A Date moved by the caller is written as it now reads.
    cancelled.cancelledAt.setTime(cancelled.cancelledAt.getTime() + 1);
    const moved = snapshotToProto(model).state!.state!;
    assert.equal(moved.$case === "cancelled" && moved.value.cancelledAt!.nanos, 124_000_000);
  });

  test("bad ids, times and payloads are InvalidArgumentError naming the field", () => {
    const bad: WorkflowSnapshot[] = [
      { ...newSnapshot("x", "wf"), definitionHash: "not-hex" },
      { ...newSnapshot("x", "wf"), createdAt: new Date(Number.NaN) },
      { ...newSnapshot("x", "wf"), state: { kind: "InProgress", position: { kind: "AtTask", taskId: "ab" }, completedTasks: [], lastCompletedTaskId: null } },
      { ...newSnapshot("x", "wf"), state: { kind: "Nope" } as unknown as WorkflowSnapshot["state"] },
    ];
    const fields = ["snapshot.definitionHash", "snapshot.createdAt", "snapshot.state.position.taskId", "snapshot.state"];
    bad.forEach((snapshot, i) => {
      assert.throws(() => snapshotToProto(snapshot), (error: unknown) => {
        assert.ok(error instanceof InvalidArgumentError, String(error));
        assert.ok(error.message.startsWith(`${fields[i]}:`), error.message);
        return true;
      });
    });
  });
});

function newWireSnapshot() {
  const model = newSnapshot("nanos", "wf");
  const wire = snapshotToProto(model);
  wire.state = {
    state: {
      $case: "cancelled",
      value: {
        reason: "r",
        cancelledBy: undefined,
        cancelledAt: { seconds: 1767323045n, nanos: 123_456_789 },
        completedTasks: [{ taskId: Buffer.from(taskId("t"), "hex"), output: Buffer.from("out") }],
        interruptedAtTask: undefined,
      },
    },
  };
  return wire;
}

describe("error classes", () => {
  test("each status maps to its class", () => {
    const cases: [Status, typeof BackendError][] = [
      [Status.NOT_FOUND, NotFoundError],
      [Status.DATA_LOSS, SerializationError],
      [Status.FAILED_PRECONDITION, FailedPreconditionError],
      [Status.ABORTED, ClaimLostError],
      [Status.INVALID_ARGUMENT, InvalidArgumentError],
      [Status.UNAVAILABLE, UnavailableError],
      [Status.DEADLINE_EXCEEDED, DeadlineExceededError],
      [Status.UNAUTHENTICATED, UnauthenticatedError],
      [Status.PERMISSION_DENIED, PermissionDeniedError],
      [Status.RESOURCE_EXHAUSTED, ResourceExhaustedError],
      [Status.INTERNAL, BackendError],
    ];
    for (const [code, cls] of cases) {
      const error = errorFromGrpc(serviceError(code));
      assert.equal(error.constructor, cls, Status[code]);
      assert.equal(error.code, code);
      assert.equal(error.message, "what went wrong");
    }
  });

  test("the sayiir-error trailer names the variant FAILED_PRECONDITION shares", () => {
    assert.ok(errorFromGrpc(serviceError(Status.FAILED_PRECONDITION, { "sayiir-error": "CannotCancel" })) instanceof CannotCancelError);
    const pause = errorFromGrpc(serviceError(Status.FAILED_PRECONDITION, { "sayiir-error": "CannotPause" }));
    assert.ok(pause instanceof CannotPauseError && pause instanceof FailedPreconditionError);
    assert.equal(pause.kind, "CannotPause");
    // "Backend" is the catch-all: the status says more.
    assert.ok(errorFromGrpc(serviceError(Status.UNAVAILABLE, { "sayiir-error": "Backend" })) instanceof UnavailableError);
  });

  test("google.rpc.Status details are read first, with the ErrorInfo metadata", () => {
    const details = statusDetails(Status.FAILED_PRECONDITION, "CannotPause", "sayiir.v1", { instance_id: "order-1" });
    const error = errorFromGrpc(
      serviceError(Status.FAILED_PRECONDITION, { "grpc-status-details-bin": details, "sayiir-error": "CannotCancel" }),
    );
    assert.ok(error instanceof CannotPauseError, error.constructor.name);
    assert.deepEqual(error.info, { instance_id: "order-1" });
    // Another domain's ErrorInfo is not ours: fall back to the trailer.
    const foreign = statusDetails(Status.FAILED_PRECONDITION, "CannotPause", "example.com", {});
    assert.ok(
      errorFromGrpc(serviceError(Status.FAILED_PRECONDITION, { "grpc-status-details-bin": foreign, "sayiir-error": "CannotCancel" })) instanceof
        CannotCancelError,
    );
    // A WorkerSession error reply: the same bytes, alone.
    const streamed = errorFromStatusDetails(statusDetails(Status.INVALID_ARGUMENT, "InvalidArgument", "sayiir.v1", { field: "worker_id" }));
    assert.ok(streamed instanceof InvalidArgumentError);
    assert.deepEqual([streamed.code, streamed.message, streamed.info], [Status.INVALID_ARGUMENT, "details", { field: "worker_id" }]);
    assert.ok(errorFromStatusDetails(statusDetails(Status.FAILED_PRECONDITION, "CannotCancel", "sayiir.v1", {})) instanceof CannotCancelError);
    assert.equal(errorFromStatusDetails(Buffer.from([0xff, 0xff])).constructor, BackendError);
    // Garbage details are ignored, the code still classifies.
    assert.ok(errorFromGrpc(serviceError(Status.ABORTED, { "grpc-status-details-bin": Buffer.from([0xff, 0xff]) })) instanceof ClaimLostError);
  });
});

describe("retries and idempotency keys", () => {
  let server: Server;
  let client: SayiirClient;
  let token: SayiirClient;
  const seen: { method: string; requestId: string; authorization: string | undefined }[] = [];
  // Per method: the statuses to fail with before answering.
  const script = new Map<string, Status[]>();

  function handler(method: string, reply: object) {
    return (call: { metadata: Metadata }, callback: (error: Partial<ServiceError> | null, value?: object) => void) => {
      seen.push({
        method,
        requestId: String(call.metadata.get(REQUEST_ID_METADATA)[0]),
        authorization: call.metadata.get("authorization")[0]?.toString(),
      });
      const failure = script.get(method)?.shift();
      if (failure !== undefined) callback({ code: failure, details: `scripted ${Status[failure]}` });
      else callback(null, reply);
    };
  }

  before(async () => {
    server = new Server();
    const snapshot = snapshotToProto(newSnapshot("i", "wf"));
    server.addService(SnapshotStoreService, {
      loadSnapshot: handler("LoadSnapshot", { snapshot, status: 1, historyVersion: 1 }),
      deleteSnapshot: handler("DeleteSnapshot", {}),
    });
    server.addService(SignalStoreService, { sendEvent: handler("SendEvent", { resumed: false }) });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    client = await connect(`127.0.0.1:${port}`, { retryDelaysMs: [10, 20, 40] });
    token = await connect(`127.0.0.1:${port}`, { token: "s3cret" });
  });

  after(() => {
    client?.close();
    token?.close();
    server?.forceShutdown();
  });

  test("every RPC of the contract has a client method and a retry decision", () => {
    const methods = (cls: { prototype: object }) => cls.prototype as Record<string, unknown>;
    // The operator methods take the Python OperatorClient's names.
    const operatorNames: Record<string, string> = {
      listWorkflowHistory: "workflowHistory",
      getWorkflowVersion: "workflowVersion",
      actOnWorkflows: "act",
    };
    const services: [object, Record<string, unknown>, Record<string, string>][] = [
      [SnapshotStoreService, methods(SayiirClient), {}],
      [SignalStoreService, methods(SayiirClient), {}],
      [TaskClaimStoreService, methods(SayiirClient), {}],
      [TaskResultStoreService, methods(SayiirClient), {}],
      [WorkflowOperatorService, methods(OperatorClient), operatorNames],
    ];
    for (const [service, client, rename] of services) {
      for (const [name, method] of Object.entries(service) as [string, { path: string; responseStream: boolean }][]) {
        const methodName = rename[name] ?? name;
        assert.equal(typeof client[methodName], "function", `${method.path} has no client method ${methodName}`);
        if (method.responseStream) continue; // streams are reopened by the caller, never retried
        const rpc = method.path.slice(method.path.lastIndexOf("/") + 1);
        assert.ok(rpc in RETRY_RULES, `no retry decision for ${method.path}`);
      }
    }
  });

  test("the rules follow the Python client", () => {
    assert.equal(retryRule("/sayiir.v1.SnapshotStore/LoadSnapshot"), "safe");
    assert.equal(retryRule("/sayiir.v1.SnapshotStore/DeleteSnapshot"), "done-if-not-found");
    for (const name of ["SendEvent", "ConsumeEvent", "CheckAndCancel", "CheckAndPause", "CheckControlSignals", "Unpause", "CompleteTask", "ClaimAvailableTasks", "ActOnWorkflows", "ReleaseClaim"]) {
      assert.equal(retryRule(`/sayiir.v1.X/${name}`), "never", name);
    }
  });

  test("a safe call is retried on UNAVAILABLE with one request id", async () => {
    seen.length = 0;
    script.set("LoadSnapshot", [Status.UNAVAILABLE, Status.UNAVAILABLE]);
    const loaded = await client.loadSnapshot("i");
    assert.equal(loaded.instanceId, "i");
    assert.equal(seen.length, 3);
    assert.equal(new Set(seen.map((s) => s.requestId)).size, 1);
    assert.match(seen[0].requestId, /^[0-9a-f-]{36}$/);
    await client.loadSnapshot("i");
    assert.notEqual(seen[3].requestId, seen[0].requestId, "each logical call has its own id");
  });

  test("a safe call gives up after its back-off with UnavailableError", async () => {
    seen.length = 0;
    script.set("LoadSnapshot", [Status.UNAVAILABLE, Status.UNAVAILABLE, Status.UNAVAILABLE, Status.UNAVAILABLE]);
    await assert.rejects(client.loadSnapshot("i"), UnavailableError);
    assert.equal(seen.length, 4, "one attempt and three retries");
  });

  test("other statuses are never retried", async () => {
    seen.length = 0;
    script.set("LoadSnapshot", [Status.NOT_FOUND]);
    await assert.rejects(client.loadSnapshot("i"), NotFoundError);
    assert.equal(seen.length, 1);
  });

  test("a call a repeat would double is not retried", async () => {
    seen.length = 0;
    script.set("SendEvent", [Status.UNAVAILABLE]);
    await assert.rejects(client.sendEvent("i", "go", "{}"), UnavailableError);
    assert.equal(seen.length, 1);
  });

  test("a delete whose retry finds nothing was done by the first attempt", async () => {
    seen.length = 0;
    script.set("DeleteSnapshot", [Status.UNAVAILABLE, Status.NOT_FOUND]);
    await client.deleteSnapshot("i");
    assert.equal(seen.length, 2);
    script.set("DeleteSnapshot", [Status.NOT_FOUND]);
    await assert.rejects(client.deleteSnapshot("i"), NotFoundError, "a first NOT_FOUND is the caller's");
  });

  test("the token goes as a bearer authorization header", async () => {
    seen.length = 0;
    await token.loadSnapshot("i");
    assert.equal(seen[0].authorization, "Bearer s3cret");
    await client.loadSnapshot("i");
    assert.equal(seen[1].authorization, undefined);
  });
});

describe("worker session retries", () => {
  let server: Server;
  let client: SayiirClient;
  // Each request as the scripted server saw it: its id, the stream's number, the token.
  const seen: { requestId: string; stream: number; authorization: string | undefined }[] = [];
  let streams = 0;

  // The worker id says what the server does with a request's first attempts:
  // "reply-unavailable" answers UNAVAILABLE once, "break" ends the stream
  // UNAVAILABLE without answering, "always-unavailable" never succeeds.
  function session(call: ServerDuplexStream<WorkerSessionRequest, WorkerSessionReply>) {
    const stream = ++streams;
    const authorization = call.metadata.get("authorization")[0]?.toString();
    call.on("data", (request: WorkerSessionRequest) => {
      const attempts = seen.filter((s) => s.requestId === request.requestId).length;
      seen.push({ requestId: request.requestId, stream, authorization });
      const worker = request.call?.$case === "claimAvailableTasks" ? request.call.value.workerId : "";
      const unavailable = statusDetails(Status.UNAVAILABLE, "Unavailable", "sayiir.v1", {});
      if (worker === "break" && attempts === 0) {
        call.emit("error", { code: Status.UNAVAILABLE, details: "scripted break" });
      } else if (worker === "always-unavailable" || (worker === "reply-unavailable" && attempts === 0)) {
        call.write({ requestId: request.requestId, result: { $case: "error", value: unavailable }, batch: [] });
      } else {
        call.write({ requestId: request.requestId, result: { $case: "claimAvailableTasks", value: { tasks: [], moreReady: false } }, batch: [] });
      }
    });
    call.on("end", () => call.end());
  }

  before(async () => {
    server = new Server();
    server.addService(TaskClaimStoreService, { workerSession: session });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    client = await connect(`127.0.0.1:${port}`, { retryDelaysMs: [10, 20], token: "s3cret" });
  });

  after(() => {
    client?.close();
    server?.forceShutdown();
  });

  test("an UNAVAILABLE reply is repeated with its request id on the same stream", async () => {
    seen.length = 0;
    const worker = client.workerSession();
    assert.deepEqual(await worker.claimTasks("reply-unavailable"), []);
    assert.equal(seen.length, 2);
    assert.equal(seen[0].requestId, seen[1].requestId);
    assert.match(seen[0].requestId, /^[0-9a-f-]{36}$/);
    assert.equal(seen[0].stream, seen[1].stream);
    assert.equal(seen[0].authorization, "Bearer s3cret", "the token goes on the stream");
    await worker.close();
  });

  test("a broken stream's unanswered request is repeated with its id on a new stream", async () => {
    seen.length = 0;
    const worker = client.workerSession();
    assert.deepEqual(await worker.claimTasks("break"), []);
    assert.equal(seen.length, 2);
    assert.equal(seen[0].requestId, seen[1].requestId);
    assert.notEqual(seen[0].stream, seen[1].stream);
    // The new stream carries on.
    assert.deepEqual(await worker.claimTasks("w1"), []);
    assert.equal(seen[2].stream, seen[1].stream);
    assert.notEqual(seen[2].requestId, seen[1].requestId, "each logical request has its own id");
    await worker.close();
  });

  test("UNAVAILABLE past the retry delays is UnavailableError", async () => {
    seen.length = 0;
    const worker = client.workerSession();
    await assert.rejects(worker.claimTasks("always-unavailable"), UnavailableError);
    assert.equal(seen.length, 3, "one attempt and two repeats");
    worker.cancel();
  });
});

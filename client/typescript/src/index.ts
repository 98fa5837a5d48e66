// sayiir-grpc-client: the typed TypeScript client of sayiir-grpc.
export { connect, SayiirClient } from "./client.js";
export { connectOperator, OperatorClient } from "./operator.js";
export { WorkerSession } from "./session.js";
export type {
  ActionOptions,
  ActionResult,
  ClaimInfo,
  HistoryEntry,
  Targets,
  WorkflowAction,
  WorkflowDescription,
  WorkflowFilter,
  WorkflowSummary,
} from "./operator.js";
export type { ClaimAvailableOptions, CompletedTask, CompleteTaskOptions, FindOptions, SnapshotPage } from "./client.js";
export {
  BackendError,
  CannotCancelError,
  CannotPauseError,
  ClaimLostError,
  DeadlineExceededError,
  errorFromGrpc,
  errorFromStatusDetails,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  SerializationError,
  UnauthenticatedError,
  UnavailableError,
} from "./errors.js";
export { bytesToHex, definitionHash, hexToBytes, sha256Hex, taskId } from "./ids.js";
export type { Hex32 } from "./ids.js";
export {
  atTask,
  currentTaskId,
  finalOutput,
  getTaskResult,
  isTerminal,
  markCompleted,
  markFailed,
  newSnapshot,
  updatePosition,
} from "./model.js";
export type * from "./model.js";
export { unixNanos } from "./time.js";
export { DEFAULT_RETRY_DELAYS_MS, DEFAULT_TIMEOUT_MS, REQUEST_ID_METADATA } from "./transport.js";
export type { ConnectOptions, TlsOptions } from "./transport.js";

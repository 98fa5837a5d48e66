// The error variants of the Rust `BackendError`, as classes. The variant
// comes from the standard rich error model when the service sends it
// (google.rpc.Status in the `grpc-status-details-bin` trailer, with a
// google.rpc.ErrorInfo whose domain is "sayiir.v1" and whose reason is the
// variant), else from the `sayiir-error` trailer, else from the status code.

import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";

export const ERROR_KIND_METADATA = "sayiir-error";
export const STATUS_DETAILS_METADATA = "grpc-status-details-bin";
export const ERROR_DOMAIN = "sayiir.v1";
const ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo";

/** Base of every error the client raises (Rust `BackendError::Backend`). */
export class BackendError extends Error {
  /** The variant name, as the service names it ("NotFound", "ClaimLost", ...). */
  static readonly kind: string = "Backend";
  /** The gRPC status the service answers this variant with. */
  static readonly grpcStatus: Status = Status.INTERNAL;

  /** The gRPC status code of the failed call (undefined for client-side checks). */
  readonly code: Status | undefined;
  /** The variant name the service sent, or this class's. */
  readonly kind: string;
  /** ErrorInfo metadata (e.g. the offending field or instance), when the service sent it. */
  readonly info: Readonly<Record<string, string>>;

  constructor(message: string, options: { code?: Status; kind?: string; info?: Record<string, string> } = {}) {
    super(message);
    this.name = new.target.name;
    this.code = options.code;
    this.kind = options.kind ?? (new.target as typeof BackendError).kind;
    this.info = options.info ?? {};
  }
}

/** The workflow instance (or the thing asked for) does not exist. */
export class NotFoundError extends BackendError {
  static override readonly kind: string = "NotFound";
  static override readonly grpcStatus: Status = Status.NOT_FOUND;
}

/** A stored snapshot blob could not be decoded (for example, another codec wrote it). */
export class SerializationError extends BackendError {
  static override readonly kind: string = "Serialization";
  static override readonly grpcStatus: Status = Status.DATA_LOSS;
}

/** The workflow's state forbids the call (e.g. unpause of a running one); the message names the state. */
export class FailedPreconditionError extends BackendError {
  static override readonly kind: string = "FailedPrecondition";
  static override readonly grpcStatus: Status = Status.FAILED_PRECONDITION;
}

/** Cancel refused: the workflow is already Completed or Failed. */
export class CannotCancelError extends FailedPreconditionError {
  static override readonly kind: string = "CannotCancel";
}

/** Pause refused: the workflow is already Completed, Failed or Cancelled. */
export class CannotPauseError extends FailedPreconditionError {
  static override readonly kind: string = "CannotPause";
}

/** The task claim belongs to another worker or task, or has expired. */
export class ClaimLostError extends BackendError {
  static override readonly kind: string = "ClaimLost";
  static override readonly grpcStatus: Status = Status.ABORTED;
}

/** The request was malformed; the message names the field. Also raised before sending, for bad ids or times. */
export class InvalidArgumentError extends BackendError {
  static override readonly kind: string = "InvalidArgument";
  static override readonly grpcStatus: Status = Status.INVALID_ARGUMENT;
}

/** The service or its database cannot be reached right now; safe calls were already retried. */
export class UnavailableError extends BackendError {
  static override readonly kind: string = "Unavailable";
  static override readonly grpcStatus: Status = Status.UNAVAILABLE;
}

/** The call's deadline passed (the client's `timeoutMs`, or the database's statement timeout). */
export class DeadlineExceededError extends BackendError {
  static override readonly kind: string = "DeadlineExceeded";
  static override readonly grpcStatus: Status = Status.DEADLINE_EXCEEDED;
}

/** The service requires a bearer token and none, or an unknown one, was sent. */
export class UnauthenticatedError extends BackendError {
  static override readonly kind: string = "Unauthenticated";
  static override readonly grpcStatus: Status = Status.UNAUTHENTICATED;
}

/** The token's role does not allow this call. */
export class PermissionDeniedError extends BackendError {
  static override readonly kind: string = "PermissionDenied";
  static override readonly grpcStatus: Status = Status.PERMISSION_DENIED;
}

/** A message exceeded the service's size limit. */
export class ResourceExhaustedError extends BackendError {
  static override readonly kind: string = "ResourceExhausted";
  static override readonly grpcStatus: Status = Status.RESOURCE_EXHAUSTED;
}

type ErrorClass = typeof BackendError;

const BY_STATUS = new Map<Status, ErrorClass>(
  [
    NotFoundError,
    SerializationError,
    FailedPreconditionError,
    ClaimLostError,
    InvalidArgumentError,
    UnavailableError,
    DeadlineExceededError,
    UnauthenticatedError,
    PermissionDeniedError,
    ResourceExhaustedError,
  ].map((cls) => [cls.grpcStatus, cls]),
);

// CannotCancel and CannotPause share FAILED_PRECONDITION: only the variant tells them apart.
const BY_KIND = new Map<string, ErrorClass>(
  [...BY_STATUS.values(), CannotCancelError, CannotPauseError].map((cls) => [cls.kind, cls]),
);

interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/** The sayiir.v1 ErrorInfo of a serialized google.rpc.Status, if it carries one. */
export function errorInfoFromStatusDetails(bytes: Uint8Array): ErrorInfo | undefined {
  try {
    const status = new BinaryReader(bytes);
    while (status.pos < status.len) {
      const [field, wireType] = status.tag();
      if (field !== 3) {
        status.skip(wireType);
        continue;
      }
      // google.protobuf.Any: type_url = 1, value = 2.
      const any = new BinaryReader(status.bytes());
      let typeUrl = "";
      let value: Uint8Array | undefined;
      while (any.pos < any.len) {
        const [anyField, anyWire] = any.tag();
        if (anyField === 1) typeUrl = any.string();
        else if (anyField === 2) value = any.bytes();
        else any.skip(anyWire);
      }
      if (typeUrl === ERROR_INFO_TYPE && value) {
        const info = decodeErrorInfo(value);
        if (info.domain === ERROR_DOMAIN) return info;
      }
    }
  } catch {
    // A malformed trailer is ignored: the status code still classifies the error.
  }
  return undefined;
}

function decodeErrorInfo(bytes: Uint8Array): ErrorInfo {
  // google.rpc.ErrorInfo: reason = 1, domain = 2, map<string, string> metadata = 3.
  const reader = new BinaryReader(bytes);
  const info: ErrorInfo = { reason: "", domain: "", metadata: {} };
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) info.reason = reader.string();
    else if (field === 2) info.domain = reader.string();
    else if (field === 3) {
      const entry = new BinaryReader(reader.bytes());
      let key = "";
      let value = "";
      while (entry.pos < entry.len) {
        const [entryField, entryWire] = entry.tag();
        if (entryField === 1) key = entry.string();
        else if (entryField === 2) value = entry.string();
        else entry.skip(entryWire);
      }
      info.metadata[key] = value;
    } else reader.skip(wireType);
  }
  return info;
}

function firstValue(metadata: Metadata | undefined, key: string): string | Buffer | undefined {
  return metadata?.get(key)[0];
}

function classify(code: Status, text: string, info: ErrorInfo | undefined, trailer: string | undefined): BackendError {
  const kind = info?.reason || trailer;
  const byStatus = BY_STATUS.get(code);
  let cls = (kind && BY_KIND.get(kind)) || byStatus || BackendError;
  // "Backend" is the Rust catch-all; the status code says more (e.g. UNAVAILABLE).
  if (cls === BackendError && byStatus) cls = byStatus;
  return new cls(text, { code, kind: kind || cls.kind, ...(info ? { info: info.metadata } : {}) });
}

/** The BackendError subclass matching a failed call's status details, `sayiir-error` trailer and code. */
export function errorFromGrpc(error: ServiceError, method?: string): BackendError {
  const metadata = error.metadata instanceof Metadata ? error.metadata : undefined;
  const details = firstValue(metadata, STATUS_DETAILS_METADATA);
  const info = details instanceof Uint8Array ? errorInfoFromStatusDetails(details) : undefined;
  const trailer = firstValue(metadata, ERROR_KIND_METADATA);
  const text = error.details || error.message;
  return classify(error.code, method ? `${method}: ${text}` : text, info, trailer?.toString());
}

/**
 * The BackendError subclass of a serialized google.rpc.Status (a
 * WorkerSession error reply: the bytes a unary call sends as its
 * `grpc-status-details-bin` trailer). Undecodable bytes give a BackendError.
 */
export function errorFromStatusDetails(bytes: Uint8Array, method?: string): BackendError {
  // google.rpc.Status: code = 1, message = 2 (details = 3, read by errorInfoFromStatusDetails).
  let code: Status = Status.UNKNOWN;
  let message = "";
  try {
    const reader = new BinaryReader(bytes);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 1 && wireType === WireType.Varint) code = reader.int32();
      else if (field === 2 && wireType === WireType.LengthDelimited) message = reader.string();
      else reader.skip(wireType);
    }
  } catch {
    return new BackendError(`${method ? `${method}: ` : ""}undecodable error status`, { code: Status.UNKNOWN });
  }
  return classify(code, method ? `${method}: ${message}` : message, errorInfoFromStatusDetails(bytes), undefined);
}

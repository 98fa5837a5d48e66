// Ids are 32-byte SHA-256 values on the wire; in this package they are
// lowercase hex strings (64 characters), as the engine's JSON blobs show them.
// A Sayiir task or workflow named "charge-card" has the id sha256("charge-card"),
// exactly as Rust's `TaskId::from("charge-card")`.

import { createHash } from "node:crypto";
import { InvalidArgumentError } from "./errors.js";

/** A 32-byte id (task, node or definition hash) as 64 lowercase hex characters. */
export type Hex32 = string;

const HEX32 = /^[0-9a-f]{64}$/;

/** The id of a name: the SHA-256 of its UTF-8 bytes, as hex. */
export function sha256Hex(name: string): Hex32 {
  return createHash("sha256").update(name, "utf8").digest("hex");
}

/** The task id of a task name (`TaskId::from(name)`). */
export const taskId = sha256Hex;

/** The definition hash of a workflow name. */
export const definitionHash = sha256Hex;

/** 32 raw bytes of a hex id; InvalidArgumentError naming `field` when it is not 64 hex characters. */
export function hexToBytes(value: string, field: string): Buffer {
  const hex = typeof value === "string" ? value.toLowerCase() : value;
  if (typeof hex !== "string" || !HEX32.test(hex)) {
    throw new InvalidArgumentError(`${field}: expected 64 hex characters (a 32-byte id), got ${JSON.stringify(value)}`);
  }
  return Buffer.from(hex, "hex");
}

export function bytesToHex(value: Uint8Array): Hex32 {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("hex");
}

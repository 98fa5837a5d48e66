// Times are `Date`s and durations are milliseconds (a number, fractions
// allowed). The service keeps nanoseconds; a Date holds milliseconds. So that
// a snapshot loaded and saved back keeps its exact times, the sub-millisecond
// part of every time read from the service is remembered for that Date object
// and written again as long as the Date still shows the same instant.

import { InvalidArgumentError } from "./errors.js";
import { Duration } from "./gen/google/protobuf/duration.js";
import { Timestamp } from "./gen/google/protobuf/timestamp.js";

const subMillisecondNanos = new WeakMap<Date, { ms: number; nanos: number }>();

export function dateFromTimestamp(value: Timestamp): Date {
  const date = new Date(Number(value.seconds) * 1000 + Math.floor(value.nanos / 1_000_000));
  const rest = value.nanos % 1_000_000;
  if (rest !== 0) subMillisecondNanos.set(date, { ms: date.getTime(), nanos: rest });
  return date;
}

/** Nanoseconds since the Unix epoch, exact for times read from the service. */
export function unixNanos(date: Date, field = "time"): bigint {
  const ms = checkedMs(date, field);
  const kept = subMillisecondNanos.get(date);
  const extra = kept && kept.ms === ms ? kept.nanos : 0;
  return BigInt(ms) * 1_000_000n + BigInt(extra);
}

function checkedMs(date: Date, field: string): number {
  const ms = date instanceof Date ? date.getTime() : Number.NaN;
  if (!Number.isFinite(ms)) throw new InvalidArgumentError(`${field}: expected a valid Date, got ${String(date)}`);
  return ms;
}

export function timestampFromDate(date: Date, field: string): Timestamp {
  const total = unixNanos(date, field);
  let seconds = total / 1_000_000_000n;
  let nanos = total % 1_000_000_000n;
  if (nanos < 0n) {
    seconds -= 1n;
    nanos += 1_000_000_000n;
  }
  return { seconds, nanos: Number(nanos) };
}

export function msFromDuration(value: Duration): number {
  return Number(value.seconds) * 1000 + value.nanos / 1_000_000;
}

export function durationFromMs(ms: number, field: string): Duration {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
    throw new InvalidArgumentError(`${field}: expected a non-negative number of milliseconds, got ${String(ms)}`);
  }
  const total = BigInt(Math.round(ms * 1_000_000));
  return { seconds: total / 1_000_000_000n, nanos: Number(total % 1_000_000_000n) };
}

/** Whole Unix seconds, as the snapshot's created_at/updated_at and claim times are stored. */
export function dateFromUnixSeconds(seconds: bigint): Date {
  return new Date(Number(seconds) * 1000);
}

export function unixSecondsFromDate(date: Date, field: string): bigint {
  const ms = checkedMs(date, field);
  return BigInt(Math.floor(ms / 1000));
}

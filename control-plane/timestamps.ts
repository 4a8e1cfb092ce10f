import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";

/** Milliseconds since the epoch of an optional Timestamp; 0 when unset. */
export function timestampMs(ts: Timestamp | undefined): number {
  return ts ? timestampDate(ts).getTime() : 0;
}

/** A Timestamp for a millisecond instant, or undefined for 0. */
export function msTimestamp(ms: number): Timestamp | undefined {
  return ms > 0 ? timestampFromMs(ms) : undefined;
}

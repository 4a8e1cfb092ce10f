import { timestampDate } from "@bufbuild/protobuf/wkt";
/** Milliseconds since the epoch of an optional Timestamp; 0 when unset. */
export function timestampMs(ts) {
    return ts ? timestampDate(ts).getTime() : 0;
}
/** A Timestamp for a millisecond instant, or undefined for 0 (a literal: on every decision, create() is measurable). */
export function msTimestamp(ms) {
    if (!(ms > 0))
        return undefined;
    const seconds = Math.floor(ms / 1000);
    return { $typeName: "google.protobuf.Timestamp", seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1_000_000) };
}
/** 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range a Timestamp may hold. */
const minSeconds = -62135596800n;
const maxSeconds = 253402300799n;
/** True when a Timestamp is a real instant (years 0001-9999, nanos 0-999,999,999); senders can put anything in it. */
export function isValidTimestamp(ts) {
    return ts.seconds >= minSeconds && ts.seconds <= maxSeconds && ts.nanos >= 0 && ts.nanos <= 999_999_999;
}
//# sourceMappingURL=timestamps.js.map
import { Window } from "../gen/admission/v1/policy_pb.js";
const fixedMs = {
    [Window.SECOND]: 1_000,
    [Window.MINUTE]: 60_000,
    [Window.HOUR]: 3_600_000,
    [Window.DAY]: 86_400_000,
};
/** The window containing `nowMs`. DAY starts at 00:00Z, MONTH on the 1st at 00:00Z. */
export function windowSpan(window, nowMs) {
    const size = fixedMs[window];
    if (size !== undefined) {
        const startMs = Math.floor(nowMs / size) * size;
        return { startMs, endMs: startMs + size };
    }
    if (window === Window.MONTH) {
        const d = new Date(nowMs);
        const startMs = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
        const endMs = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
        return { startMs, endMs };
    }
    throw new Error(`window ${Window[window]} has no time span`);
}
/** Windows that count over time (as opposed to per-request caps and concurrency). */
export function isTimeWindow(window) {
    return window === Window.MONTH || fixedMs[window] !== undefined;
}
export const timeWindows = [Window.SECOND, Window.MINUTE, Window.HOUR, Window.DAY, Window.MONTH];
//# sourceMappingURL=windows.js.map
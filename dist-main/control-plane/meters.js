import { LimitKind, Mode, Per, Window } from "../gen/admission/v1/policy_pb.js";
import { windowSpan } from "./windows.js";
const unitOf = {
    [LimitKind.REQUESTS]: "requests",
    [LimitKind.TOKENS]: "tokens",
    [LimitKind.BUDGET_MICROS]: "cost",
    [LimitKind.CONCURRENCY]: "concurrency",
};
/** Keys of a window stay a little past its end so late settles land in it. */
const keySlackMs = 120_000;
export function isMeteredKind(kind) {
    return unitOf[kind] !== undefined;
}
/** Subject id of a limit's `per`: an API key without a user is its own user, a JWT its own key. */
export function subjectId(per, s) {
    switch (per) {
        case Per.USER:
            return s.user || `key:${s.keyId}`;
        case Per.KEY:
            return s.keyId || `jwt:${s.user}`;
        default:
            return s.tenant;
    }
}
export function meterKey(kind, window, task, per, subject, windowStartMs) {
    return kind === LimitKind.CONCURRENCY
        ? `${LimitKind[kind]}|${task || "*"}|${Per[per]}|${subject}`
        : `${LimitKind[kind]}|${Window[window]}|${task || "*"}|${Per[per]}|${subject}|${windowStartMs}`;
}
/**
 * The meters of the metered limits (rates, quotas, budgets, concurrency) for a
 * subject, in the windows containing `atMs`. Lifted limits (-1) have no meter.
 */
export function bindMeters(limits, subject, atMs) {
    const bound = [];
    for (const limit of limits) {
        const unit = unitOf[limit.kind];
        if (!unit || limit.value < 0)
            continue;
        const id = subjectId(limit.per, subject);
        const span = limit.kind === LimitKind.CONCURRENCY ? undefined : windowSpan(limit.window, atMs);
        bound.push({
            limit,
            limitBig: BigInt(limit.value),
            unit,
            subject: id,
            key: meterKey(limit.kind, limit.window, limit.task, limit.per, id, span?.startMs ?? 0),
            resetAtMs: span?.endMs ?? 0,
            expiresAtMs: span ? span.endMs + keySlackMs : 0,
            enforce: limit.mode === Mode.ENFORCE,
        });
    }
    return bound;
}
/**
 * bindMeters, remembered per subject and limit list until the first of their
 * windows ends: a decision then reuses the same meter objects, key strings and
 * counter-store ops instead of formatting nine keys and window spans again.
 * Bounded: when full it starts over.
 */
export class BoundMeterCache {
    maxEntries;
    /**
     * By limit list (which already names the tenant, user record and task, and
     * dies with its snapshot), then by who within it: the key id, or the user for
     * a JWT (users missing from the bundle share one limit list).
     */
    entries = new WeakMap();
    size = 0;
    constructor(maxEntries = 20_000) {
        this.maxEntries = maxEntries;
    }
    /** `limits` must be the snapshot's list for (subject, task): a new list (a new snapshot) rebinds. */
    bind(limits, subject, atMs) {
        let bySubject = this.entries.get(limits);
        if (!bySubject)
            this.entries.set(limits, (bySubject = new Map()));
        const who = subject.keyId || `\u0000${subject.user}`;
        const cached = bySubject.get(who);
        if (cached && atMs >= cached.validFromMs && atMs < cached.validUntilMs)
            return cached;
        const meters = bindMeters(limits, subject, atMs);
        let validFromMs = -Infinity;
        let validUntilMs = Infinity;
        for (const m of meters) {
            if (m.resetAtMs === 0)
                continue;
            validFromMs = Math.max(validFromMs, windowSpan(m.limit.window, atMs).startMs);
            validUntilMs = Math.min(validUntilMs, m.resetAtMs);
        }
        if (!cached) {
            if (this.size >= this.maxEntries) {
                this.entries = new WeakMap();
                this.entries.set(limits, (bySubject = new Map()));
                this.size = 0;
            }
            this.size++;
        }
        const bound = {
            meters,
            ops: meters.map((m) => ({ key: m.key, unit: m.unit, limit: m.limit.value, enforce: m.enforce, expiresAtMs: m.expiresAtMs })),
            validFromMs,
            validUntilMs,
        };
        bySubject.set(who, bound);
        return bound;
    }
}
/** Cost in micro-USD, rounded up (prices are per million tokens); exact in integers. */
export function costMicros(inputTokens, outputTokens, inputMicrosPerMTok, outputMicrosPerMTok) {
    // In doubles while every product and the sum stay exact integers (any realistic price and count), else in BigInt.
    const total = inputTokens * Number(inputMicrosPerMTok) + outputTokens * Number(outputMicrosPerMTok);
    if (total <= Number.MAX_SAFE_INTEGER) {
        const rest = total % 1_000_000;
        return (total - rest) / 1_000_000 + (rest > 0 ? 1 : 0);
    }
    const exact = BigInt(inputTokens) * inputMicrosPerMTok + BigInt(outputTokens) * outputMicrosPerMTok;
    return Number((exact + 999999n) / 1000000n);
}
//# sourceMappingURL=meters.js.map
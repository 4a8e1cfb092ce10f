/** The counter store cannot be reached; the failure policy decides. */
export class CounterStoreUnavailableError extends Error {
    constructor(message, options) {
        super(message, options);
        this.name = "CounterStoreUnavailableError";
    }
}
/** The amount a reservation holds on a meter of the given unit. */
export function reservedAmount(unit, amounts) {
    switch (unit) {
        case "tokens":
            return amounts.tokens;
        case "cost":
            return amounts.costMicros;
        default:
            return 1;
    }
}
/** A lease's meters with the amount each holds. */
export function leaseMeters(meters, amounts) {
    return meters.map((m) => ({ key: m.key, unit: m.unit, amount: reservedAmount(m.unit, amounts), expiresAtMs: m.expiresAtMs }));
}
/** The amount a settled lease charges a meter of the given unit. */
export function settledAmount(unit, usage) {
    switch (unit) {
        case "requests":
            return 1;
        case "tokens":
            return usage.inputTokens + usage.outputTokens;
        case "cost":
            return usage.costMicros;
        case "concurrency":
            return 0;
    }
}
//# sourceMappingURL=counter-store.js.map
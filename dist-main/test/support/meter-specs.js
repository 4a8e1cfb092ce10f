/**
 * The meters and amounts of a reservation written as specs: a reservation holds
 * one token and one cost amount (every tokens meter gets the first, every cost
 * meter the second) and 1 on each requests or concurrency meter.
 */
export function reservationOf(specs) {
    const tokens = specs.find((m) => m.unit === "tokens")?.amount ?? 0;
    const costMicros = specs.find((m) => m.unit === "cost")?.amount ?? 0;
    for (const m of specs) {
        const expected = m.unit === "tokens" ? tokens : m.unit === "cost" ? costMicros : 1;
        if (m.amount !== expected)
            throw new Error(`meter ${m.key}: a reservation puts ${expected} on a ${m.unit} meter, not ${m.amount}`);
    }
    return { meters: specs, amounts: { tokens, costMicros } };
}
//# sourceMappingURL=meter-specs.js.map
import assert from "node:assert/strict";
import { test } from "node:test";
import { LimitKind, LimitSource, Mode, Per, Window } from "../gen/admission/v1/policy_pb.js";
import { bindMeters, BoundMeterCache } from "../control-plane/meters.js";
const limit = (kind, window, per, value) => ({
    kind, window, per, task: "", value, mode: Mode.ENFORCE, source: LimitSource.PLAN, overrides: [],
});
const limits = [
    limit(LimitKind.CONCURRENCY, Window.UNSPECIFIED, Per.TENANT, 10),
    limit(LimitKind.REQUESTS, Window.MINUTE, Per.KEY, 100),
    limit(LimitKind.TOKENS, Window.MONTH, Per.TENANT, 1_000_000),
    limit(LimitKind.TOKENS, Window.DAY, Per.USER, 50_000),
];
const alice = { tenant: "acme", user: "alice", keyId: "k1" };
const t0 = Date.UTC(2026, 10, 23, 10, 15, 30);
test("bound meters are reused within their windows and equal a fresh binding; their ops are what the counter store charges", () => {
    const cache = new BoundMeterCache();
    const first = cache.bind(limits, alice, t0).meters;
    assert.deepEqual(first, bindMeters(limits, alice, t0));
    assert.deepEqual(cache.bind(limits, alice, t0).ops, first.map((m) => ({ key: m.key, unit: m.unit, limit: m.limit.value, enforce: m.enforce, expiresAtMs: m.expiresAtMs })));
    assert.equal(cache.bind(limits, alice, t0 + 29_000).meters, first, "same minute: the same meters");
});
test("a window rolling over rebinds: the minute's key moves, the month's stays", () => {
    const cache = new BoundMeterCache();
    const before = cache.bind(limits, alice, t0).meters;
    const after = cache.bind(limits, alice, Date.UTC(2026, 10, 23, 10, 16)).meters;
    assert.notEqual(after, before);
    assert.deepEqual(after, bindMeters(limits, alice, Date.UTC(2026, 10, 23, 10, 16)));
    const key = (ms, kind, window) => ms.find((m) => m.limit.kind === kind && m.limit.window === window).key;
    assert.notEqual(key(after, LimitKind.REQUESTS, Window.MINUTE), key(before, LimitKind.REQUESTS, Window.MINUTE));
    assert.equal(key(after, LimitKind.TOKENS, Window.MONTH), key(before, LimitKind.TOKENS, Window.MONTH));
});
test("a clock moved back before the cached windows rebinds", () => {
    const cache = new BoundMeterCache();
    cache.bind(limits, alice, t0).meters;
    const earlier = t0 - 60_000;
    assert.deepEqual(cache.bind(limits, alice, earlier).meters, bindMeters(limits, alice, earlier));
});
test("another limit list (a new policy snapshot, another task) or subject binds afresh", () => {
    const cache = new BoundMeterCache();
    const first = cache.bind(limits, alice, t0).meters;
    const reloaded = limits.map((l) => ({ ...l, value: l.value * 2 }));
    const again = cache.bind(reloaded, alice, t0).meters;
    assert.notEqual(again, first);
    assert.equal(again.find((m) => m.limit.kind === LimitKind.CONCURRENCY).limit.value, 20);
    const otherKey = cache.bind(limits, { ...alice, keyId: "k2" }, t0).meters;
    assert.deepEqual(otherKey, bindMeters(limits, { ...alice, keyId: "k2" }, t0));
    assert.notEqual(otherKey.find((m) => m.limit.per === Per.KEY).key, first.find((m) => m.limit.per === Per.KEY).key);
});
test("JWT subjects (no key id) sharing one limit list get their own meters", () => {
    const cache = new BoundMeterCache();
    const bob = { tenant: "acme", user: "bob", keyId: "" };
    const carol = { tenant: "acme", user: "carol", keyId: "" };
    const b = cache.bind(limits, bob, t0).meters;
    const c = cache.bind(limits, carol, t0).meters;
    assert.deepEqual(c, bindMeters(limits, carol, t0));
    assert.notEqual(c.find((m) => m.limit.per === Per.USER).key, b.find((m) => m.limit.per === Per.USER).key);
    assert.equal(cache.bind(limits, bob, t0 + 1_000).meters, b);
});
test("concurrency only: no window, valid at any time; a full cache starts over and still binds right", () => {
    const cache = new BoundMeterCache(2);
    const only = [limits[0]];
    const a = cache.bind(only, alice, t0).meters;
    assert.equal(cache.bind(only, alice, t0 + 400 * 86_400_000).meters, a);
    for (let i = 0; i < 5; i++) {
        const who = { ...alice, keyId: `k${i}` };
        assert.deepEqual(cache.bind(limits, who, t0).meters, bindMeters(limits, who, t0));
    }
});
test("costMicros rounds up exactly, in doubles and past 2^53 in BigInt", async () => {
    const { costMicros } = await import("../control-plane/meters.js");
    const exact = (i, o, ip, op) => Number((BigInt(i) * ip + BigInt(o) * op + 999999n) / 1000000n);
    const cases = [
        [0, 0, 0n, 0n], [1, 0, 1n, 0n], [400, 500, 2500000n, 10000000n], [1_000_000_000, 1_000_000_000, 100000000n, 400000000n],
        [999_999, 1, 1n, 0n], [1_000_000, 0, 1n, 0n], [9_007_199, 0, 1000000000n, 0n], [1, 1, 4503599627370496n, 4503599627370495n],
    ];
    let seed = 7;
    const rand = (n) => (seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648) % n;
    for (let i = 0; i < 2_000; i++)
        cases.push([rand(1_000_000_001), rand(1_000_000_001), BigInt(rand(200_000_000)), BigInt(rand(200_000_000))]);
    for (const [i, o, ip, op] of cases)
        assert.equal(costMicros(i, o, ip, op), exact(i, o, ip, op), `${i} ${o} ${ip} ${op}`);
});
//# sourceMappingURL=meters.test.js.map
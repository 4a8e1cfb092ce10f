import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Redis } from "ioredis";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { windowSpan } from "../control-plane/windows.js";
import { admin, startTestControlPlane } from "./support/control-plane.js";
import { quickDatabase } from "./support/databases.js";
import { deleteKeysWithPrefix } from "./support/redis-keys.js";
import { scenario, secretOf } from "./support/scenario.js";
import { missingService } from "./support/services.js";
import { meterUsed } from "./support/meter-used.js";
test("calendar windows are aligned in UTC", () => {
    const t = Date.UTC(2026, 0, 31, 23, 59, 59, 999);
    assert.deepEqual(windowSpan(Window.MONTH, t), { startMs: Date.UTC(2026, 0, 1), endMs: Date.UTC(2026, 1, 1) });
    assert.deepEqual(windowSpan(Window.DAY, t), { startMs: Date.UTC(2026, 0, 31), endMs: Date.UTC(2026, 1, 1) });
    assert.deepEqual(windowSpan(Window.HOUR, t), { startMs: Date.UTC(2026, 0, 31, 23), endMs: Date.UTC(2026, 1, 1) });
    assert.deepEqual(windowSpan(Window.MINUTE, t), { startMs: Date.UTC(2026, 0, 31, 23, 59), endMs: Date.UTC(2026, 1, 1) });
    assert.deepEqual(windowSpan(Window.SECOND, t), { startMs: Date.UTC(2026, 0, 31, 23, 59, 59), endMs: Date.UTC(2026, 1, 1) });
});
test("month rollover: the first instant of a month starts a new window", () => {
    const boundary = Date.UTC(2026, 1, 1);
    assert.notEqual(windowSpan(Window.MONTH, boundary - 1).startMs, windowSpan(Window.MONTH, boundary).startMs);
    assert.equal(windowSpan(Window.MONTH, boundary).startMs, boundary);
    // February in a leap year and December roll over correctly.
    assert.equal(windowSpan(Window.MONTH, Date.UTC(2028, 1, 29, 12)).endMs, Date.UTC(2028, 2, 1));
    assert.equal(windowSpan(Window.MONTH, Date.UTC(2026, 11, 31, 12)).endMs, Date.UTC(2027, 0, 1));
});
test("windows without a span are rejected", () => {
    assert.throws(() => windowSpan(Window.REQUEST, Date.now()), /no time span/);
});
/** Counters in memory, and on the shared Redis under a prefix of this test (dates in the future, so Redis keeps the keys). */
const counterBackends = [
    { name: "memory", skip: false, config: () => ({}) },
    { name: "redis", skip: missingService("Redis", "REDIS_URL"), config: (prefix) => ({ redisUrl: process.env.REDIS_URL, redisKeyPrefix: prefix }) },
];
for (const backend of counterBackends) {
    describe(`window boundaries with an injected clock (${backend.name} counters)`, { skip: backend.skip }, () => {
        let now = 0;
        let t;
        let database;
        const prefix = `admwin-${randomBytes(4).toString("hex")}`;
        before(async () => {
            database = await quickDatabase();
            t = await startTestControlPlane({ config: { ...database.config, ...backend.config(prefix) }, deps: { clock: () => now } });
            await t.policy.applyBundle({
                bundle: scenario({
                    id: "w",
                    limits: [
                        { kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 2 },
                        { kind: "TOKENS", window: "MINUTE", per: "TENANT", value: 1_000_000 },
                        { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000 },
                    ],
                    keys: [{ id: "kw" }],
                }),
            }, admin);
        });
        after(async () => {
            await t.close();
            await database.drop();
            if (backend.name === "redis") {
                const redis = new Redis(process.env.REDIS_URL);
                await deleteKeysWithPrefix(redis, prefix);
                await redis.quit();
            }
        });
        const req = { credential: secretOf("kw"), task: "DRAFT", inputTokens: 100n, maxOutputTokens: 50n };
        const used = (kind, window) => meterUsed(t.admission, "w", kind, window);
        test("minute boundary: a new minute starts empty; a lease reserved in the old minute and settled in the new one charges the old", async () => {
            const boundary = Date.UTC(2031, 4, 6, 12, 1);
            now = boundary - 100;
            const early = await t.admission.admit(req);
            assert.equal((await t.admission.admit(req)).allowed, true);
            const third = await t.admission.admit(req);
            assert.equal(third.reason, DenyReason.RATE_LIMITED, "two a minute");
            assert.equal(third.retryAfterMs, 100n, "until the minute ends");
            now = boundary;
            const next = await t.admission.admit(req);
            assert.equal(next.allowed, true, "the next minute starts empty");
            now = boundary + 500;
            await t.admission.settle({ reservationId: early.reservationId, inputTokens: 70n, outputTokens: 5n });
            assert.equal(await used(LimitKind.REQUESTS, Window.MINUTE), 1n);
            assert.equal(await used(LimitKind.TOKENS, Window.MINUTE), 150n, "only the new minute's own reservation");
            now = boundary - 1;
            assert.equal(await used(LimitKind.TOKENS, Window.MINUTE), 75n + 150n, "the old minute: the settled lease's actual usage and the other open lease");
            assert.equal(await used(LimitKind.REQUESTS, Window.MINUTE), 2n);
        });
        test("month boundary: a lease reserved on the last day of a month and settled on the first of the next charges the month it was reserved in, ledger included", async () => {
            const boundary = Date.UTC(2031, 1, 1);
            now = boundary - 500;
            const before = await used(LimitKind.TOKENS, Window.MONTH);
            const january = await t.admission.admit(req);
            assert.equal(january.allowed, true);
            now = boundary + 500;
            assert.equal(await used(LimitKind.TOKENS, Window.MONTH), 0n, "February starts empty");
            const settled = await t.admission.settle({ reservationId: january.reservationId, inputTokens: 90n, outputTokens: 33n });
            assert.equal(settled.duplicate, false);
            assert.equal(await used(LimitKind.TOKENS, Window.MONTH), 0n, "the January lease does not touch February");
            const feb = await t.policy.getUsage({ tenant: "w", start: timestampFromMs(boundary), end: timestampFromMs(Date.UTC(2031, 2, 1)) }, admin);
            assert.equal(feb.requests, 0n);
            now = boundary - 1;
            assert.equal(await used(LimitKind.TOKENS, Window.MONTH), before + 123n, "January holds the actual usage");
            const jan = await t.policy.getUsage({ tenant: "w", start: timestampFromMs(Date.UTC(2031, 0, 1)), end: timestampFromMs(boundary) }, admin);
            assert.deepEqual([jan.requests, jan.inputTokens, jan.outputTokens], [1n, 90n, 33n]);
        });
    });
}
//# sourceMappingURL=windows.test.js.map
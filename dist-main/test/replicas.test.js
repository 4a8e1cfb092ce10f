import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { admin } from "./support/control-plane.js";
import { scratchDatabase } from "./support/databases.js";
import { startReplica } from "./support/replicas.js";
import { scenario, secretOf } from "./support/scenario.js";
import { missingService } from "./support/services.js";
import { deleteKeysWithPrefix } from "./support/redis-keys.js";
import { meterUsed } from "./support/meter-used.js";
const skip = missingService("PostgreSQL", "DATABASE_URL") || missingService("Redis", "REDIS_URL");
async function waitFor(check, timeoutMs, what) {
    const started = Date.now();
    for (;;) {
        if (await check().catch(() => false))
            return Date.now() - started;
        if (Date.now() - started > timeoutMs)
            throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 25));
    }
}
describe("three control-plane processes on one Redis and one PostgreSQL", { skip }, () => {
    const prefix = `admrep-${randomBytes(4).toString("hex")}`;
    let replicas = [];
    let db;
    let redis;
    before(async () => {
        db = await scratchDatabase();
        redis = new Redis(process.env.REDIS_URL);
        // Migrations race safely: all three start at once on an empty database.
        replicas = await Promise.all([0, 1, 2].map(() => startReplica({ DATABASE_URL: db.url, REDIS_URL: process.env.REDIS_URL, ADMISSION_REDIS_PREFIX: prefix })));
    });
    after(async () => {
        await Promise.all(replicas.map((r) => r.stop()));
        await deleteKeysWithPrefix(redis, prefix);
        await redis.quit();
        await db?.drop();
    });
    const meter = (r, kind, window) => meterUsed(r.admission, "shared", kind, window);
    test("a bundle applied on one replica reaches the others within a second", async () => {
        await replicas[0].policy.applyBundle({
            bundle: scenario({
                id: "shared",
                limits: [
                    { kind: "REQUESTS", window: "DAY", per: "TENANT", value: 421 },
                    { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000_000 },
                    { kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 1_000_000_000 },
                ],
                keys: Array.from({ length: 6 }, (_, i) => ({ id: `rk${i}` })),
            }),
        }, admin);
        for (const r of replicas.slice(1)) {
            let probe;
            const ms = await waitFor(async () => {
                probe = await r.admission.admit({ credential: secretOf("rk0"), task: "PRIOR", model: "m-base", inputTokens: 0n, maxOutputTokens: 1n });
                return probe.allowed;
            }, 5_000, "propagation");
            assert.ok(ms < 1_000, `propagated in ${ms} ms`);
            await r.admission.settle({ reservationId: probe.reservationId, inputTokens: 0n, outputTokens: 0n });
        }
    });
    test("2,000 concurrent Admits spread over three replicas admit exactly N; settled anywhere, ledger = meters = GetUsage", async () => {
        const before = await meter(replicas[0], LimitKind.REQUESTS, Window.DAY);
        const room = 421n - before;
        const decisions = await Promise.all(Array.from({ length: 2000 }, (_, i) => replicas[i % 3].admission.admit({ credential: secretOf(`rk${i % 6}`), task: "DRAFT", model: "m-pro", inputTokens: 40n, maxOutputTokens: 60n })));
        const allowed = decisions.filter((d) => d.allowed);
        assert.equal(BigInt(allowed.length), room, "exactly the room left under the limit");
        assert.ok(decisions.filter((d) => !d.allowed).every((d) => d.reason === DenyReason.QUOTA_EXCEEDED));
        // Settle each on a different replica than the one that admitted it.
        const settles = await Promise.all(allowed.map((d, i) => replicas[(i + 1) % 3].admission.settle({ reservationId: d.reservationId, inputTokens: BigInt(30 + (i % 17)), outputTokens: BigInt(i % 101), model: "m-pro" })));
        assert.ok(settles.every((s) => !s.duplicate));
        const usage = await replicas[2].policy.getUsage({ tenant: "shared", task: "DRAFT" }, admin);
        assert.equal(usage.requests, room);
        const tokens = settles.reduce((a, s) => a + s.inputTokens + s.outputTokens, 0n);
        const cost = settles.reduce((a, s) => a + s.costMicros, 0n);
        assert.equal(usage.inputTokens + usage.outputTokens, tokens);
        assert.equal(usage.costMicros, cost);
        const all = await replicas[1].policy.getUsage({ tenant: "shared" }, admin);
        for (const r of replicas) {
            assert.equal(await meter(r, LimitKind.TOKENS, Window.MONTH), all.inputTokens + all.outputTokens);
            assert.equal(await meter(r, LimitKind.BUDGET_MICROS, Window.MONTH), all.costMicros);
            assert.equal(await meter(r, LimitKind.REQUESTS, Window.DAY), all.requests);
        }
    });
    test("Redis flushed: the three replicas race to rebuild the tenant from the ledger, one rebuild lands, nothing counted twice", async () => {
        const expectedTokens = await meter(replicas[0], LimitKind.TOKENS, Window.MONTH);
        const expectedRequests = await meter(replicas[0], LimitKind.REQUESTS, Window.DAY);
        const generationKey = `${prefix}:{shared}:gen`;
        const generation = await redis.get(generationKey);
        assert.ok(generation, "the tenant's counters carry a generation");
        // The shared Redis cannot be flushed; deleting key by key, the generation goes last, so no replica can
        // rebuild before the data is all gone (and have its rebuild deleted), as after an atomic FLUSHDB.
        const keys = [];
        let cursor = "0";
        do {
            const [next, batch] = await redis.scan(cursor, "MATCH", `${prefix}:{*`, "COUNT", 1000);
            cursor = next;
            keys.push(...batch.filter((k) => !k.endsWith("}:gen")));
        } while (cursor !== "0");
        if (keys.length > 0)
            await redis.del(...keys);
        await deleteKeysWithPrefix(redis, `${prefix}:{`);
        // All three find the tenant cold at once and rebuild it; the store keeps the first rebuild to land.
        const seen = await Promise.all(replicas.map((r) => meter(r, LimitKind.TOKENS, Window.MONTH)));
        assert.deepEqual(seen, [expectedTokens, expectedTokens, expectedTokens]);
        const rebuilt = await redis.get(generationKey);
        assert.ok(rebuilt && rebuilt !== generation, "a new generation");
        for (const r of replicas) {
            assert.equal(await meter(r, LimitKind.TOKENS, Window.MONTH), expectedTokens);
            assert.equal(await meter(r, LimitKind.REQUESTS, Window.DAY), expectedRequests);
        }
    });
});
//# sourceMappingURL=replicas.test.js.map
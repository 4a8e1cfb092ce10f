/**
 * `node dist/test/bench/counter-store-throughput.js [--pairs N] [--concurrency C] [--url redis://…]`
 *
 * Runs N reserve+settle pairs (five meters each, like a decision with rate, token,
 * quota, budget and concurrency limits) at concurrency 64 against the in-memory store
 * and against Redis in the same run, and prints ops/s of each and their ratio. Not a
 * test: absolute numbers depend on the machine; the ratio is what to compare.
 * Redis: --url, else REDIS_URL, else redis://127.0.0.1:6379; with REDIS_CLUSTER_NODES
 * set, a Redis Cluster row is added. Keys go under a random prefix, deleted afterwards.
 */
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { Cluster, Redis } from "ioredis";
import { MemoryCounterStore } from "../../control-plane/memory-counter-store.js";
import { RedisCounterStore } from "../../control-plane/redis-counter-store.js";
import { deleteKeysWithPrefix } from "../support/redis-keys.js";
const { values } = parseArgs({
    options: {
        pairs: { type: "string", default: "50000" },
        concurrency: { type: "string", default: "64" },
        tenants: { type: "string", default: "16" },
        url: { type: "string" },
    },
});
const pairs = Number(values.pairs);
const concurrency = Number(values.concurrency);
const tenants = Array.from({ length: Number(values.tenants) }, (_, i) => `bench-tenant-${i}`);
const redisUrl = values.url ?? process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const clusterNodes = process.env.REDIS_CLUSTER_NODES?.split(",").filter(Boolean);
function meters(nowMs) {
    const minute = nowMs - (nowMs % 60_000);
    const inAMinute = minute + 60_000 + 120_000;
    return [
        { key: `REQUESTS|MINUTE|*|TENANT|t|${minute}`, unit: "requests", limit: 1e12, enforce: true, expiresAtMs: inAMinute },
        { key: `TOKENS|MINUTE|*|TENANT|t|${minute}`, unit: "tokens", limit: 1e15, enforce: true, expiresAtMs: inAMinute },
        { key: "TOKENS|MONTH|*|USER|u|0", unit: "tokens", limit: 1e15, enforce: true, expiresAtMs: nowMs + 40 * 86_400_000 },
        { key: "BUDGET_MICROS|MONTH|*|TENANT|t|0", unit: "cost", limit: 1e15, enforce: false, expiresAtMs: nowMs + 40 * 86_400_000 },
        { key: "CONCURRENCY|*|USER|u", unit: "concurrency", limit: 1e9, enforce: true, expiresAtMs: 0 },
    ];
}
const amounts = { tokens: 1_200, costMicros: 9_000 };
const usage = (nowMs) => ({
    inputTokens: 200, outputTokens: 731, costMicros: 7_412, outcome: 1, estimated: false, provider: "p", model: "m", latencyMs: 900, settledAtMs: nowMs,
});
/** Runs `pairs` reserve+settle pairs from `concurrency` workers; returns pairs per second. */
async function measure(store) {
    let next = 0;
    const run = randomBytes(4).toString("hex");
    // Counters are used once the tenant is rebuilt (here: from nothing), as the control plane does first.
    for (const tenant of tenants)
        await store.rebuild(tenant, "bench/1:1:", []);
    const started = performance.now();
    await Promise.all(Array.from({ length: concurrency }, async () => {
        for (let i = next++; i < pairs; i = next++) {
            const tenant = tenants[i % tenants.length];
            const leaseId = `${run}-${i}`;
            const nowMs = Date.now();
            const r = await store.reserve({ tenant, leaseId, reservationId: leaseId, requestId: "", meters: meters(nowMs), amounts, leaseExpiresAtMs: nowMs + 300_000, nowMs });
            if (r.status !== "reserved")
                throw new Error(`unexpected ${r.status}`);
            const s = await store.settle({ tenant, leaseId, usage: usage(nowMs), nowMs: Date.now(), graceMs: 30_000 });
            if (s.status !== "settled")
                throw new Error(`unexpected ${s.status}`);
        }
    }));
    return pairs / ((performance.now() - started) / 1000);
}
async function onRedis(name, connect, cleanup) {
    const keyPrefix = `admbench:${randomBytes(4).toString("hex")}`;
    const store = await connect(keyPrefix);
    try {
        await store.ping();
        await measure(store); // warm-up: connections, scripts, JIT
        return await measure(store);
    }
    catch (err) {
        throw new Error(`${name}: ${String(err)}`);
    }
    finally {
        await store.close();
        await cleanup(keyPrefix);
    }
}
const rows = [];
const memory = new MemoryCounterStore({ housekeepingMs: 0 });
await measure(memory);
rows.push({ store: "memory", pairsPerSec: await measure(new MemoryCounterStore({ housekeepingMs: 0 })) });
rows.push({
    store: `redis (${redisUrl})`,
    pairsPerSec: await onRedis("redis", (keyPrefix) => RedisCounterStore.connect({ url: redisUrl, keyPrefix }), async (keyPrefix) => {
        const admin = new Redis(redisUrl);
        await deleteKeysWithPrefix(admin, keyPrefix);
        await admin.quit();
    }),
});
if (clusterNodes?.length) {
    rows.push({
        store: `redis cluster (${clusterNodes.length} seed nodes)`,
        pairsPerSec: await onRedis("cluster", (keyPrefix) => RedisCounterStore.connect({ clusterNodes, keyPrefix }), async (keyPrefix) => {
            const admin = new Cluster(clusterNodes.map((hp) => ({ host: hp.split(":")[0], port: Number(hp.split(":")[1]) })));
            for (const node of admin.nodes("master"))
                await deleteKeysWithPrefix(node, keyPrefix);
            await admin.quit();
        }),
    });
}
const base = rows[0].pairsPerSec;
console.log(`${pairs} reserve+settle pairs (5 meters each), concurrency ${concurrency}, ${tenants.length} tenants`);
console.table(rows.map((r) => ({
    store: r.store,
    "pairs/s": Math.round(r.pairsPerSec),
    "ops/s (reserve or settle)": Math.round(2 * r.pairsPerSec),
    "× memory": Number((r.pairsPerSec / base).toFixed(3)),
})));
//# sourceMappingURL=counter-store-throughput.js.map
/**
 * `npm run soak [-- --minutes N] [-- --rate R] [-- --out file.json]`: mixed
 * traffic (chat, streams, embeddings, denials; several tenants) at a fixed rate
 * through a data plane to a mock provider, the control plane and the data plane
 * as their own processes. Every 10 s it samples each process's RSS and
 * event-loop delay (from their /metrics) and the client's error rate; at the
 * end it checks the ledger against the usage the provider reported. Uses
 * DATABASE_URL (a scratch database) and REDIS_URL (a key prefix of its own)
 * when set, otherwise PGlite in a temp dir and in-memory counters.
 * Not a test: it prints a table and writes the figures as JSON.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { BundleSchema } from "../../gen/admission/v1/policy_pb.js";
import { parseProtoJson } from "../../control-plane/policy/proto-json.js";
import { MockUpstream, reportedUsage } from "../data-plane/support/mock-upstream.js";
import { bundleJson, secret } from "../data-plane/support/stack.js";
import { admin } from "../support/control-plane.js";
import { scratchDatabase } from "../support/databases.js";
import { Load } from "../support/load.js";
import { deleteKeysWithPrefix } from "../support/redis-keys.js";
import { startDataPlaneProcess, startReplica } from "../support/replicas.js";
const { values: args } = parseArgs({ options: { minutes: { type: "string", default: "10" }, rate: { type: "string", default: "50" }, out: { type: "string" } } });
const minutes = Number(args.minutes);
const ratePerSec = Number(args.rate);
if (!(minutes > 0) || !(ratePerSec > 0))
    throw new Error("--minutes and --rate must be positive numbers");
const sampleEveryMs = 10_000;
const outFile = args.out ?? join(tmpdir(), `soak-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
const metered = ["t1", "t2", "t3", "tight"];
/** What each kind of request should get; anything else is an error. */
const expected = { chat: [200], stream: [200], embeddings: [200], "rate-limited": [200, 429], "revoked-key": [401], "model-not-allowed": [403] };
function request(i) {
    const tenant = metered[i % 3];
    const text = `soak ${i}: ${"the latch holds the hinge ".repeat(1 + (i % 9))}`;
    const chat = (model = "gpt-a") => ({ model, max_tokens: 16 + (i % 48), messages: [{ role: "user", content: text }] });
    const as = (t, key = `k-${t}`) => ({ tenant: t, key: secret(key), task: "DRAFT" });
    const slot = i % 10;
    if (slot <= 2)
        return { ...as(tenant), kind: "chat", path: "/v1/chat/completions", body: chat() };
    if (slot <= 5)
        return { ...as(tenant), kind: "stream", path: "/v1/chat/completions", body: { ...chat(), stream: true } };
    if (slot === 6)
        return { ...as(tenant), kind: "embeddings", path: "/v1/embeddings", body: { model: "gpt-a", input: text } };
    if (slot === 7)
        return { ...as("tight"), kind: "rate-limited", path: "/v1/chat/completions", body: chat() };
    if (slot === 8)
        return { ...as("t1", "k-t1-revoked"), kind: "revoked-key", path: "/v1/chat/completions", body: chat() };
    return { ...as(tenant), kind: "model-not-allowed", path: "/v1/chat/completions", body: chat("huge") };
}
const isError = (r) => !(expected[r.kind] ?? [200]).includes(r.status) || (r.status === 200 && !r.ok);
async function scrape(url) {
    const text = await (await fetch(url)).text();
    const value = (name) => Number(new RegExp(`^${name} ([0-9.e+-]+)`, "m").exec(text)?.[1] ?? NaN);
    return {
        rssMb: value("process_resident_memory_bytes") / 2 ** 20,
        lagP99Ms: value("nodejs_eventloop_lag_p99_seconds") * 1000,
        lagMaxMs: value("nodejs_eventloop_lag_max_seconds") * 1000,
    };
}
function percentile(values, p) {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : 0;
}
const round = (n, digits = 1) => Number(n.toFixed(digits));
async function main() {
    const dir = mkdtempSync(join(tmpdir(), "adm-soak-"));
    const db = process.env.DATABASE_URL ? await scratchDatabase() : undefined;
    const prefix = `admsoak-${randomBytes(4).toString("hex")}`;
    const provider = new MockUpstream("up-a");
    provider.usageOf = reportedUsage;
    provider.latencyMs = 80;
    await provider.start();
    const providersFile = join(dir, "providers.json");
    writeFileSync(providersFile, JSON.stringify({ providers: ["up-a", "up-b"].map((name) => ({ name, baseUrl: provider.baseUrl })) }));
    const cp = await startReplica({
        ...(db ? { DATABASE_URL: db.url } : { ADMISSION_DATA_DIR: join(dir, "pgdata") }),
        ...(process.env.REDIS_URL ? { REDIS_URL: process.env.REDIS_URL, ADMISSION_REDIS_PREFIX: prefix } : {}),
        ADMISSION_SPOOL_DIR: join(dir, "cp-spool"),
    });
    const dp = await startDataPlaneProcess({ CONTROL_PLANE_ADDR: cp.address, PROVIDERS_FILE: providersFile, PROXY_SPOOL_DIR: join(dir, "dp-spool") });
    const big = [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000_000 }, { kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 1_000_000_000_000 }];
    const tenants = metered.map((id) => ({
        id,
        limits: id === "tight" ? [...big, { kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 60 }] : big,
        keys: id === "t1" ? [{ id: "k-t1" }, { id: "k-t1-revoked", revoked: true }] : [{ id: `k-${id}` }],
    }));
    await cp.policy.applyBundle({ bundle: parseProtoJson(BundleSchema, bundleJson(tenants)) }, admin);
    for (let i = 0; (await fetch(`${dp.url}/readyz`).then((r) => r.status, () => 0)) !== 200; i++) {
        if (i > 300)
            throw new Error("the data plane did not become ready");
        await new Promise((r) => setTimeout(r, 100));
    }
    const load = new Load({ baseUrl: () => dp.url, ratePerSec, request, timeoutMs: 30_000 });
    const samples = [];
    const startedAt = performance.now();
    process.stdout.write(`soak: ${minutes} min at ${ratePerSec} req/s; control plane ${db ? "PostgreSQL" : "PGlite"} + ${process.env.REDIS_URL ? "Redis" : "memory"} counters; JSON to ${outFile}\n`);
    const header = ["t_s", "sent", "ok", "denied", "errors", "error_%", "p50_ms", "p99_ms", "cp_rss_mb", "dp_rss_mb", "gen_rss_mb", "cp_lag_p99_ms", "dp_lag_p99_ms", "cp_lag_max_ms", "dp_lag_max_ms"];
    process.stdout.write(`${header.map((h) => h.padStart(14)).join("")}\n`);
    load.start();
    let seen = 0;
    const endAt = startedAt + minutes * 60_000;
    while (performance.now() < endAt) {
        await new Promise((r) => setTimeout(r, Math.min(sampleEveryMs, endAt - performance.now())));
        const period = load.since(seen);
        seen += period.length;
        const [c, d] = await Promise.all([scrape(`http://127.0.0.1:${cp.httpPort}/metrics`), scrape(`${dp.url}/metrics`)]);
        const errors = period.filter(isError).length;
        const sample = {
            t_s: Math.round((performance.now() - startedAt) / 1000), sent: period.length, ok: period.filter((r) => r.ok).length,
            denied: period.filter((r) => !r.ok && !isError(r)).length, errors, "error_%": round((100 * errors) / Math.max(1, period.length), 2),
            p50_ms: round(percentile(period.filter((r) => r.ok).map((r) => r.latencyMs), 0.5)), p99_ms: round(percentile(period.filter((r) => r.ok).map((r) => r.latencyMs), 0.99)),
            cp_rss_mb: round(c.rssMb), dp_rss_mb: round(d.rssMb), gen_rss_mb: round(process.memoryUsage().rss / 2 ** 20),
            cp_lag_p99_ms: round(c.lagP99Ms), dp_lag_p99_ms: round(d.lagP99Ms), cp_lag_max_ms: round(c.lagMaxMs), dp_lag_max_ms: round(d.lagMaxMs),
        };
        samples.push(sample);
        process.stdout.write(`${header.map((h) => String(sample[h]).padStart(14)).join("")}\n`);
    }
    await load.stop();
    // Ledger exactness: per tenant, the ledger (GetUsage) against what the provider reported for that tenant's requests.
    const tenantOf = new Map(load.results.filter((r) => r.requestId).map((r) => [r.requestId, r.tenant]));
    const exactness = [];
    for (let attempt = 0;; attempt++) {
        exactness.length = 0;
        for (const tenant of metered) {
            const served = [...provider.served].filter(([id]) => tenantOf.get(id) === tenant).map(([, u]) => u);
            const reported = { requests: served.length, inputTokens: served.reduce((s, u) => s + u.prompt_tokens, 0), outputTokens: served.reduce((s, u) => s + u.completion_tokens, 0) };
            const usage = await cp.policy.getUsage({ tenant }, admin);
            const ledger = { requests: Number(usage.requests), inputTokens: Number(usage.inputTokens), outputTokens: Number(usage.outputTokens), costMicros: Number(usage.costMicros) };
            const exact = ledger.requests === reported.requests && ledger.inputTokens === reported.inputTokens && ledger.outputTokens === reported.outputTokens
                && ledger.costMicros === reported.inputTokens + 2 * reported.outputTokens;
            exactness.push({ tenant, reported, ledger, exact });
        }
        if (exactness.every((e) => e.exact) || attempt >= 20)
            break;
        await new Promise((r) => setTimeout(r, 500)); // the last settles are still landing
    }
    const all = load.results;
    const totals = {
        minutes, ratePerSec, sent: all.length, ok: all.filter((r) => r.ok).length, errors: all.filter(isError).length,
        errorRatePct: round((100 * all.filter(isError).length) / Math.max(1, all.length), 3),
        byKind: Object.fromEntries(Object.keys(expected).map((k) => [k, all.filter((r) => r.kind === k).reduce((m, r) => ((m[r.status] = (m[r.status] ?? 0) + 1), m), {})])),
        served: provider.served.size,
        rssGrowthMb: samples.length > 1 ? { cp: round(samples.at(-1).cp_rss_mb - samples[0].cp_rss_mb), dp: round(samples.at(-1).dp_rss_mb - samples[0].dp_rss_mb) } : undefined,
        ledgerExact: exactness.every((e) => e.exact),
    };
    process.stdout.write(`\n${JSON.stringify(totals, null, 2)}\n`);
    for (const e of exactness)
        process.stdout.write(`ledger ${e.exact ? "==" : "!="} provider: ${JSON.stringify(e)}\n`);
    writeFileSync(outFile, JSON.stringify({ totals, samples, exactness }, null, 2));
    process.stdout.write(`written ${outFile}\n`);
    await dp.stop();
    await cp.stop();
    await provider.stop();
    if (process.env.REDIS_URL) {
        const redis = new Redis(process.env.REDIS_URL);
        await deleteKeysWithPrefix(redis, prefix);
        await redis.quit();
    }
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
    process.exitCode = totals.ledgerExact ? 0 : 1;
}
main().catch((err) => {
    process.stderr.write(`soak failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
});
//# sourceMappingURL=soak.js.map
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Redis } from "ioredis";
import pg from "pg";
import { BundleSchema, LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { parseProtoJson } from "../control-plane/policy/proto-json.js";
import { countInputTokens } from "../control-plane/token-counter.js";
import { bundleJson, secret, waitFor } from "./data-plane/support/stack.js";
import { MockUpstream, reportedUsage } from "./data-plane/support/mock-upstream.js";
import { admin } from "./support/control-plane.js";
import { scratchDatabase } from "./support/databases.js";
import { Load } from "./support/load.js";
import { deleteKeysWithPrefix } from "./support/redis-keys.js";
import { startDataPlaneProcess, startReplica } from "./support/replicas.js";
import { missingService } from "./support/services.js";
const skip = missingService("PostgreSQL", "DATABASE_URL") || missingService("Redis", "REDIS_URL");
const tenants = ["acme", "beta"];
/**
 * Long enough that settles spooled while the control plane restarts (a few seconds on a
 * busy machine) are replayed before their leases expire — a settle arriving after its
 * lease expired finds the estimate already committed, as designed — and short enough to
 * wait for the leases orphaned by the data plane's death.
 */
const leaseTtlMs = 10_000;
/** Chat, streamed chat and embeddings for two tenants, each request with its own wording and output cap. */
function request(i) {
    const tenant = tenants[Math.floor(i / 3) % 2];
    const common = { tenant, key: secret(`k-${tenant}`), task: "DRAFT" };
    const text = `request ${i}: ${"claim ".repeat(i % 17)}the widget`;
    switch (i % 3) {
        case 0:
            return { ...common, kind: "chat", path: "/v1/chat/completions", body: { model: "gpt-a", max_tokens: 20 + (i % 40), messages: [{ role: "user", content: text }] } };
        case 1:
            return { ...common, kind: "stream", path: "/v1/chat/completions", body: { model: "gpt-a", max_tokens: 20 + (i % 40), stream: true, messages: [{ role: "user", content: text }] } };
        default:
            return { ...common, kind: "embeddings", path: "/v1/embeddings", body: { model: "gpt-a", input: text } };
    }
}
/** Polls a condition that costs a query, every 250 ms (only bounds how long a broken build hangs). */
async function eventually(check, what, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (!(await check().catch(() => false))) {
        if (Date.now() > deadline)
            throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 250));
    }
}
function spoolEmpty(dir) {
    return ["settles.jsonl", "settles.replaying.jsonl"].every((f) => !existsSync(join(dir, f)) || readFileSync(join(dir, f), "utf8").trim() === "");
}
/** Leases still open, and leases settled or expired whose ledger row is not confirmed (still on a :due zset). */
async function unfinishedLeases(redis, prefix) {
    let count = 0;
    for (const tenant of tenants) {
        count += await redis.zcard(`${prefix}:{${tenant}}:due`);
        let cursor = "0";
        do {
            const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:{${tenant}}:lease:*`, "COUNT", 1000);
            cursor = next;
            for (const key of keys)
                if ((await redis.hget(key, "state")) === "open")
                    count++;
        } while (cursor !== "0");
    }
    return count;
}
test("kill -9 of a control-plane replica and of the data plane under load: every served request is in the ledger once, leases expire, meters = ledger", { skip }, async (t) => {
    const db = await scratchDatabase();
    const prefix = `admcrash-${randomBytes(4).toString("hex")}`;
    const redis = new Redis(process.env.REDIS_URL);
    const sql = new pg.Client({ connectionString: db.url });
    const dir = mkdtempSync(join(tmpdir(), "adm-crash-"));
    const spoolDir = join(dir, "dp-spool");
    const provider = new MockUpstream("up-a");
    provider.usageOf = reportedUsage;
    provider.latencyMs = 300; // some twenty requests under way at any moment, so each kill hits some
    await provider.start();
    const providersFile = join(dir, "providers.json");
    writeFileSync(providersFile, JSON.stringify({ providers: ["up-a", "up-b"].map((name) => ({ name, baseUrl: provider.baseUrl })) }));
    const cpEnv = { DATABASE_URL: db.url, REDIS_URL: process.env.REDIS_URL, ADMISSION_REDIS_PREFIX: prefix, ADMISSION_LEASE_TTL_MS: String(leaseTtlMs), ADMISSION_SHUTDOWN_GRACE_MS: "500" };
    let a;
    let b;
    let dp;
    const load = new Load({ baseUrl: () => dp.url, ratePerSec: 60, request, timeoutMs: 20_000 });
    try {
        [a, b] = await Promise.all([startReplica({ ...cpEnv, ADMISSION_SPOOL_DIR: join(dir, "cp-a") }), startReplica({ ...cpEnv, ADMISSION_SPOOL_DIR: join(dir, "cp-b") })]);
        const limits = [
            { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000_000 },
            { kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 1_000_000_000 },
            { kind: "CONCURRENCY", per: "TENANT", value: 10_000 },
        ];
        await a.policy.applyBundle({ bundle: parseProtoJson(BundleSchema, bundleJson(tenants.map((id) => ({ id, limits })))) }, admin);
        const dpEnv = {
            CONTROL_PLANE_ADDR: a.address, PROVIDERS_FILE: providersFile, PROXY_SPOOL_DIR: spoolDir,
            PROXY_RECONNECT_MIN_MS: "20", PROXY_RECONNECT_MAX_MS: "200", PROXY_REPLAY_MIN_MS: "50", PROXY_REPLAY_MAX_MS: "500",
        };
        dp = await startDataPlaneProcess(dpEnv);
        const ready = () => waitFor(async () => (await fetch(`${dp.url}/readyz`)).status === 200, "the data plane to be ready", 30_000);
        await ready();
        const sent = () => load.results.length;
        const settle = (ms) => new Promise((r) => setTimeout(r, ms));
        load.start();
        await waitFor(() => sent() >= 60, "load under way", 30_000);
        // The replica the data plane talks to dies; admits fail closed, settles are spooled.
        a.process.kill("SIGKILL");
        await settle(1_000);
        a.admission.close();
        a.policy.close();
        a = await startReplica({ ...cpEnv, ADMISSION_SPOOL_DIR: join(dir, "cp-a"), ADMISSION_GRPC_PORT: String(a.grpcPort) });
        await ready();
        const afterCp = sent();
        await waitFor(() => sent() >= afterCp + 60, "load after the control-plane restart", 30_000);
        // The data plane dies mid-stream; it comes back on the same port and spool directory.
        dp.process.kill("SIGKILL");
        await new Promise((r) => dp.process.once("exit", r));
        await settle(500);
        dp = await startDataPlaneProcess({ ...dpEnv, PROXY_PORT: String(dp.port) });
        await ready();
        const afterDp = sent();
        await waitFor(() => sent() >= afterDp + 60, "load after the data-plane restart", 30_000);
        await load.stop();
        // Settles replayed from the spool, open leases expired by a sweeper, every served request recorded. Bounded by the
        // TTL plus the Redis store's safety-net rescan (60 s) for a lease whose due-index entry died with its replica.
        const loadDoneMs = performance.now();
        await sql.connect();
        const ledger = async () => (await sql.query("SELECT request_id, tenant, input_tokens::int, output_tokens::int, cost_micros::int, outcome, estimated FROM usage_ledger")).rows;
        await eventually(async () => {
            if (!spoolEmpty(spoolDir) || (await unfinishedLeases(redis, prefix)) > 0)
                return false;
            const ids = new Set((await ledger()).map((r) => r.request_id));
            return [...provider.served.keys()].every((id) => ids.has(id));
        }, "spool replay, lease expiry and every served request in the ledger", leaseTtlMs + 70_000);
        const drainMs = Math.round(performance.now() - loadDoneMs);
        const rows = await ledger();
        const byId = new Map(rows.map((r) => [r.request_id, r]));
        assert.equal(byId.size, rows.length, "every request id is in the ledger exactly once");
        const receivedBody = new Map(provider.received.map((r) => [String(r.headers["x-request-id"]), r]));
        let settledServed = 0;
        let expiredServed = 0;
        for (const [id, usage] of provider.served) {
            const row = byId.get(id);
            if (row.outcome === "EXPIRED") {
                expiredServed++;
                continue;
            }
            settledServed++;
            assert.deepEqual([row.input_tokens, row.output_tokens, row.estimated], [usage.prompt_tokens, usage.completion_tokens, false], `request ${id}: the provider's usage`);
        }
        // Expired leases are charged their estimate: the input counted and the output clamp sent to the provider.
        for (const row of rows.filter((r) => r.outcome === "EXPIRED")) {
            assert.equal(row.estimated, true);
            const received = receivedBody.get(row.request_id);
            if (!received)
                continue;
            const estimate = [countInputTokens(received.path, received.body), received.path === "/embeddings" ? 1 : received.body.max_tokens];
            assert.deepEqual([row.input_tokens, row.output_tokens], estimate, `expired ${row.request_id}: its estimate`);
        }
        for (const row of rows)
            assert.equal(row.cost_micros, row.input_tokens + 2 * row.output_tokens, "1 and 2 micro-USD per input and output token");
        const unserved = rows.filter((r) => !provider.served.has(r.request_id));
        assert.ok(unserved.every((r) => r.outcome !== "SUCCESS"), "a row the provider did not serve is an expiry or an error, never a success");
        // Totals: the provider's usage for what was settled, the estimate for what expired.
        const servedSettled = [...provider.served].filter(([id]) => byId.get(id).outcome !== "EXPIRED").map(([, u]) => u);
        const expectedTokens = servedSettled.reduce((s, u) => s + u.prompt_tokens + u.completion_tokens, 0)
            + rows.filter((r) => !provider.served.has(r.request_id) || r.outcome === "EXPIRED").reduce((s, r) => s + r.input_tokens + r.output_tokens, 0);
        for (const replica of [a, b]) {
            for (const tenant of tenants) {
                const mine = rows.filter((r) => r.tenant === tenant);
                const usage = await replica.policy.getUsage({ tenant }, admin);
                assert.deepEqual([usage.requests, usage.inputTokens, usage.outputTokens, usage.costMicros], [mine.length, mine.reduce((s, r) => s + r.input_tokens, 0), mine.reduce((s, r) => s + r.output_tokens, 0), mine.reduce((s, r) => s + r.cost_micros, 0)].map(BigInt), `GetUsage of ${tenant} = its ledger rows`);
                const meters = (await replica.admission.getEffectivePolicy({ tenant }, admin)).limits;
                const used = (kind, window) => meters.find((l) => l.kind === kind && l.window === window && l.task === "").used;
                assert.equal(used(LimitKind.TOKENS, Window.MONTH), usage.inputTokens + usage.outputTokens, `${tenant}: the token meter holds no reservation`);
                assert.equal(used(LimitKind.BUDGET_MICROS, Window.MONTH), usage.costMicros, `${tenant}: the budget meter holds no reservation`);
                assert.equal(meters.find((l) => l.kind === LimitKind.CONCURRENCY).used, 0n, `${tenant}: no request left in flight`);
            }
        }
        assert.equal(rows.reduce((s, r) => s + r.input_tokens + r.output_tokens, 0), expectedTokens);
        const failed = load.results.filter((r) => !r.ok);
        const failedServed = failed.filter((r) => r.requestId && provider.served.has(r.requestId));
        assert.ok(failedServed.every((r) => byId.has(r.requestId)), "a failure the provider served is settled");
        const figures = {
            drainMs, sent: load.results.length, ok: load.results.length - failed.length, failed: failed.length,
            failedNotServed: failed.length - failedServed.length, failedServedSettled: failedServed.length,
            served: provider.served.size, settledServed, expiredServed, ledgerRows: rows.length, unservedRows: unserved.length,
            failures: failed.reduce((m, r) => ((m[`${r.status} ${r.error}`] = (m[`${r.status} ${r.error}`] ?? 0) + 1), m), {}),
        };
        t.diagnostic(JSON.stringify(figures));
        assert.ok(failed.length > 0 && provider.served.size > 150, "the faults happened under real load");
    }
    finally {
        await load.stop();
        await dp?.stop("SIGKILL");
        await Promise.all([a?.stop(), b?.stop()]);
        await provider.stop();
        await sql.end().catch(() => undefined);
        await deleteKeysWithPrefix(redis, prefix);
        await redis.quit();
        await db.drop();
        rmSync(dir, { recursive: true, force: true });
    }
});
//# sourceMappingURL=crash-safety.test.js.map
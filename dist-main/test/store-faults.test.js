import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, test } from "node:test";
import { Redis } from "ioredis";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { admin, startTestControlPlane } from "./support/control-plane.js";
import { quickDatabase, scratchDatabase } from "./support/databases.js";
import { redisClusterUnavailable } from "./support/redis-cluster.js";
import { scenario, secretOf } from "./support/scenario.js";
import { missingService } from "./support/services.js";
import { TcpProxy } from "./support/tcp-proxy.js";
import { freePort } from "./support/free-port.js";
import { LosableCounterStore } from "./support/losable-counter-store.js";
import { meterUsed } from "./support/meter-used.js";
const tokensUsed = (t, tenant) => meterUsed(t.admission, tenant, LimitKind.TOKENS, Window.MONTH);
async function eventually(check, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs;
    while (!(await check().catch(() => false))) {
        if (Date.now() > deadline)
            throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}
const limits = [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000_000 }];
const bundle = () => scenario({ id: "f", failurePolicy: "FAIL_CLOSED", limits, keys: [{ id: "kf" }] }, { id: "o", failurePolicy: "FAIL_OPEN", limits, keys: [{ id: "ko" }] });
const admitReq = { credential: secretOf("kf"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n };
describe("store faults", () => {
    test("PostgreSQL cut off mid-load: Settles are spooled, acknowledged and replayed once it is back — the ledger holds exactly the acknowledged settles", { skip: missingService("PostgreSQL", "DATABASE_URL") }, async () => {
        const { db, proxy, databaseUrl } = await proxiedDatabase();
        const t = await startTestControlPlane({ config: { databaseUrl } });
        const traffic = new Traffic(t, [{ tenant: "f", key: "kf" }]);
        try {
            await t.policy.applyBundle({ bundle: bundle() }, admin);
            traffic.start();
            await traffic.settled(50);
            await proxy.cut();
            const fault = traffic.mark("fault");
            await traffic.settled(fault.settled + 50);
            const ready = await (await fetch(`http://127.0.0.1:${t.cp.httpPort}/readyz`)).json();
            assert.equal(ready.ready, true, "still serving decisions");
            assert.match(ready.checks.database, /failing/);
            await proxy.restore();
            const after = traffic.mark("after");
            await traffic.settled(after.settled + 50);
            await traffic.stop();
            assert.ok(traffic.outcomes("fault").every((o) => o === "allowed"), "decisions go on without the database");
            await eventually(async () => (await t.cp.settlement.sweep(), !t.cp.ledger.spoolPending()), 20_000, "spool replay");
            await assertLedgerIsAcknowledged(t, traffic, "f");
            const [first] = traffic.acknowledged.values();
            const again = await t.admission.settle({ reservationId: first.reservationId, inputTokens: 1n, outputTokens: 1n });
            assert.deepEqual([again.duplicate, again.outputTokens], [true, first.outputTokens], "the first settle stands");
            await assertLedgerIsAcknowledged(t, traffic, "f");
        }
        finally {
            await traffic.stop();
            await t.close();
            await proxy.cut();
            await db.drop();
        }
    });
    test("counters lost while a settle waits in the spool: when the row is replayed after the rebuild, it is charged to the new generation", { skip: missingService("PostgreSQL", "DATABASE_URL") }, async () => {
        const { db, proxy, databaseUrl } = await proxiedDatabase();
        const counters = new LosableCounterStore();
        const t = await startTestControlPlane({ config: { databaseUrl }, deps: { counters } });
        try {
            await t.cp.settlement.stop(); // the test decides when spooled rows are replayed
            await t.policy.applyBundle({ bundle: bundle() }, admin);
            const first = await t.admission.admit(admitReq);
            await t.admission.settle({ reservationId: first.reservationId, inputTokens: 10n, outputTokens: 5n });
            const spooled = await t.admission.admit(admitReq);
            await proxy.cut();
            const s = await t.admission.settle({ reservationId: spooled.reservationId, inputTokens: 10n, outputTokens: 7n });
            assert.equal(s.duplicate, false, "acknowledged from the spool");
            assert.equal(t.cp.ledger.spoolPending(), true);
            counters.lose();
            await proxy.restore();
            // The rebuild reads a ledger without the spooled row...
            const rebuilt = await tokensUsed(t, "f");
            assert.equal(rebuilt, 15n, "rebuilt from the ledger as it is: the first settle only");
            // ...which the replay then charges, since that generation's snapshot did not see it.
            await t.cp.settlement.sweep();
            assert.equal(t.cp.ledger.spoolPending(), false);
            assert.equal(t.cp.settlement.deferredCount(), 0);
            assert.equal(await tokensUsed(t, "f"), 15n + 17n);
        }
        finally {
            await t.close();
            await proxy.cut();
            await db.drop();
        }
    });
    for (const fault of ["restarted", "flushed"]) {
        test(`Redis ${fault} mid-load: FAIL_CLOSED denies with 503, FAIL_OPEN allows and records; service recovers by itself, counters rebuilt exactly, ledger = acknowledged settles`, { skip: redisClusterUnavailable() }, async (ctx) => {
            const diagnostic = (message) => ctx.diagnostic(message);
            const port = await freePort();
            let redis = await startRedis(port);
            const database = await quickDatabase();
            const t = await startTestControlPlane({ config: { ...database.config, redisUrl: `redis://127.0.0.1:${port}` } });
            const traffic = new Traffic(t, [{ tenant: "f", key: "kf" }, { tenant: "o", key: "ko" }]);
            try {
                await t.policy.applyBundle({ bundle: bundle() }, admin);
                traffic.start();
                await traffic.settled(60);
                if (fault === "restarted") {
                    redis.kill("SIGKILL");
                    await new Promise((r) => redis.once("exit", r));
                    await eventually(async () => (await t.admission.admit(admitReq)).reason === DenyReason.UNAVAILABLE, 10_000, "the outage to be seen");
                    const down = traffic.mark("fault");
                    await eventually(async () => traffic.settledCount() >= down.settled + 30 && traffic.outcomes("fault").includes("UNAVAILABLE"), 20_000, "load during the outage");
                    traffic.mark("restarting"); // calls from here on may see either side
                    redis = await startRedis(port); // no persistence: it comes back empty
                }
                else {
                    traffic.mark("fault");
                    const probe = new Redis(port);
                    await probe.flushdb();
                    probe.disconnect();
                }
                const after = traffic.mark("after");
                await eventually(async () => traffic.outcomes("after").filter((o) => o === "allowed").length >= 60, 20_000, "recovery");
                await traffic.settled(after.settled + 60);
                await traffic.stop();
                if (fault === "restarted") {
                    const closed = traffic.outcomes("fault", "f");
                    const open = traffic.outcomes("fault", "o");
                    assert.ok(closed.length > 0 && closed.every((o) => o === "UNAVAILABLE"), `FAIL_CLOSED during the outage: ${closed}`);
                    assert.ok(open.length > 0 && open.every((o) => o === "unmetered"), `FAIL_OPEN during the outage: ${open}`);
                }
                await eventually(async () => (await t.cp.settlement.sweep(), t.cp.settlement.deferredCount() === 0), 20_000, "deferred counter updates");
                for (const tenant of ["f", "o"]) {
                    const usage = await assertLedgerIsAcknowledged(t, traffic, tenant);
                    // Every settle is counted once: by the rebuild's snapshot of the ledger, or by the settle itself in the
                    // generation it (or a late charge) went into, never both. No lease is open now, so meter == ledger.
                    const used = await tokensUsed(t, tenant);
                    assert.equal(used, usage.inputTokens + usage.outputTokens, `${tenant}: the meter holds the ledger's tokens exactly`);
                    diagnostic(`${fault} ${tenant}: ledger ${usage.inputTokens + usage.outputTokens} tokens, meter ${used}; phases ${JSON.stringify(traffic.summary())}`);
                }
            }
            finally {
                await traffic.stop();
                await t.close();
                await database.drop();
                redis.kill("SIGKILL");
            }
        });
    }
});
/** A scratch database reached through a TCP proxy the test can cut and restore. */
async function proxiedDatabase() {
    const db = await scratchDatabase();
    const url = new URL(db.url);
    const proxy = new TcpProxy(url.hostname, Number(url.port || 5432));
    await proxy.start();
    url.host = `127.0.0.1:${proxy.port}`;
    return { db, proxy, databaseUrl: url.toString() };
}
/** A private redis-server without persistence (never the shared one), once it answers. */
async function startRedis(port) {
    const child = spawn("/usr/bin/redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
    await eventually(async () => {
        const probe = new Redis(port, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
        probe.on("error", () => undefined);
        try {
            return (await probe.ping()) === "PONG";
        }
        finally {
            probe.disconnect();
        }
    }, 10_000, "redis");
    return child;
}
/**
 * Closed-loop Admit/Settle traffic straight to the control plane: workers admit,
 * and settle every admitted request until the settle is acknowledged (as the data
 * plane's spool does). Outcomes are filed under the phase in which the Admit
 * started and ended (calls straddling a phase change are left out).
 */
class Traffic {
    t;
    tenants;
    /** Acknowledged settles by reservation id: what the caller was told. */
    acknowledged = new Map();
    byPhase = new Map();
    phase = "before";
    running = false;
    workers = [];
    n = 0;
    constructor(t, tenants) {
        this.t = t;
        this.tenants = tenants;
    }
    start(workers = 6) {
        this.running = true;
        this.workers = Array.from({ length: workers }, (_, w) => this.work(w));
    }
    async stop() {
        this.running = false;
        await Promise.all(this.workers);
    }
    mark(phase) {
        this.phase = phase;
        return { settled: this.acknowledged.size };
    }
    settledCount() {
        return this.acknowledged.size;
    }
    settled(count) {
        return eventually(async () => this.acknowledged.size >= count, 30_000, `${count} acknowledged settles`);
    }
    /** Outcome counts per phase, for the report. */
    summary() {
        const out = {};
        for (const [phase, list] of this.byPhase)
            for (const { outcome } of list)
                (out[phase] ??= {})[outcome] = (out[phase][outcome] ?? 0) + 1;
        return out;
    }
    outcomes(phase, tenant) {
        return (this.byPhase.get(phase) ?? []).filter((o) => !tenant || o.tenant === tenant).map((o) => o.outcome);
    }
    async work(w) {
        while (this.running) {
            const { tenant, key } = this.tenants[w % this.tenants.length];
            const i = this.n++;
            const phase = this.phase;
            const d = await this.t.admission.admit({ ...admitReq, credential: secretOf(key) }).catch(() => undefined);
            const outcome = !d ? "error" : d.allowed ? (d.unmetered ? "unmetered" : "allowed") : DenyReason[d.reason];
            if (phase === this.phase)
                this.byPhase.set(phase, [...(this.byPhase.get(phase) ?? []), { tenant, outcome }]);
            if (!d?.allowed) {
                await new Promise((r) => setTimeout(r, 20));
                continue;
            }
            for (;;) {
                try {
                    const s = await this.t.admission.settle({ reservationId: d.reservationId, inputTokens: 10n, outputTokens: BigInt(i % 10) });
                    this.acknowledged.set(d.reservationId, { reservationId: d.reservationId, tenant, inputTokens: s.inputTokens, outputTokens: s.outputTokens, costMicros: s.costMicros });
                    break;
                }
                catch {
                    await new Promise((r) => setTimeout(r, 50));
                }
            }
        }
    }
}
/** The ledger holds each acknowledged settle once, with what was acknowledged, and nothing else. */
async function assertLedgerIsAcknowledged(t, traffic, tenant) {
    const mine = [...traffic.acknowledged.values()].filter((a) => a.tenant === tenant);
    const rows = (await t.cp.database.query("SELECT count(*) AS n, count(DISTINCT reservation_id) AS distinct_n FROM usage_ledger WHERE tenant = $1", [tenant])).rows[0];
    assert.deepEqual([Number(rows.n), Number(rows.distinct_n)], [mine.length, mine.length], `${tenant}: one ledger row per acknowledged settle`);
    const usage = await t.policy.getUsage({ tenant }, admin);
    const sum = (f) => mine.reduce((s, a) => s + f(a), 0n);
    assert.deepEqual([usage.requests, usage.inputTokens, usage.outputTokens, usage.costMicros], [BigInt(mine.length), sum((a) => a.inputTokens), sum((a) => a.outputTokens), sum((a) => a.costMicros)]);
    return usage;
}
//# sourceMappingURL=store-faults.test.js.map
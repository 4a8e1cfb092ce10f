/** The ledger's group commit on PostgreSQL against one INSERT per settle, and the control plane's and data plane's memory. */
import { randomBytes } from "node:crypto";
import pino from "pino";
import { openDatabase } from "../../control-plane/store/database.js";
import { Ledger } from "../../control-plane/store/ledger.js";
import { scratchDatabase } from "../support/databases.js";
import { closedLoop, withCpu } from "./load.js";
import { spawn } from "./processes.js";
const concurrencies = [1, 64];
const columns = "reservation_id, request_id, tenant, user_id, key_id, task, model, provider, input_tokens, output_tokens, cost_micros, outcome, estimated, latency_ms, reserved_at, settled_at";
function row(run, i) {
    const now = Date.now();
    return {
        reservationId: `${run}-${i}`, requestId: "", tenant: `bt${i % 1000}`, user: `bu${i % 10_000}`, keyId: `bk${i % 10_000}`, task: "DRAFT", model: "m-pro", provider: "p1",
        inputTokens: 400, outputTokens: 310, costMicros: 1_020, outcome: "SUCCESS", estimated: false, latencyMs: 900, reservedAtMs: now - 900, settledAtMs: now,
    };
}
/** Settles/s that are durable (committed) on PostgreSQL: the Ledger's group commit vs a single-row INSERT per settle on the same connection pool. */
export async function ledger(bench) {
    const section = "Ledger (durable on PostgreSQL)";
    if (!bench.databaseUrl) {
        bench.report.add({ section, scenario: "ledger rows", note: "skipped: DATABASE_URL not set" });
        return;
    }
    const scratch = await scratchDatabase();
    const db = await openDatabase({ url: scratch.url, logger: pino({ level: "silent" }) });
    const ledger = new Ledger({ db, logger: pino({ level: "silent" }) });
    try {
        await ledger.ensurePartitions(Date.now());
        const single = (r) => db.query(`INSERT INTO usage_ledger (${columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) ON CONFLICT (reservation_id, reserved_at) DO NOTHING`, [r.reservationId, r.requestId, r.tenant, r.user, r.keyId, r.task, r.model, r.provider, String(r.inputTokens), String(r.outputTokens), String(r.costMicros),
            r.outcome, r.estimated, r.latencyMs, new Date(r.reservedAtMs).toISOString(), new Date(r.settledAtMs).toISOString()]);
        for (const c of concurrencies) {
            const run = randomBytes(4).toString("hex");
            bench.report.measured(section, `single-row INSERT per settle c${c}`, await withCpu({}, () => closedLoop(c, bench.durationMs, (i) => single(row(`s${run}`, i)))), { note: "autocommit, the control plane's pool (10 connections)" });
            bench.report.measured(section, `Ledger group commit c${c}`, await withCpu({}, () => closedLoop(c, bench.durationMs, (i) => ledger.append(row(`g${run}`, i)))), {
                versus: `single-row INSERT per settle c${c}`, note: "append() resolves after its batch's COMMIT",
            });
        }
    }
    finally {
        await ledger.close();
        await db.close();
        await scratch.drop();
    }
}
/** Control-plane RSS with a large bundle and a million meters, in a fresh process. */
export async function memory(bench) {
    const sizes = bench.smoke ? { tenants: 10, keys: 1_000 } : { tenants: 1_000, keys: 100_000 };
    const meters = bench.smoke ? 10_000 : 1_000_000;
    const db = bench.databaseUrl ? await scratchDatabase() : undefined;
    const child = await spawn("memory", { sizes, meters, databaseUrl: db?.url });
    try {
        const f = child.info;
        const section = "Memory";
        bench.report.add({ section, scenario: "control plane RSS, started, no bundle", note: `${f.rssIdleMb.toFixed(0)} MB (${db ? "PostgreSQL" : "PGlite in this process"})` });
        bench.report.add({ section, scenario: `control plane RSS, ${sizes.keys.toLocaleString("en-US")} keys and users, ${sizes.tenants.toLocaleString("en-US")} tenants`, note: `${f.rssBundleMb.toFixed(0)} MB (bundle applied in ${(f.applyMs / 1000).toFixed(1)} s)` });
        bench.report.add({ section, scenario: `control plane RSS, + ${f.meters.toLocaleString("en-US")} active meters (memory counters)`, note: `${f.rssMetersMb.toFixed(0)} MB (created through the counter store directly, 10 per lease, in ${(f.metersMs / 1000).toFixed(1)} s)` });
    }
    finally {
        await child.stop();
        await db?.drop();
    }
}
//# sourceMappingURL=storage.js.map
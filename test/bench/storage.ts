/** The ledger's group commit on PostgreSQL against one INSERT per settle, and the control plane's and data plane's memory. */
import { randomBytes } from "node:crypto";
import pino from "pino";
import { openDatabase } from "../../control-plane/store/database.js";
import { insertLedgerRows, Ledger, type LedgerRow } from "../../control-plane/store/ledger.js";
import { scratchDatabase } from "../support/databases.js";
import { alternating } from "./load.js";
import { spawn } from "./processes.js";
import type { Bench } from "./report.js";

const concurrencies = [1, 64] as const;
/** Each ledger row is measured in slices of this alternating with its baseline's. */
const sliceMs = 1_000;

function row(run: string, i: number): LedgerRow {
  const now = Date.now();
  return {
    reservationId: `${run}-${i}`, requestId: "", tenant: `bt${i % 1000}`, user: `bu${i % 10_000}`, keyId: `bk${i % 10_000}`, task: "DRAFT", model: "m-pro", provider: "p1",
    inputTokens: 400, outputTokens: 310, costMicros: 1_020, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, outcome: "SUCCESS", estimated: false, latencyMs: 900, reservedAtMs: now - 900, settledAtMs: now,
  };
}

/**
 * Settles/s that are durable (committed) on PostgreSQL: the Ledger's group commit
 * against the same prepared INSERT ... RETURNING sent once per settle with one row
 * (autocommit), on the same connection pool, in alternating slices.
 */
export async function ledger(bench: Bench): Promise<void> {
  const section = "Ledger (durable on PostgreSQL)";
  if (!bench.databaseUrl) {
    bench.report.add({ section, scenario: "ledger rows", skipped: "DATABASE_URL not set" });
    return;
  }
  const scratch = await scratchDatabase();
  const db = await openDatabase({ url: scratch.url, logger: pino({ level: "silent" }) });
  const ledger = new Ledger({ db, logger: pino({ level: "silent" }) });
  try {
    await ledger.ensurePartitions(Date.now());
    const slices = Math.max(2, Math.round(bench.durationMs / sliceMs));
    for (const c of concurrencies) {
      const run = randomBytes(4).toString("hex");
      const [single, grouped] = await alternating(c, bench.durationMs, slices,
        { op: (i) => insertLedgerRows(db, [row(`s${run}`, i)]), pids: {} },
        { op: (i) => ledger.append(row(`g${run}`, i)), pids: {} },
      );
      bench.report.measured(section, `single-row INSERT per settle c${c}`, single, { note: `the Ledger's prepared INSERT ... RETURNING with one row, autocommit, the control plane's pool (10 connections); ${slices} slices alternating with the row below` });
      bench.report.measured(section, `Ledger group commit c${c}`, grouped, {
        versus: `single-row INSERT per settle c${c}`, note: "append() resolves after its batch's COMMIT",
      });
    }
  } finally {
    await ledger.close();
    await db.close();
    await scratch.drop();
  }
}

/** Control-plane RSS with a large bundle and a million meters, in a fresh process. */
export async function memory(bench: Bench): Promise<void> {
  const sizes = bench.smoke ? { tenants: 10, keys: 1_000 } : { tenants: 1_000, keys: 100_000 };
  const meters = bench.smoke ? 10_000 : 1_000_000;
  const db = bench.databaseUrl ? await scratchDatabase() : undefined;
  const child = await spawn("memory", { sizes, meters, databaseUrl: db?.url });
  try {
    const f = child.info;
    const section = "Memory";
    bench.report.add({ section, scenario: "control plane RSS, started, no bundle", rssMb: f.rssIdleMb, note: `${f.rssIdleMb.toFixed(0)} MB (${db ? "PostgreSQL" : "PGlite in this process"})` });
    bench.report.add({ section, scenario: `control plane RSS, ${sizes.keys.toLocaleString("en-US")} keys and users, ${sizes.tenants.toLocaleString("en-US")} tenants`, rssMb: f.rssBundleMb, note: `${f.rssBundleMb.toFixed(0)} MB (bundle applied in ${(f.applyMs / 1000).toFixed(1)} s)` });
    bench.report.add({ section, scenario: `control plane RSS, + ${f.meters.toLocaleString("en-US")} active meters (memory counters)`, rssMb: f.rssMetersMb, note: `${f.rssMetersMb.toFixed(0)} MB (created through the counter store directly, 10 per lease, in ${(f.metersMs / 1000).toFixed(1)} s)` });
  } finally {
    await child.stop();
    await db?.drop();
  }
}

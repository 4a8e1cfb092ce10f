import assert from "node:assert/strict";
import { describe, test } from "node:test";
import pino from "pino";
import type { Database } from "../../control-plane/store/database.js";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Ledger, visibleIn, type LedgerRow } from "../../control-plane/store/ledger.js";
import { LedgerSpool } from "../../control-plane/store/ledger-spool.js";
import { migrate, migrations } from "../../control-plane/store/migrations.js";
import { CreditGrantStore } from "../../control-plane/store/credit-grants.js";
import { backends, withDatabase } from "../support/databases.js";

const logger = pino({ level: "silent" });
const nov10 = Date.UTC(2026, 10, 10, 12);
const row = (i: number, over: Partial<LedgerRow> = {}): LedgerRow => ({
  reservationId: `res-${i}`, requestId: `req-${i}`, tenant: "acme", user: i % 2 ? "alice" : "bob", keyId: `k${i % 3}`, task: i % 2 ? "DRAFT" : "PRIOR",
  model: "m", provider: "p", inputTokens: 10, outputTokens: 20, costMicros: 3, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, outcome: "SUCCESS", estimated: false, latencyMs: 5,
  reservedAtMs: nov10, settledAtMs: nov10 + 1_000, ...over,
});

async function count(db: Database, where = "true"): Promise<number> {
  const { rows } = await db.query<{ n: number }>(`SELECT count(*) AS n FROM usage_ledger WHERE ${where}`);
  return rows[0]!.n;
}

const nextTick = () => new Promise<void>((r) => setImmediate(r));

for (const backend of backends()) {
  describe(`ledger on ${backend.name}`, { skip: backend.skip }, () => {
    test("group commit: 2,000 concurrent appends land exactly once in far fewer INSERTs", (t) =>
      withDatabase(backend, async (db) => {
        const batches: number[] = [];
        const ledger = new Ledger({ db, logger, onBatchWritten: (rows) => batches.push(rows) });
        await ledger.ensurePartitions(nov10);
        const results = await Promise.all(Array.from({ length: 2000 }, (_, i) => ledger.append(row(i))));
        t.diagnostic(`${batches.length} INSERTs, rows per INSERT: ${batches.join(", ")}`);
        assert.ok(results.every((r) => r.inserted));
        assert.equal(batches.reduce((a, b) => a + b, 0), 2000);
        assert.ok(batches.length <= 20, `2,000 rows in ${batches.length} statements`);
        assert.ok(batches.every((n) => n <= 500), "no INSERT above maxBatchRows");
        assert.equal(await count(db), 2000);
        const { rows } = await db.query<{ n: number }>("SELECT count(DISTINCT reservation_id) AS n FROM usage_ledger");
        assert.equal(rows[0]!.n, 2000);
      }));

    test("group commit: rows appended while an INSERT is in flight all go into the next one; none resolves before its commit", (t) =>
      withDatabase(backend, async (db) => {
        const batches: number[] = [];
        const ledger = new Ledger({ db, logger, onBatchWritten: (rows) => batches.push(rows) });
        // Hold the ledger table: the first INSERT stays in flight until the gate opens.
        let open!: () => void;
        const gate = new Promise<void>((r) => (open = r));
        let locked!: () => void;
        const isLocked = new Promise<void>((r) => (locked = r));
        const holder = db.transaction(async (tx) => {
          await tx.query("LOCK TABLE usage_ledger IN SHARE MODE");
          locked();
          await gate;
        });
        await isLocked;
        let resolved = 0;
        const appends = [ledger.append(row(0)).then((r) => (resolved++, r))];
        await nextTick();
        await nextTick();
        for (let wave = 0; wave < 10; wave++) {
          for (let i = 1; i <= 30; i++) appends.push(ledger.append(row(wave * 30 + i)).then((r) => (resolved++, r)));
          await nextTick();
        }
        assert.equal(resolved, 0, "nothing is acknowledged before it is committed");
        assert.deepEqual(batches, []);
        open();
        await holder;
        const results = await Promise.all(appends);
        t.diagnostic(`rows per INSERT: ${batches.join(", ")}`);
        assert.deepEqual(batches, [1, 300], "one INSERT in flight, then one for everything that queued behind it");
        assert.ok(results.every((r) => r.inserted));
        assert.equal(await count(db), 301);
      }));

    test("a row is readable as soon as append resolves", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        for (let i = 0; i < 5; i++) {
          assert.equal((await ledger.append(row(i, { inputTokens: 1000 + i }))).inserted, true);
          assert.equal(await count(db, `reservation_id = 'res-${i}'`), 1);
          assert.deepEqual(await ledger.find(`res-${i}`), row(i, { inputTokens: 1000 + i }));
        }
      }));

    test("a reservation is recorded once: repeats in a batch and across batches are not inserted, the first row stands", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        const same = await Promise.all([ledger.append(row(1)), ledger.append(row(1, { inputTokens: 999 })), ledger.append(row(2)), ledger.append(row(1, { outputTokens: 1 }))]);
        assert.deepEqual(same.map((r) => r.inserted), [true, false, true, false]);
        assert.equal((await ledger.append(row(1, { outputTokens: 5 }))).inserted, false);
        const again = await Promise.all(Array.from({ length: 50 }, () => ledger.append(row(2, { costMicros: 7 }))));
        assert.ok(again.every((r) => !r.inserted));
        assert.equal(await count(db), 2);
        const found = await ledger.find("res-1");
        assert.equal(found?.inputTokens, 10);
        assert.equal(found?.outputTokens, 20);
        assert.equal(found?.reservedAtMs, nov10);
        assert.equal(await ledger.find("nope"), undefined);
      }));

    test("a failed INSERT rejects every append of its batch and the next batch goes through", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        await db.query("ALTER TABLE usage_ledger RENAME TO usage_ledger_away");
        const failed = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => ledger.append(row(i))));
        assert.ok(failed.every((r) => r.status === "rejected"), "every append of the failed batch rejects");
        await db.query("ALTER TABLE usage_ledger_away RENAME TO usage_ledger");
        const retried = await Promise.all(Array.from({ length: 5 }, (_, i) => ledger.append(row(i))));
        assert.ok(retried.every((r) => r.inserted), "nothing of the failed batch was written");
        assert.equal(await count(db), 5);
      }));

    test("a row that cannot be stored is refused alone, without spoiling its batch", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        const results = await Promise.allSettled([
          ledger.append(row(1)),
          ledger.append(row(2, { inputTokens: 1.5 })),
          ledger.append(row(3, { tenant: "a\u0000b" })),
          ledger.append(row(4, { costMicros: 2 ** 53 })),
          ledger.append(row(5, { reservedAtMs: Number.NaN })),
          ledger.append(row(6, { latencyMs: 12.6 })),
          ledger.append(row(7, { cacheReadTokens: 6, cacheWriteTokens: 5 })), // more cache tokens than input tokens (10)
          ledger.append(row(8, { reasoningTokens: 21 })), // more reasoning than output tokens (20)
        ]);
        assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "rejected", "rejected", "rejected", "fulfilled", "rejected", "rejected"]);
        assert.equal((await ledger.find("res-6"))?.latencyMs, 13);
        assert.equal(await count(db), 2);
      }));

    test("the usage parts migration keeps existing rows (none reported: 0) and GetUsage sums them with the new ones", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        // Back to the schema before the migration, with a row written then.
        const version = migrations.indexOf(migrations.find((m) => m.includes("cache_read_tokens"))!) + 1;
        await db.query("ALTER TABLE usage_ledger DROP COLUMN cache_read_tokens, DROP COLUMN cache_write_tokens, DROP COLUMN reasoning_tokens");
        await db.query("DELETE FROM schema_migrations WHERE version >= $1", [version]);
        await db.query(
          `INSERT INTO usage_ledger (reservation_id, request_id, tenant, user_id, key_id, task, model, provider, input_tokens, output_tokens, cost_micros,
             outcome, estimated, latency_ms, reserved_at, settled_at) VALUES ('old-1', 'req-old', 'acme', 'alice', 'k1', 'DRAFT', 'm', 'p', 100, 50, 9,
             'SUCCESS', false, 5, $1, $1)`,
          [new Date(nov10).toISOString()],
        );
        assert.ok((await migrate(db)).includes(version));
        assert.deepEqual(await ledger.find("old-1").then((r) => r && [r.inputTokens, r.cacheReadTokens, r.cacheWriteTokens, r.outputTokens, r.reasoningTokens]), [100, 0, 0, 50, 0]);
        await ledger.append(row(2, { inputTokens: 1_000, cacheReadTokens: 800, cacheWriteTokens: 100, outputTokens: 300, reasoningTokens: 200 }));
        const { totals } = await ledger.usage({ tenant: "acme", startMs: Date.UTC(2026, 10, 1), endMs: Date.UTC(2026, 11, 1) });
        assert.deepEqual(totals, { requests: 2, inputTokens: 1_100, outputTokens: 350, cacheReadTokens: 800, cacheWriteTokens: 100, reasoningTokens: 200, costMicros: 12 });
      }));

    test("a spooled row from before the usage parts replays with none", () =>
      withDatabase(backend, async (db) => {
        const dir = await mkdtemp(join(tmpdir(), "adm-spool-"));
        try {
          const { cacheReadTokens: _r, cacheWriteTokens: _w, reasoningTokens: _x, ...old } = row(1);
          await writeFile(join(dir, "ledger-spool.jsonl"), `${JSON.stringify(old)}\n`);
          const ledger = new Ledger({ db, logger, spool: new LedgerSpool({ dir }) });
          assert.equal(await ledger.replaySpool(), 1);
          const found = await ledger.find("res-1");
          assert.deepEqual(found && [found.inputTokens, found.cacheReadTokens, found.cacheWriteTokens, found.reasoningTokens], [10, 0, 0, 0]);
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      }));

    test("close() writes everything queued", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger, maxBatchRows: 7 });
        const pending = Array.from({ length: 50 }, (_, i) => ledger.append(row(i)));
        await ledger.close();
        assert.equal(await count(db), 50);
        assert.ok((await Promise.all(pending)).every((r) => r.inserted));
      }));

    test("int8 comes back as an exact number on both backends, or as a string beyond 2^53; sums are exact", () =>
      withDatabase(backend, async (db) => {
        const { rows } = await db.query<Record<string, unknown>>(
          "SELECT 2147483648::int8 AS a, (2^52)::int8 + 1 AS b, 9007199254740993::int8 AS c, count(*) AS n, sum(x) AS s FROM (VALUES (4294967296::int8), (4294967297::int8)) v(x)",
        );
        assert.deepEqual(rows[0], { a: 2147483648, b: 2 ** 52 + 1, c: "9007199254740993", n: 2, s: "8589934593" });
      }));

    test("usage totals and grouping by user, task, model, key and day are exact beyond 2^32", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        const big = 3_000_000_000_000; // well past 2^32 and 2^31
        await Promise.all([
          ledger.append(row(1, { inputTokens: big, cacheReadTokens: big - 7, cacheWriteTokens: 5, costMicros: big, reservedAtMs: Date.UTC(2026, 10, 10, 23, 59, 59, 999) })),
          ledger.append(row(2, { inputTokens: big + 1, outputTokens: 5_000_000_000, model: "n", reservedAtMs: Date.UTC(2026, 10, 11) })),
          ledger.append(row(3, { costMicros: 4_294_967_296, reasoningTokens: 19 })),
          ledger.append(row(4, { reservedAtMs: Date.UTC(2026, 9, 31, 23, 59, 59, 999) })), // before the period
          ledger.append(row(5, { reservedAtMs: Date.UTC(2026, 11, 1) })), // at endMs: excluded
          ledger.append(row(6, { tenant: "other", inputTokens: big })),
        ]);
        const period = { tenant: "acme", startMs: Date.UTC(2026, 10, 1), endMs: Date.UTC(2026, 11, 1) };
        const all = await ledger.usage(period);
        const parts = { cacheReadTokens: big - 7, cacheWriteTokens: 5, reasoningTokens: 19 };
        assert.deepEqual(all, { totals: { requests: 3, inputTokens: 2 * big + 11, outputTokens: 5_000_000_040, ...parts, costMicros: big + 4_294_967_299 }, rows: [] });

        const byUserDay = await ledger.usage({ ...period, groupBy: ["user", "day"] });
        assert.deepEqual(byUserDay.totals, all.totals);
        assert.deepEqual(byUserDay.rows, [
          { group: { user: "alice", day: "2026-11-10" }, totals: { requests: 2, inputTokens: big + 10, outputTokens: 40, ...parts, costMicros: big + 4_294_967_296 } },
          { group: { user: "bob", day: "2026-11-11" }, totals: { requests: 1, inputTokens: big + 1, outputTokens: 5_000_000_000, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, costMicros: 3 } },
        ]);
        const byModelKeyTask = await ledger.usage({ ...period, groupBy: ["model", "key", "task"] });
        assert.deepEqual(byModelKeyTask.rows.map((r) => [r.group, r.totals.requests]), [
          [{ model: "m", key: "k0", task: "DRAFT" }, 1],
          [{ model: "m", key: "k1", task: "DRAFT" }, 1],
          [{ model: "n", key: "k2", task: "PRIOR" }, 1],
        ]);
        const filtered = await ledger.usage({ ...period, user: "alice", task: "DRAFT", model: "m", groupBy: ["key"] });
        assert.equal(filtered.totals.requests, 2);
        assert.equal(filtered.totals.inputTokens, big + 10);
        const none = await ledger.usage({ ...period, tenant: "nobody", groupBy: ["user"] });
        assert.deepEqual(none, { totals: { requests: 0, inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, costMicros: 0 }, rows: [] });
      }));

    test("sums beyond 2^53 are refused, not rounded", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        const half = 2 ** 52 + 1;
        await Promise.all([ledger.append(row(1, { costMicros: half })), ledger.append(row(2, { costMicros: half }))]);
        await assert.rejects(ledger.usage({ tenant: "acme", startMs: 0, endMs: Date.UTC(2030, 0, 1) }), /beyond 2\^53/);
      }));

    test("rebuild sums: per window start, by user, key and task, exact, in one snapshot that tells which rows it saw", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        const big = 5_000_000_000;
        const written = await Promise.all([
          ledger.append(row(1, { inputTokens: big, outputTokens: big, costMicros: big })),
          ledger.append(row(7, { inputTokens: 1, outputTokens: 2, costMicros: 3 })), // alice, k1, DRAFT: same group as row 1
          ledger.append(row(2, { tenant: "beta" })),
          ledger.append(row(3, { reservedAtMs: nov10 - 1 })), // before the second window
        ]);
        const { snapshot, sums } = await ledger.rebuildSums(["acme"], [nov10 - 60_000, nov10, Date.UTC(2027, 0, 1)]);
        assert.deepEqual(sums, [
          [
            { tenant: "acme", user: "alice", keyId: "k0", task: "DRAFT", requests: 1, tokens: 30, costMicros: 3 },
            { tenant: "acme", user: "alice", keyId: "k1", task: "DRAFT", requests: 2, tokens: 2 * big + 3, costMicros: big + 3 },
          ],
          [{ tenant: "acme", user: "alice", keyId: "k1", task: "DRAFT", requests: 2, tokens: 2 * big + 3, costMicros: big + 3 }],
          [],
        ]);
        assert.ok(written.every((w) => w.inserted && w.xid !== undefined && visibleIn(snapshot, w.xid)), "the snapshot saw every committed row");
        const later = await ledger.append(row(9));
        assert.equal(visibleIn(snapshot, later.xid!), false, "a row committed after the snapshot is not in it");
        assert.equal(await ledger.xidOf(row(9).reservationId), later.xid);
        assert.equal(await ledger.xidOf("never-written"), undefined);
        const nobody = await ledger.rebuildSums(["nobody"], [0]);
        assert.deepEqual(nobody.sums, [[]], "a tenant without rows still gets its snapshot");
        assert.match(nobody.snapshot, /^\d+:\d+:/);
      }));

    test("snapshot visibility follows PostgreSQL's rules: below xmin, or below xmax and not in progress", () => {
      assert.equal(visibleIn("100:105:101,103", "99"), true);
      assert.equal(visibleIn("100:105:101,103", "100"), true);
      assert.equal(visibleIn("100:105:101,103", "101"), false);
      assert.equal(visibleIn("100:105:101,103", "102"), true);
      assert.equal(visibleIn("100:105:101,103", "105"), false);
      assert.equal(visibleIn("100:100:", "100"), false);
      assert.equal(visibleIn("4294967396:4294967400:", "4294967399"), true, "xid8 beyond 32 bits");
      assert.equal(visibleIn("100:100:", null), true, "rows older than the xid column predate every snapshot");
    });

    test("monthly partitions: rows on either side of a month boundary land in two partitions; retention drops the old one", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        await Promise.all([ledger.ensurePartitions(Date.UTC(2026, 9, 15)), ledger.ensurePartitions(Date.UTC(2026, 9, 15))]);
        await ledger.ensurePartitions(Date.UTC(2026, 9, 20));
        const names = await db.query<{ name: string }>("SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'usage_ledger'::regclass ORDER BY 1");
        assert.deepEqual(names.rows.map((r) => r.name), ["usage_ledger_default", "usage_ledger_y2026m10", "usage_ledger_y2026m11", "usage_ledger_y2026m12"]);

        await Promise.all([
          ledger.append(row(1, { reservedAtMs: Date.UTC(2026, 9, 31, 23, 59, 59, 999) })),
          ledger.append(row(2, { reservedAtMs: Date.UTC(2026, 10, 1) })),
        ]);
        const parts = await db.query<{ p: string; n: number }>("SELECT tableoid::regclass::text AS p, count(*) AS n FROM usage_ledger GROUP BY 1 ORDER BY 1");
        assert.deepEqual(parts.rows.map((r) => [r.p, r.n]), [["usage_ledger_y2026m10", 1], ["usage_ledger_y2026m11", 1]]);

        assert.equal(await ledger.dropPartitionsBefore(Date.UTC(2026, 10, 1)), 1);
        assert.equal(await ledger.dropPartitionsBefore(Date.UTC(2026, 10, 1)), 0);
        assert.equal(await ledger.find("res-1"), undefined);
        assert.ok(await ledger.find("res-2"));
        assert.equal((await ledger.append(row(1, { reservedAtMs: Date.UTC(2026, 9, 31) }))).inserted, true, "a late row of a dropped month goes to the default partition");
      }));

    test("retention keeps each tenant's cost of the rows it drops: a prepaid tenant's all-time spend (rebuild sums, credit totals) is unchanged", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        const grants = new CreditGrantStore(db);
        await ledger.ensurePartitions(Date.UTC(2026, 9, 15));
        await Promise.all([
          ledger.append(row(1, { reservedAtMs: Date.UTC(2026, 9, 2), costMicros: 700 })),
          ledger.append(row(2, { reservedAtMs: Date.UTC(2026, 9, 30), costMicros: 11 })),
          ledger.append(row(3, { reservedAtMs: Date.UTC(2026, 10, 3), costMicros: 5 })),
          ledger.append(row(4, { reservedAtMs: Date.UTC(2026, 9, 3), costMicros: 9, tenant: "beta" })),
          // A month without a partition: the row waits in the default partition, which retention empties too.
          ledger.append(row(5, { reservedAtMs: Date.UTC(2025, 0, 3), costMicros: 1_000 })),
        ]);
        assert.equal((await grants.grant({ tenant: "acme", grantId: "g1", amountMicros: 5_000, note: "", actor: "admin", atMs: nov10 })).status, "granted");
        const spent = { spentMicros: 1_716, grantedMicros: 5_000 };
        assert.deepEqual((await ledger.rebuildSums(["acme"], [0], ["acme", "beta"])).credits, new Map([["acme", spent], ["beta", { spentMicros: 9, grantedMicros: 0 }]]));
        assert.equal(await ledger.dropPartitionsBefore(Date.UTC(2026, 10, 1)), 1);
        assert.equal(await count(db), 1);
        assert.deepEqual((await ledger.rebuildSums(["acme"], [0], ["acme", "beta"])).credits, new Map([["acme", spent], ["beta", { spentMicros: 9, grantedMicros: 0 }]]));
        assert.deepEqual(await grants.totals("acme"), spent);
        const rollups = await db.query<{ tenant: string; month: Date | string; cost: number }>("SELECT tenant, month, cost_micros AS cost FROM ledger_cost_rollups ORDER BY 1, 2");
        assert.deepEqual(rollups.rows.map((r) => [r.tenant, new Date(r.month).toISOString(), r.cost]), [
          ["acme", "2025-01-01T00:00:00.000Z", 1_000], ["acme", "2026-10-01T00:00:00.000Z", 711], ["beta", "2026-10-01T00:00:00.000Z", 9],
        ]);
      }));

    test("rows of a month without a partition wait in the default partition and move into theirs when it is created", () =>
      withDatabase(backend, async (db) => {
        const ledger = new Ledger({ db, logger });
        const feb = Date.UTC(2027, 1, 14);
        await Promise.all([ledger.append(row(1, { reservedAtMs: feb })), ledger.append(row(2, { reservedAtMs: Date.UTC(2025, 0, 1) }))]);
        assert.equal(await count(db, "tableoid = 'usage_ledger_default'::regclass"), 2);
        await ledger.ensurePartitions(Date.UTC(2027, 0, 5));
        const parts = await db.query<{ p: string; id: string }>("SELECT tableoid::regclass::text AS p, reservation_id AS id FROM usage_ledger ORDER BY 2");
        assert.deepEqual(parts.rows.map((r) => [r.id, r.p]), [["res-1", "usage_ledger_y2027m02"], ["res-2", "usage_ledger_y2025m01"]]);
        assert.equal((await ledger.append(row(1, { reservedAtMs: feb }))).inserted, false, "still recorded once after the move");
        assert.equal(await ledger.dropPartitionsBefore(Date.UTC(2026, 0, 1)), 1);
        assert.equal(await count(db), 1);
      }));
  });
}

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import pino from "pino";
import { Ledger, type LedgerRow } from "../../control-plane/store/ledger.js";
import { backends } from "../support/databases.js";

const logger = pino({ level: "silent" });
const row = (i: number, over: Partial<LedgerRow> = {}): LedgerRow => ({
  reservationId: `res-${i}`, requestId: `req-${i}`, tenant: "acme", user: i % 2 ? "alice" : "bob", keyId: `k${i % 3}`, task: i % 2 ? "DRAFT" : "PRIOR",
  model: "m", provider: "p", inputTokens: 10, outputTokens: 20, costMicros: 3, outcome: "SUCCESS", estimated: false, latencyMs: 5,
  reservedAtMs: Date.UTC(2026, 10, 10, 12), settledAtMs: Date.UTC(2026, 10, 10, 12, 0, 1), ...over,
});

for (const backend of backends()) {
  describe(`ledger on ${backend.name}`, { skip: backend.skip }, () => {
    test("group commit: 2,000 concurrent appends land exactly once in far fewer INSERTs", async () => {
      const { db, drop } = await backend.open();
      const batches: number[] = [];
      const ledger = new Ledger({ db, logger, onBatchWritten: (rows) => batches.push(rows) });
      try {
        await ledger.ensurePartitions(Date.UTC(2026, 10, 1));
        const results = await Promise.all(Array.from({ length: 2000 }, (_, i) => ledger.append(row(i))));
        assert.ok(results.every((r) => r.inserted));
        assert.equal(batches.reduce((a, b) => a + b, 0), 2000);
        assert.ok(batches.length <= 20, `2,000 rows in ${batches.length} statements`);
        const { rows } = await db.query<{ n: unknown }>("SELECT count(*) AS n FROM usage_ledger");
        assert.equal(Number(rows[0]!.n), 2000);
      } finally {
        await ledger.close();
        await drop();
      }
    });

    test("a reservation is recorded once: repeats in a batch and across batches are not inserted", async () => {
      const { db, drop } = await backend.open();
      const ledger = new Ledger({ db, logger });
      try {
        const same = await Promise.all([ledger.append(row(1)), ledger.append(row(1, { inputTokens: 999 })), ledger.append(row(2))]);
        assert.deepEqual(same.map((r) => r.inserted), [true, false, true]);
        assert.equal((await ledger.append(row(1, { outputTokens: 5 }))).inserted, false);
        const found = await ledger.find("res-1");
        assert.equal(found?.inputTokens, 10, "the first row stands");
        assert.equal(found?.reservedAtMs, Date.UTC(2026, 10, 10, 12));
        assert.equal(await ledger.find("nope"), undefined);
      } finally {
        await drop();
      }
    });

    test("usage totals, grouping and window sums are exact beyond 2^31", async () => {
      const { db, drop } = await backend.open();
      const ledger = new Ledger({ db, logger });
      try {
        const big = 3_000_000_000_000;
        await Promise.all([
          ledger.append(row(1, { inputTokens: big, costMicros: big })),
          ledger.append(row(2, { inputTokens: big + 1 })),
          ledger.append(row(3, { reservedAtMs: Date.UTC(2026, 9, 30) })),
        ]);
        const nov = await ledger.usage({ tenant: "acme", startMs: Date.UTC(2026, 10, 1), endMs: Date.UTC(2026, 11, 1), groupBy: ["user", "day"] });
        assert.deepEqual(nov.totals, { requests: 2, inputTokens: 2 * big + 1, outputTokens: 40, costMicros: big + 3 });
        assert.deepEqual(nov.rows.map((r) => [r.group.user, r.group.day, r.totals.inputTokens]), [["alice", "2026-11-10", big], ["bob", "2026-11-10", big + 1]]);
        const alice = await ledger.usage({ tenant: "acme", user: "alice", task: "DRAFT", startMs: 0, endMs: Date.UTC(2027, 0, 1) });
        assert.equal(alice.totals.requests, 2);
        const sums = await ledger.windowSums(Date.UTC(2026, 10, 1));
        assert.equal(sums.reduce((a, s) => a + s.tokens, 0), 2 * big + 1 + 40);
        assert.equal(sums.reduce((a, s) => a + s.requests, 0), 2);
      } finally {
        await drop();
      }
    });

    test("monthly partitions and retention", async () => {
      const { db, drop } = await backend.open();
      const ledger = new Ledger({ db, logger });
      try {
        await ledger.ensurePartitions(Date.UTC(2026, 9, 15));
        await ledger.append(row(1, { reservedAtMs: Date.UTC(2026, 9, 31, 23, 59, 59) }));
        await ledger.append(row(2, { reservedAtMs: Date.UTC(2026, 10, 1) }));
        const parts = await db.query<{ p: string; n: unknown }>("SELECT tableoid::regclass::text AS p, count(*) AS n FROM usage_ledger GROUP BY 1 ORDER BY 1");
        assert.deepEqual(parts.rows.map((r) => [r.p, Number(r.n)]), [["usage_ledger_y2026m10", 1], ["usage_ledger_y2026m11", 1]]);
        assert.equal(await ledger.dropPartitionsBefore(Date.UTC(2026, 10, 1)), 1);
        assert.equal(await ledger.find("res-1"), undefined);
        assert.ok(await ledger.find("res-2"));
      } finally {
        await drop();
      }
    });
  });
}

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import type { CounterStore, LeaseRecord, LeaseUsage, ReserveRequest } from "../control-plane/counter-store.js";
import { reservationOf, type MeterSpec } from "./support/meter-specs.js";
import { bucketRetryAfterMs, meterBucket } from "../control-plane/token-bucket.js";

/**
 * One behaviour suite for every CounterStore implementation (memory, Redis,
 * Redis Cluster). Times are real wall-clock instants, so backends that use
 * their server's clock agree; nothing sleeps: expiry is tested with leases
 * whose expiry is already past.
 */
/**
 * `open(clock)`: a store whose token buckets take their time from `clock` when it is given
 * (memory: housekeeping and reads; reserves pass it as nowMs; Redis: instead of TIME).
 */
export function counterStoreContract(name: string, open: (clock?: () => number) => Promise<CounterStore>, options: { skip?: string | false } = {}): void {
  describe(`CounterStore contract: ${name}`, { skip: options.skip || false }, () => {
    const generation = "g1/100:100:";
    /** A new tenant whose counters are rebuilt (empty), as every decision path makes sure first. */
    const fresh = async (store: CounterStore, id = `t-${randomBytes(6).toString("hex")}`) => {
      assert.equal(await store.rebuild(id, generation, []), true);
      return id;
    };
    const op = (key: string, amount: number, limit: number, extra: Partial<MeterSpec> = {}): MeterSpec => ({
      key, unit: "tokens", amount, limit, enforce: true, expiresAtMs: Date.now() + 60_000, ...extra,
    });
    const reserve = (store: CounterStore, t: string, meters: MeterSpec[], extra: Partial<ReserveRequest> = {}) =>
      store.reserve({
        tenant: t, leaseId: randomBytes(8).toString("hex"), reservationId: `rid-${randomBytes(4).toString("hex")}`, requestId: "",
        ...reservationOf(meters), leaseExpiresAtMs: Date.now() + 60_000, nowMs: Date.now(), ...extra,
      });
    const usage = (inputTokens: number, outputTokens: number, costMicros = 0): LeaseUsage => ({
      inputTokens, outputTokens, costMicros, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, outcome: 1, estimated: false, provider: "p", model: "m", latencyMs: 5, settledAtMs: Date.now(),
    });
    const withStore = (title: string, fn: (store: CounterStore) => Promise<void>) =>
      test(title, async () => {
        const store = await open();
        try {
          await fn(store);
        } finally {
          await store.close();
        }
      });

    withStore("reserves every meter or none", async (store) => {
      const t = await fresh(store);
      const first = await reserve(store, t, [op("a", 5, 10), op("b", 5, 10, { unit: "cost" })]);
      assert.equal(first.status, "reserved");
      assert.deepEqual(first.status === "reserved" && first.used, [5, 5]);
      const blocked = await reserve(store, t, [op("a", 3, 10), op("b", 6, 10, { unit: "cost" })]);
      assert.equal(blocked.status, "blocked");
      assert.equal(blocked.status === "blocked" && blocked.index, 1);
      assert.deepEqual(blocked.status === "blocked" && blocked.used, [5, 5], "a denial reports every meter's value");
      assert.deepEqual(await store.read(t, ["a", "b"]), [5, 5], "a blocked reservation changes nothing");
    });

    withStore("admits exactly N of 1,000 concurrent reservations", async (store) => {
      const t = await fresh(store);
      const results = await Promise.all(Array.from({ length: 1000 }, () => reserve(store, t, [op("rpm", 1, 137, { unit: "requests" }), op("tokens", 10, 1_000_000)])));
      assert.equal(results.filter((r) => r.status === "reserved").length, 137);
      assert.deepEqual(await store.read(t, ["rpm", "tokens"]), [137, 1370]);
    });

    withStore("meters that do not enforce count but never block", async (store) => {
      const t = await fresh(store);
      const r = await reserve(store, t, [op("soft", 50, 10, { enforce: false }), op("hard", 1, 10, { unit: "requests" })]);
      assert.equal(r.status, "reserved");
      assert.deepEqual(await store.read(t, ["soft", "hard"]), [50, 1]);
    });

    withStore("a repeated request id returns the first lease and reserves nothing more", async (store) => {
      const t = await fresh(store);
      const first = await reserve(store, t, [op("k", 4, 100)], { requestId: "req-1", leaseId: "lease-1", reservationId: "rid-1" });
      assert.equal(first.status, "reserved");
      const again = await reserve(store, t, [op("k", 4, 100)], { requestId: "req-1", leaseId: "lease-2", reservationId: "rid-2" });
      assert.equal(again.status, "duplicate");
      assert.equal(again.status === "duplicate" && again.lease.reservationId, "rid-1");
      assert.deepEqual(await store.read(t, ["k"]), [4]);
      const other = await reserve(store, await fresh(store), [op("k", 4, 100)], { requestId: "req-1" });
      assert.equal(other.status, "reserved", "request ids are per tenant");
    });

    withStore("settle applies actual usage once and releases concurrency", async (store) => {
      const t = await fresh(store);
      await reserve(store, t, [op("tok", 100, 1000), op("conc", 1, 5, { unit: "concurrency", expiresAtMs: 0 }), op("cost", 70, 1000, { unit: "cost" })], { leaseId: "L1" });
      assert.deepEqual(await store.read(t, ["tok", "conc", "cost"]), [100, 1, 70]);
      const settled = await store.settle({ tenant: t, leaseId: "L1", usage: usage(30, 170, 55), nowMs: Date.now(), graceMs: 30_000 });
      assert.equal(settled.status, "settled");
      assert.deepEqual(await store.read(t, ["tok", "conc", "cost"]), [200, 0, 55], "actual may exceed the estimate");
      const again = await store.settle({ tenant: t, leaseId: "L1", usage: usage(1, 1, 1), nowMs: Date.now(), graceMs: 30_000 });
      assert.equal(again.status, "already");
      assert.equal(again.status === "already" && again.lease.usage?.outputTokens, 170, "the first result stands");
      assert.deepEqual(await store.read(t, ["tok", "conc", "cost"]), [200, 0, 55]);
      assert.equal((await store.settle({ tenant: t, leaseId: "nope", usage: usage(1, 1), nowMs: Date.now(), graceMs: 1 })).status, "missing");
      assert.equal((await store.settle({ tenant: await fresh(store), leaseId: "L1", usage: usage(1, 1), nowMs: Date.now(), graceMs: 1 })).status, "missing", "leases are per tenant");
    });

    withStore("open leases are counted per tenant until settled or expired", async (store) => {
      const t = await fresh(store);
      const other = await fresh(store);
      assert.equal(await store.openLeases(t), 0);
      await reserve(store, t, [op("tok", 1, 1000)], { leaseId: "O1" });
      await reserve(store, t, [op("tok", 1, 1000)], { leaseId: "O2" });
      await reserve(store, t, [op("tok", 1, 1000)], { leaseId: "O3", leaseExpiresAtMs: Date.now() - 1 });
      await reserve(store, other, [op("tok", 1, 1000)], { leaseId: "O1" });
      await reserve(store, t, [op("tok", 5000, 1000)], { leaseId: "blocked" });
      assert.equal(await store.openLeases(t), 3, "a blocked reservation holds no lease");
      await store.settle({ tenant: t, leaseId: "O1", usage: usage(1, 0), nowMs: Date.now(), graceMs: 30_000 });
      assert.equal(await store.openLeases(t), 2, "a settled lease is no longer open, recorded or not");
      await store.markRecorded(t, "O1");
      await store.claimDue(Date.now(), 60_000, 1000);
      assert.equal(await store.openLeases(t), 1, "an expired lease is no longer open");
      assert.equal(await store.openLeases(other), 1, "leases are per tenant");
      assert.equal(await store.openLeases(`t-never-${randomBytes(4).toString("hex")}`), 0);
    });

    withStore("concurrent settles of one lease apply it once", async (store) => {
      const t = await fresh(store);
      await reserve(store, t, [op("tok", 10, 1000)], { leaseId: "L" });
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => store.settle({ tenant: t, leaseId: "L", usage: usage(i, 100), nowMs: Date.now(), graceMs: 30_000 })));
      assert.equal(results.filter((r) => r.status === "settled").length, 1);
      const winner = results.find((r) => r.status === "settled")!;
      const total = winner.status === "settled" ? winner.lease.usage!.inputTokens + 100 : -1;
      assert.deepEqual(await store.read(t, ["tok"]), [total]);
    });

    withStore("renew moves an open lease's expiry; settled leases cannot be renewed", async (store) => {
      const t = await fresh(store);
      await reserve(store, t, [op("x", 1, 10)], { leaseId: "R" });
      const later = Date.now() + 600_000;
      const renewed = await store.renew(t, "R", later);
      assert.equal(renewed?.expiresAtMs, later);
      await store.settle({ tenant: t, leaseId: "R", usage: usage(1, 0), nowMs: Date.now(), graceMs: 30_000 });
      assert.equal(await store.renew(t, "R", later), undefined);
      assert.equal(await store.renew(t, "unknown", later), undefined);
    });

    withStore("expired leases are claimed once, keep their estimate and release concurrency", async (store) => {
      const t = await fresh(store);
      await reserve(store, t, [op("tok", 40, 1000), op("conc", 1, 5, { unit: "concurrency", expiresAtMs: 0 })], { leaseId: "E", leaseExpiresAtMs: Date.now() - 1 });
      const claimed = await store.claimDue(Date.now(), 60_000, 1000);
      const mine = claimed.filter((l) => l.tenant === t);
      assert.equal(mine.length, 1);
      assert.equal(mine[0]!.state, "expired");
      assert.equal(mine[0]!.generation, generation, "a claimed lease names the generation it lives in");
      assert.deepEqual(await store.read(t, ["tok", "conc"]), [40, 0]);
      assert.equal((await store.claimDue(Date.now(), 60_000, 1000)).filter((l) => l.tenant === t).length, 0, "not handed out again within the grace period");
      const late = await store.settle({ tenant: t, leaseId: "E", usage: usage(1, 1), nowMs: Date.now(), graceMs: 1 });
      assert.equal(late.status, "already");
      assert.equal(late.status === "already" && late.lease.state, "expired");
      await store.markRecorded(t, "E");
      assert.deepEqual(await store.read(t, ["tok", "conc"]), [40, 0]);
    });

    withStore("settled leases whose ledger write was not confirmed come back after the grace period", async (store) => {
      const t = await fresh(store);
      await reserve(store, t, [op("tok", 5, 1000)], { leaseId: "S" });
      await store.settle({ tenant: t, leaseId: "S", usage: usage(2, 3), nowMs: Date.now() - 10_000, graceMs: 1 });
      const claimed = (await store.claimDue(Date.now(), 0, 1000)).filter((l) => l.tenant === t);
      assert.equal(claimed.length, 1);
      assert.equal(claimed[0]!.state, "settled");
      assert.equal(claimed[0]!.usage?.outputTokens, 3);
      await store.markRecorded(t, "S");
      assert.equal((await store.claimDue(Date.now() + 1, 0, 1000)).filter((l) => l.tenant === t).length, 0, "recorded leases are done");
    });

    withStore("charge, read and reset", async (store) => {
      const t = await fresh(store);
      await store.charge(t, [{ key: "m", amount: 12, expiresAtMs: Date.now() + 60_000 }, { key: "n", amount: 3, expiresAtMs: Date.now() + 60_000 }], generation);
      await store.charge(t, [{ key: "m", amount: 8, expiresAtMs: Date.now() + 60_000 }], generation);
      assert.deepEqual(await store.read(t, ["m", "n", "absent"]), [20, 3, 0]);
      assert.equal(await store.reset(t, "m"), 20);
      assert.deepEqual(await store.read(t, ["m"]), [0]);
    });

    withStore("a cold tenant refuses reservations and settles until rebuilt, once, into a generation", async (store) => {
      const t = `t-${randomBytes(6).toString("hex")}`;
      assert.equal(await store.generation(t), undefined);
      assert.deepEqual(await reserve(store, t, [op("tok", 1, 10)]), { status: "cold" });
      assert.deepEqual(await store.settle({ tenant: t, leaseId: "L", usage: usage(1, 1), nowMs: Date.now(), graceMs: 1 }), { status: "cold" });
      assert.equal(await store.charge(t, [{ key: "tok", amount: 1, expiresAtMs: Date.now() + 60_000 }], generation), false, "no charge lands on a cold tenant");
      assert.deepEqual(await store.read(t, ["tok"]), [0]);

      const rebuilt = [{ key: "tok", amount: 7, expiresAtMs: Date.now() + 60_000 }];
      const races = await Promise.all([store.rebuild(t, "gA/1:1:", rebuilt), store.rebuild(t, "gB/1:1:", rebuilt)]);
      assert.deepEqual(races.sort(), [false, true], "exactly one rebuild lands");
      const winner = races[0] ? "gA/1:1:" : (await store.generation(t))!;
      assert.deepEqual(await store.read(t, ["tok"]), [7]);
      assert.equal(await store.generation(t), winner);

      assert.equal(await store.charge(t, [{ key: "tok", amount: 5, expiresAtMs: Date.now() + 60_000 }], "gOther/1:1:"), false, "a charge for another generation is refused");
      assert.equal(await store.charge(t, [{ key: "tok", amount: 1, expiresAtMs: Date.now() + 60_000 }], winner), true);
      assert.deepEqual(await store.read(t, ["tok"]), [8]);
      assert.equal((await reserve(store, t, [op("tok", 2, 10)], { leaseId: "L" })).status, "reserved");
      const settled = await store.settle({ tenant: t, leaseId: "L", usage: usage(1, 0), nowMs: Date.now(), graceMs: 1 });
      assert.equal(settled.status === "settled" && settled.generation, winner, "settles report the generation they ran in");
      assert.equal(await store.markRecorded(t, "L"), winner);
      const missing = await store.settle({ tenant: t, leaseId: "gone", usage: usage(1, 0), nowMs: Date.now(), graceMs: 1 });
      assert.deepEqual(missing, { status: "missing", generation: winner });
    });

    withStore("meters whose window ended read as zero", async (store) => {
      const t = await fresh(store);
      await store.charge(t, [{ key: "old", amount: 9, expiresAtMs: Date.now() - 1 }], generation);
      assert.deepEqual(await store.read(t, ["old"]), [0]);
      const r = await reserve(store, t, [op("old", 10, 10)]);
      assert.equal(r.status, "reserved");
    });

    withStore("renewing to an earlier expiry makes the lease due at that time", async (store) => {
      const t = await fresh(store);
      await reserve(store, t, [op("conc", 1, 5, { unit: "concurrency", expiresAtMs: 0 })], { leaseId: "early", leaseExpiresAtMs: Date.now() + 600_000 });
      assert.equal((await store.claimDue(Date.now(), 60_000, 1000)).filter((l) => l.tenant === t).length, 0);
      await store.renew(t, "early", Date.now() - 1);
      const claimed = (await store.claimDue(Date.now(), 60_000, 1000)).filter((l) => l.tenant === t);
      assert.deepEqual(claimed.map((l) => [l.leaseId, l.state]), [["early", "expired"]]);
      assert.deepEqual(await store.read(t, ["conc"]), [0]);
    });

    withStore("claimDue hands out at most `limit` leases per call, across tenants, each once", async (store) => {
      const tenants = await Promise.all(Array.from({ length: 12 }, () => fresh(store)));
      for (const t of tenants) {
        for (let i = 0; i < 3; i++) await reserve(store, t, [op("tok", 1, 100)], { leaseId: `L${i}`, leaseExpiresAtMs: Date.now() - 1 });
      }
      const mine = new Set(tenants);
      const seen = new Set<string>();
      for (let round = 0; round < 20; round++) {
        const batch = await store.claimDue(Date.now(), 600_000, 5);
        assert.ok(batch.length <= 5, `${batch.length} leases in one call of limit 5`);
        for (const l of batch.filter((l) => mine.has(l.tenant))) {
          const id = `${l.tenant}/${l.leaseId}`;
          assert.ok(!seen.has(id), `${id} handed out twice`);
          seen.add(id);
        }
        if (batch.length === 0) break;
      }
      assert.equal(seen.size, 36);
      for (const t of tenants) assert.deepEqual(await store.read(t, ["tok"]), [3], "expired leases keep their estimate");
    });

    withStore("every expired lease is claimed exactly once while reservations race the sweeper", async (store) => {
      const t = await fresh(store);
      const counts = new Map<string, number>();
      const sweep = async () => {
        for (const l of await store.claimDue(Date.now(), 600_000, 1000)) if (l.tenant === t) counts.set(l.leaseId, (counts.get(l.leaseId) ?? 0) + 1);
      };
      const reserving = (async () => {
        for (let chunk = 0; chunk < 10; chunk++) {
          await Promise.all(Array.from({ length: 20 }, (_, i) =>
            reserve(store, t, [op("conc", 1, 1000, { unit: "concurrency", expiresAtMs: 0 })], { leaseId: `race-${chunk}-${i}`, leaseExpiresAtMs: Date.now() - 1 })));
        }
      })();
      const sweeping = (async () => {
        for (let i = 0; i < 20; i++) await sweep();
      })();
      await Promise.all([reserving, sweeping]);
      await sweep();
      assert.equal(counts.size, 200, "no lease is left behind");
      assert.ok([...counts.values()].every((n) => n === 1), "no lease is claimed twice");
      assert.deepEqual(await store.read(t, ["conc"]), [0], "concurrency released once per lease");
    });

    withStore("tenant ids with hash-tag and glob characters keep their keys apart", async (store) => {
      const odd = await Promise.all(["a}b", "{x}", "*", "a:b|c", "[z]?"].map((s) => fresh(store, `${s}-${randomBytes(3).toString("hex")}`)));
      for (const t of odd) {
        assert.equal((await reserve(store, t, [op("m", 2, 10)], { leaseId: "L", requestId: "r", leaseExpiresAtMs: Date.now() - 1 })).status, "reserved");
        assert.equal((await reserve(store, t, [op("m", 2, 10)], { leaseId: "L2", requestId: "r" })).status, "duplicate");
      }
      const claimed = (await store.claimDue(Date.now(), 600_000, 1000)).filter((l) => odd.includes(l.tenant));
      assert.deepEqual(claimed.map((l) => l.tenant).sort(), [...odd].sort());
      for (const t of odd) assert.deepEqual(await store.read(t, ["m"]), [2]);
    });

    withStore("a lease hands back the meters it reserved and its first usage (settled, repeated, expired), whatever the keys hold", async (store) => {
      const t = await fresh(store);
      const inAnHour = Date.now() + 3_600_000;
      const meters: MeterSpec[] = [
        op("TOKENS|MINUTE|*|USER|ünï|cödé ✓|0", 1_234, 1e15, { expiresAtMs: inAnHour }),
        op("odd\n:key\u0000 with | and 17 bytes", 5_000_000_000_123, 9e15, { unit: "cost", enforce: false, expiresAtMs: inAnHour }),
        op("REQUESTS|DAY", 1, 10, { unit: "requests", expiresAtMs: inAnHour }),
        op("CONCURRENCY", 1, 5, { unit: "concurrency", expiresAtMs: 0 }),
      ];
      const reserved = meters.map(({ key, unit, amount, expiresAtMs }) => ({ key, unit, amount, expiresAtMs }));
      const asReserved = (lease: LeaseRecord) => lease.meters.map(({ key, unit, amount, expiresAtMs }) => ({ key, unit, amount, expiresAtMs }));

      assert.equal((await reserve(store, t, meters, { leaseId: "M", requestId: "req-M", reservationId: "rid-M" })).status, "reserved");
      const again = await reserve(store, t, meters, { requestId: "req-M" });
      assert.equal(again.status, "duplicate");
      assert.deepEqual(again.status === "duplicate" && asReserved(again.lease), reserved);
      const first: LeaseUsage = { ...usage(1, 2, 3), cacheReadTokens: 1, reasoningTokens: 2, outcome: 3, estimated: true, provider: "prov ✓", model: "m\"odel", latencyMs: 1234 };
      const settled = await store.settle({ tenant: t, leaseId: "M", usage: first, nowMs: Date.now(), graceMs: 30_000 });
      assert.equal(settled.status, "settled");
      assert.deepEqual(settled.status === "settled" && asReserved(settled.lease), reserved);
      assert.equal(settled.status === "settled" && settled.lease.reservationId, "rid-M");
      const repeated = await store.settle({ tenant: t, leaseId: "M", usage: usage(9, 9), nowMs: Date.now(), graceMs: 30_000 });
      assert.deepEqual(repeated.status === "already" && asReserved(repeated.lease), reserved);
      assert.deepEqual(repeated.status === "already" && repeated.lease.usage, first, "the first usage, every field of it");
      assert.deepEqual(await store.read(t, meters.map((m) => m.key)), [3, 3, 1, 0]);

      assert.equal((await reserve(store, t, meters, { leaseId: "X", leaseExpiresAtMs: Date.now() - 1 })).status, "reserved");
      const expired = (await store.claimDue(Date.now(), 60_000, 1000)).filter((l) => l.tenant === t);
      assert.deepEqual(expired.map((l) => [l.leaseId, l.state, asReserved(l)]), [["X", "expired", reserved]]);
    });

    withStore("values beyond 2^32 stay exact", async (store) => {
      const t = await fresh(store);
      await store.charge(t, [{ key: "big", amount: 5_000_000_000_123, expiresAtMs: Date.now() + 60_000 }], generation);
      const r = await reserve(store, t, [op("big", 1, 9_000_000_000_000)]);
      assert.equal(r.status, "reserved");
      assert.deepEqual(await store.read(t, ["big"]), [5_000_000_000_124]);
    });

    describe("token buckets", () => {
      /** A store and a clock the test moves (no sleeping): the buckets' time on every backend. */
      const withClock = (title: string, fn: (store: CounterStore, clock: { nowMs: number }) => Promise<void>) =>
        test(title, async () => {
          const clock = { nowMs: Date.now() };
          const store = await open(() => clock.nowMs);
          try {
            await fn(store, clock);
          } finally {
            await store.close();
          }
        });
      const bucket = (key: string, unit: "requests" | "tokens", amount: number, value: number, burst: number, windowMs: number, extra: Partial<MeterSpec> = {}): MeterSpec => ({
        key: `${key}|bucket`, unit, amount, limit: value, enforce: true, expiresAtMs: 0, bucket: meterBucket(value, burst, windowMs), ...extra,
      });
      const at = (clock: { nowMs: number }) => ({ nowMs: clock.nowMs });

      withClock("a bucket admits its burst at once, then one unit per emission interval", async (store, clock) => {
        const t = await fresh(store);
        // 60 a minute: one per second, 5 at once.
        const rpm = bucket("rpm", "requests", 1, 60, 5, 60_000);
        const used: number[] = [];
        for (let i = 0; i < 5; i++) {
          const r = await reserve(store, t, [rpm], at(clock));
          assert.equal(r.status, "reserved");
          used.push(r.status === "reserved" ? r.used[0]! : -1);
        }
        assert.deepEqual(used, [1e6, 2e6, 3e6, 4e6, 5e6], "a bucket reports its backlog: µs until full");
        const blocked = await reserve(store, t, [rpm], at(clock));
        assert.equal(blocked.status, "blocked");
        assert.deepEqual(blocked.status === "blocked" && blocked.used, [5e6]);
        clock.nowMs += 999;
        assert.equal((await reserve(store, t, [rpm], at(clock))).status, "blocked", "not refilled 1 ms early");
        clock.nowMs += 1;
        assert.equal((await reserve(store, t, [rpm], at(clock))).status, "reserved", "one unit back after one emission interval");
        assert.deepEqual(await store.read(t, [rpm.key]), [5e6]);
        clock.nowMs += 60_000;
        assert.deepEqual(await store.read(t, [rpm.key]), [0], "full after a pause");
        const after = await Promise.all(Array.from({ length: 8 }, () => reserve(store, t, [rpm], at(clock))));
        assert.equal(after.filter((r) => r.status === "reserved").length, 5, "a pause refills to the burst, no more");
      });

      withClock("retry-after is the exact time until the request fits", async (store, clock) => {
        const t = await fresh(store);
        // 3 a second: an emission interval of 333.33… ms, which floats do not hold exactly.
        const rps = bucket("rps", "requests", 1, 3, 3, 1000);
        for (let i = 0; i < 3; i++) assert.equal((await reserve(store, t, [rps], at(clock))).status, "reserved");
        const blocked = await reserve(store, t, [rps], at(clock));
        assert.equal(blocked.status, "blocked");
        const retryMs = bucketRetryAfterMs(rps.bucket!, blocked.status === "blocked" ? blocked.used[0]! : 0, 1);
        assert.equal(retryMs, 334);
        clock.nowMs += retryMs - 1;
        assert.equal((await reserve(store, t, [rps], at(clock))).status, "blocked", "1 ms before retry-after it does not fit");
        clock.nowMs += 1;
        assert.equal((await reserve(store, t, [rps], at(clock))).status, "reserved", "at retry-after it fits");

        // Tokens: 1,000 a second (1 ms each), 500 at once; 300 taken, 300 more fit after 100 ms.
        const tps = bucket("tps", "tokens", 300, 1000, 500, 1000);
        assert.equal((await reserve(store, t, [tps], at(clock))).status, "reserved");
        const waiting = await reserve(store, t, [tps], at(clock));
        assert.equal(waiting.status, "blocked");
        assert.equal(bucketRetryAfterMs(tps.bucket!, waiting.status === "blocked" ? waiting.used[0]! : 0, 300), 100);
        clock.nowMs += 99;
        assert.equal((await reserve(store, t, [tps], at(clock))).status, "blocked");
        clock.nowMs += 1;
        assert.equal((await reserve(store, t, [tps], at(clock))).status, "reserved");
      });

      withClock("a settle over the reservation is debt that delays the next admit; one under it refunds", async (store, clock) => {
        const t = await fresh(store);
        // 6,000 tokens a minute: 10 ms per token, 1,000 at once.
        const tpm = (amount: number) => bucket("tpm", "tokens", amount, 6000, 1000, 60_000);
        assert.equal((await reserve(store, t, [tpm(100)], { ...at(clock), leaseId: "D1" })).status, "reserved");
        assert.deepEqual(await store.read(t, [tpm(0).key]), [1_000_000]);
        const settled = await store.settle({ tenant: t, leaseId: "D1", usage: usage(150, 250), nowMs: clock.nowMs, graceMs: 30_000 });
        assert.equal(settled.status, "settled");
        assert.deepEqual(await store.read(t, [tpm(0).key]), [4_000_000], "300 tokens beyond the reservation: 3 s more to refill");
        const blocked = await reserve(store, t, [tpm(700)], at(clock));
        assert.equal(blocked.status, "blocked", "the debt leaves room for 600, not 700");
        assert.equal(bucketRetryAfterMs(tpm(0).bucket!, blocked.status === "blocked" ? blocked.used[0]! : 0, 700), 1000);
        assert.equal((await reserve(store, t, [tpm(600)], { ...at(clock), leaseId: "D2" })).status, "reserved");
        assert.deepEqual(await store.read(t, [tpm(0).key]), [10_000_000], "empty");
        await store.settle({ tenant: t, leaseId: "D2", usage: usage(100, 0), nowMs: clock.nowMs, graceMs: 30_000 });
        assert.deepEqual(await store.read(t, [tpm(0).key]), [5_000_000], "500 tokens unused are refunded");
        const again = await store.settle({ tenant: t, leaseId: "D2", usage: usage(0, 0), nowMs: clock.nowMs, graceMs: 30_000 });
        assert.equal(again.status, "already");
        assert.deepEqual(await store.read(t, [tpm(0).key]), [5_000_000], "a repeated settle moves nothing");
        const lease = settled.status === "settled" ? settled.lease : undefined;
        assert.deepEqual(lease?.meters.map((m) => [m.key, m.unit, m.amount, m.emissionMs]), [["tpm|bucket", "tokens", 100, 10]], "a lease names its bucket and its emission interval");
      });

      withClock("a bucket and fixed-window meters are reserved all together or not at all", async (store, clock) => {
        const t = await fresh(store);
        const rps = bucket("rps", "requests", 1, 1, 2, 1000);
        const window = op("rpm", 1, 3, { unit: "requests" });
        assert.equal((await reserve(store, t, [window, rps], at(clock))).status, "reserved");
        assert.equal((await reserve(store, t, [window, rps], at(clock))).status, "reserved");
        const bucketFull = await reserve(store, t, [window, rps], at(clock));
        assert.equal(bucketFull.status, "blocked");
        assert.equal(bucketFull.status === "blocked" && bucketFull.index, 1);
        assert.deepEqual(bucketFull.status === "blocked" && bucketFull.used, [2, 2e6], "a denial reports every meter: counts and backlogs");
        assert.deepEqual(await store.read(t, ["rpm", rps.key]), [2, 2e6], "the window's count did not move");
        clock.nowMs += 1000;
        assert.equal((await reserve(store, t, [window, rps], at(clock))).status, "reserved");
        clock.nowMs += 1000;
        const windowFull = await reserve(store, t, [window, rps], at(clock));
        assert.equal(windowFull.status, "blocked");
        assert.equal(windowFull.status === "blocked" && windowFull.index, 0);
        assert.deepEqual(await store.read(t, ["rpm", rps.key]), [3, 1e6], "the bucket did not move");
      });

      withClock("a bucket that does not enforce is taken beyond its burst", async (store, clock) => {
        const t = await fresh(store);
        const soft = bucket("soft", "requests", 1, 60, 1, 60_000, { enforce: false });
        for (let i = 0; i < 3; i++) assert.equal((await reserve(store, t, [soft], at(clock))).status, "reserved");
        assert.deepEqual(await store.read(t, [soft.key]), [3e6]);
      });

      withClock("admits exactly the burst of 1,000 concurrent reservations", async (store, clock) => {
        const t = await fresh(store);
        const rph = bucket("rph", "requests", 1, 10, 137, 3_600_000);
        const results = await Promise.all(Array.from({ length: 1000 }, () => reserve(store, t, [rph, op("tokens", 10, 1_000_000)], at(clock))));
        const reserved = results.flatMap((r) => (r.status === "reserved" ? [r.used[0]!] : []));
        assert.equal(reserved.length, 137);
        assert.deepEqual(reserved.sort((a, b) => a - b), Array.from({ length: 137 }, (_, i) => (i + 1) * 360_000_000), "each took its own unit");
        assert.deepEqual(await store.read(t, [rph.key, "tokens"]), [137 * 360_000_000, 1370]);
      });
    });
  });
}

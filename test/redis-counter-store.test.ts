import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, describe, test } from "node:test";
import { Redis } from "ioredis";
import type { LeaseRecord } from "../control-plane/counter-store.js";
import { reservationOf, type MeterSpec } from "./support/meter-specs.js";
import { CounterStoreUnavailableError } from "../control-plane/counter-store.js";
import { failFastRedisOptions, RedisCounterStore } from "../control-plane/redis-counter-store.js";
import { counterStoreContract } from "./counter-store-contract.js";
import { redisClusterUnavailable } from "./support/redis-cluster.js";
import { deleteKeysWithPrefix } from "./support/redis-keys.js";
import { missingService } from "./support/services.js";
import { freePort } from "./support/free-port.js";

const skip = missingService("Redis", "REDIS_URL");
/** Tests that start their own redis-server (to flush it, kill it, bring it back). */
const skipOwnServer = skip || redisClusterUnavailable();
const url = process.env.REDIS_URL ?? "";
const prefix = `admtest:${randomBytes(4).toString("hex")}`;

after(async () => {
  if (skip) return;
  const redis = new Redis(url);
  try {
    await deleteKeysWithPrefix(redis, prefix);
  } finally {
    await redis.quit();
  }
});

counterStoreContract("redis", (bucketClock) => RedisCounterStore.connect({ url, keyPrefix: prefix, bucketClock }), { skip });

const hour = 3_600_000;
const tokens = (key: string, amount: number, extra: Partial<MeterSpec> = {}): MeterSpec => ({
  key, unit: "tokens", amount, limit: 1_000_000, enforce: true, expiresAtMs: Date.now() + 60_000, ...extra,
});
const conc: MeterSpec = { key: "conc", unit: "concurrency", amount: 1, limit: 1_000_000, enforce: true, expiresAtMs: 0 };

/** Reserves on a tenant made warm first (a no-op when it is), as the decision path does. */
async function reserve(store: RedisCounterStore, tenant: string, leaseId: string, leaseExpiresAtMs: number, meters: MeterSpec[] = [tokens("tok", 10), conc]) {
  await store.rebuild(tenant, "g/1:1:", []);
  return reserveAsIs(store, tenant, leaseId, leaseExpiresAtMs, meters);
}

function reserveAsIs(store: RedisCounterStore, tenant: string, leaseId: string, leaseExpiresAtMs: number, meters: MeterSpec[] = [tokens("tok", 10), conc]) {
  return store.reserve({ tenant, leaseId, reservationId: `rid-${leaseId}`, requestId: "", ...reservationOf(meters), leaseExpiresAtMs, nowMs: Date.now() });
}

function usage(outputTokens: number) {
  return { inputTokens: 1, outputTokens, costMicros: 0, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, outcome: 1, estimated: false, provider: "p", model: "m", latencyMs: 1, settledAtMs: Date.now() };
}

async function withStores<T>(count: number, options: { keyPrefix: string; dueRescanMs?: number; url?: string }, fn: (stores: RedisCounterStore[]) => Promise<T>): Promise<T> {
  const stores = await Promise.all(Array.from({ length: count }, () => RedisCounterStore.connect({ url: options.url ?? url, ...options })));
  try {
    return await fn(stores);
  } finally {
    await Promise.all(stores.map((s) => s.close()));
  }
}

describe("Redis specifics", { skip }, () => {
  test("every script recovers from SCRIPT FLUSH (NOSCRIPT → EVAL), also with many commands in flight", async () => {
    const admin = new Redis(url);
    try {
      await withStores(1, { keyPrefix: prefix }, async ([store]) => {
        const t = `noscript-${randomBytes(3).toString("hex")}`;
        const run = async (round: number) => {
          await Promise.all(Array.from({ length: 100 }, (_, i) => reserve(store!, t, `L${round}-${i}`, Date.now() + 60_000)));
          await Promise.all(Array.from({ length: 50 }, (_, i) => store!.settle({ tenant: t, leaseId: `L${round}-${i}`, usage: usage(9), nowMs: Date.now(), graceMs: 60_000 })));
          await Promise.all(Array.from({ length: 50 }, (_, i) => store!.markRecorded(t, `L${round}-${i}`)));
          await store!.renew(t, `L${round}-99`, Date.now() - 1);
          await store!.charge(t, [{ key: "extra", amount: 1, expiresAtMs: Date.now() + 60_000 }], "g/1:1:");
          return (await store!.claimDue(Date.now(), 600_000, 1000)).filter((l) => l.tenant === t);
        };
        assert.equal((await run(0)).length, 1);
        for (let round = 1; round <= 2; round++) {
          await admin.script("FLUSH");
          assert.equal((await run(round)).length, 1, `round ${round} after SCRIPT FLUSH`);
        }
        // 3 rounds: 100 reserved (10 tokens), 50 settled at 10 tokens, one expired at its estimate.
        assert.deepEqual(await store!.read(t, ["tok", "conc", "extra"]), [3000, 3 * 49, 3]);
      });
    } finally {
      await admin.quit();
    }
  });

  test("the operations of one tick go to Redis as one command; one that fails fails alone", async () => {
    const admin = new Redis(url);
    const sent: string[] = [];
    const client = new Proxy(new Redis(url, failFastRedisOptions), {
      get(target, prop) {
        const value = Reflect.get(target, prop, target) as unknown;
        if (typeof value !== "function") return value;
        // Tenant scripts go as evalshaBuffer (evalBuffer once if Redis does not know the script yet).
        if (typeof prop === "string" && (prop.startsWith("adm") || prop === "evalshaBuffer")) sent.push(prop);
        return value.bind(target);
      },
    });
    const store = new RedisCounterStore({ client, keyPrefix: prefix, dueRescanMs: 0 });
    try {
      await eventually(() => store.ping(), 10_000, "connection");
      const t = `batch-${randomBytes(3).toString("hex")}`;
      const other = `batch-other-${randomBytes(3).toString("hex")}`;
      await store.rebuild(t, "g/1:1:", []);
      await store.rebuild(other, "g/1:1:", []);
      // A meter key holding something that is not a number makes that reserve's script fail.
      await admin.set(`${prefix}:{${t}}:m:broken`, "not a number");
      const exp = Date.now() + 60_000;
      sent.length = 0;
      const results = await Promise.allSettled([
        reserveAsIs(store, t, "A", exp, [tokens("tok", 1)]),
        reserveAsIs(store, t, "B", exp, [tokens("tok", 1), tokens("broken", 1)]),
        reserveAsIs(store, other, "C", exp, [tokens("tok", 1)]),
        store.settle({ tenant: t, leaseId: "nope", usage: usage(1), nowMs: Date.now(), graceMs: 1 }),
        store.markRecorded(other, "nope"),
      ]);
      // (The new tenants' first leases are published in the due index afterwards.)
      assert.deepEqual(sent.filter((name) => name !== "admPublish"), ["evalshaBuffer"], "one command for the tick");
      assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled", "fulfilled", "fulfilled"]);
      const failed = (results[1] as PromiseRejectedResult).reason as Error;
      assert.ok(!(failed instanceof CounterStoreUnavailableError), `a script error is a bug, not an outage: ${failed.message}`);
      const statusOf = (r: PromiseSettledResult<unknown>) => (r.status === "fulfilled" ? (r.value as { status?: string } | undefined)?.status ?? r.value : undefined);
      assert.deepEqual(results.map(statusOf), ["reserved", undefined, "reserved", "missing", "g/1:1:"]);
      assert.deepEqual(await store.read(t, ["tok"]), [1], "B failed before writing anything");
      assert.deepEqual(await store.read(other, ["tok"]), [1]);
    } finally {
      await store.close();
      await admin.quit();
    }
  });

  test("replicas racing reservations against each other's sweeps leave no lease behind, with no safety-net scan", async () => {
    const p = `${prefix}:race`;
    await withStores(3, { keyPrefix: p, dueRescanMs: 0 }, async (replicas) => {
      const tenants = Array.from({ length: 4 }, (_, i) => `race${i}`);
      const counts = new Map<string, number>();
      const sweep = async (r: RedisCounterStore) => {
        for (const l of await r.claimDue(Date.now(), 10 * 60_000, 1000)) counts.set(`${l.tenant}/${l.leaseId}`, (counts.get(`${l.tenant}/${l.leaseId}`) ?? 0) + 1);
      };
      let stop = false;
      const sweepers = replicas.map(async (r) => {
        while (!stop) await sweep(r);
      });
      for (let round = 0; round < 25; round++) {
        await Promise.all(tenants.flatMap((t, ti) => Array.from({ length: 8 }, (_, i) => {
          const replica = replicas[(round + ti + i) % replicas.length]!;
          const id = `r${round}-${i}`;
          // Half expire at once; half are settled right away and come back after a 0 ms grace.
          return i % 2 === 0
            ? reserve(replica, t, id, Date.now() - 1)
            : reserve(replica, t, id, Date.now() + hour).then(() => replica.settle({ tenant: t, leaseId: id, usage: usage(1), nowMs: Date.now(), graceMs: 0 }));
        })));
      }
      stop = true;
      await Promise.all(sweepers);
      await sweep(replicas[0]!);
      assert.equal(counts.size, tenants.length * 25 * 8, "every lease was claimed");
      assert.ok([...counts.values()].every((n) => n === 1), "within the grace period, no lease was claimed twice");
      for (const t of tenants) assert.deepEqual(await replicas[0]!.read(t, ["conc"]), [0]);
    });
  });

  test("the safety-net scan finds due leases whose index entry was lost (crash between script and publication)", async () => {
    const p = `${prefix}:lost`;
    const admin = new Redis(url);
    try {
      await withStores(1, { keyPrefix: p, dueRescanMs: 0 }, async ([store]) => {
        await reserve(store!, "lost", "L", Date.now() - 1);
        await admin.del(`${p}:{~index}:due-tenants`, `${p}:{~index}:due-gen`);
        assert.deepEqual(await store!.claimDue(Date.now(), 60_000, 1000), [], "without the index and the scan it is not found");
      });
      await withStores(1, { keyPrefix: p, dueRescanMs: 60_000 }, async ([store]) => {
        const claimed = await store!.claimDue(Date.now(), 60_000, 1000);
        assert.deepEqual(claimed.map((l: LeaseRecord) => [l.tenant, l.leaseId, l.state]), [["lost", "L", "expired"]]);
      });
    } finally {
      await admin.quit();
    }
  });

  test("a publication cut off by a connection error does not fail the reserve and is retried by the next claimDue", async () => {
    const p = `${prefix}:cut`;
    // The connection drops exactly when the index publication is sent (and only then).
    let cut = 1;
    const client = new Proxy(new Redis(url, failFastRedisOptions), {
      get(target, prop) {
        if (prop === "admPublish" && cut-- > 0) return () => Promise.reject(new Error("Connection is closed."));
        const value = Reflect.get(target, prop, target) as unknown;
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const store = new RedisCounterStore({ client, keyPrefix: p, dueRescanMs: 0 });
    try {
      await eventually(() => store.ping(), 10_000, "connection");
      assert.equal((await reserve(store, "cut", "L", Date.now() - 1)).status, "reserved");
      assert.equal(cut, 0, "the publication was attempted and failed");
      const claimed = await store.claimDue(Date.now(), 60_000, 1000);
      assert.deepEqual(claimed.map((l) => [l.tenant, l.leaseId]), [["cut", "L"]]);
    } finally {
      await store.close();
    }
  });

  test("claimDue decides by the Redis server's clock: a caller whose clock runs an hour ahead cannot expire a lease early", async () => {
    await withStores(1, { keyPrefix: prefix }, async ([store]) => {
      const t = `ahead-${randomBytes(3).toString("hex")}`;
      await reserve(store!, t, "L", Date.now() + 60_000);
      assert.deepEqual((await store!.claimDue(Date.now() + hour, 60_000, 1000)).filter((l) => l.tenant === t), []);
      assert.deepEqual(await store!.read(t, ["conc"]), [1]);
    });
  });

  test("a replica whose clock is an hour off picks windows by the Redis server's clock", async () => {
    const skewed = await RedisCounterStore.connect({ url, keyPrefix: prefix, localClock: () => Date.now() - hour });
    try {
      assert.ok(Math.abs(skewed.now() - Date.now()) < 1_000, `corrected clock ${skewed.now() - Date.now()} ms off`);
    } finally {
      await skewed.close();
    }
  });

  test("amounts that are not safe integers are a bug, not an outage", async () => {
    await withStores(1, { keyPrefix: prefix }, async ([store]) => {
      await assert.rejects(reserve(store!, "bad", "L", Date.now() + 1000, [tokens("tok", 1.5)]), RangeError);
      await assert.rejects(store!.charge("bad", [{ key: "tok", amount: 2 ** 60, expiresAtMs: 0 }], "g/1:1:"), RangeError);
      await assert.rejects(store!.read("", ["x"]), TypeError);
    });
  });
});

describe("Redis lost, unreachable, back (own redis-server)", { skip: skipOwnServer }, () => {
  test("FLUSHDB: every tenant turns cold with its data; exactly one of two racing replicas' rebuilds lands, each time", async () => {
    const server = await startRedisServer(await freePort());
    try {
      await withStores(2, { url: server.url, keyPrefix: "adm" }, async (replicas) => {
        const race = async (t: string) => (await Promise.all(replicas.map((r, i) => r.rebuild(t, `g${i}/1:1:`, [])))).filter(Boolean).length;
        assert.equal(await race("a"), 1, "a brand-new Redis has every tenant cold");
        assert.equal(await race("a"), 0, "intact data is not rebuilt");
        for (let i = 0; i < 5; i++) {
          assert.equal((await reserve(replicas[0]!, "a", `L${i}`, Date.now() + 60_000)).status, "reserved");
          await server.admin.flushdb();
          assert.equal((await reserveAsIs(replicas[1]!, "a", `M${i}`, Date.now() + 60_000)).status, "cold", "the lost tenant refuses work");
          assert.equal(await race("a"), 1, `after FLUSHDB #${i + 1}`);
          assert.equal(await race("a"), 0);
        }
      });
    } finally {
      await server.stop();
    }
  });

  test("unreachable: calls fail promptly with CounterStoreUnavailableError; the same store recovers when Redis comes (back) on that port", async () => {
    const port = await freePort();
    const store = await RedisCounterStore.connect({ url: `redis://127.0.0.1:${port}`, keyPrefix: "adm", readyTimeoutMs: 200 });
    let server: OwnRedis | undefined;
    try {
      const calls = () => [
        store.ping(),
        store.read("t", ["x"]),
        reserve(store, "t", "L", Date.now() + 60_000),
        store.settle({ tenant: "t", leaseId: "L", usage: usage(1), nowMs: Date.now(), graceMs: 1 }),
        store.claimDue(Date.now(), 1, 10),
        store.rebuild("t", "g/1:1:", []),
      ];
      await Promise.all(calls().map((call) => assert.rejects(call, CounterStoreUnavailableError)));

      server = await startRedisServer(port);
      await eventually(() => store.ping(), 15_000, "the store reconnects by itself");
      assert.equal((await reserve(store, "t", "L1", Date.now() + 60_000)).status, "reserved");

      await server.stop();
      await Promise.all(calls().map((call) => assert.rejects(call, CounterStoreUnavailableError)));

      server = await startRedisServer(port); // empty again: no persistence
      await eventually(() => store.ping(), 15_000, "the store reconnects after a restart");
      assert.equal((await reserveAsIs(store, "t", "L1", Date.now() + 60_000)).status, "cold", "the restarted, empty Redis asks for a rebuild");
      assert.equal((await reserve(store, "t", "L1", Date.now() + 60_000)).status, "reserved", "the lease was lost with the data");
    } finally {
      await store.close();
      await server?.stop();
    }
  });

  test("commands cut off by a dying connection fail as unavailable and are never replayed later", async () => {
    const port = await freePort();
    let server = await startRedisServer(port);
    const store = new RedisCounterStore({ client: new Redis(server.url, failFastRedisOptions), keyPrefix: "adm" });
    try {
      await eventually(() => store.ping(), 10_000, "connection");
      // Pause the server so commands are in flight when it dies.
      await server.admin.client("PAUSE", 5_000, "ALL");
      const inFlight = Array.from({ length: 20 }, (_, i) => reserve(store, "cut", `L${i}`, Date.now() + 60_000).then(() => "ok", (err: unknown) => err));
      await new Promise((r) => setTimeout(r, 100));
      await server.stop();
      const results = await Promise.all(inFlight);
      assert.ok(results.every((r) => r instanceof CounterStoreUnavailableError), "every in-flight reserve fails as unavailable");

      // A replayed reserve would come back as a phantom lease once the connection is back.
      server = await startRedisServer(port);
      await eventually(() => store.ping(), 15_000, "reconnect");
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await server.admin.dbsize(), 0, "nothing was resent after the reconnect");
    } finally {
      await store.close();
      await server.stop();
    }
  });
});

interface OwnRedis {
  readonly url: string;
  readonly admin: Redis;
  /** SIGKILL: gone without a goodbye, its data with it. */
  stop(): Promise<void>;
}

/** A throwaway redis-server without persistence on a loopback port. */
async function startRedisServer(port: number): Promise<OwnRedis> {
  const child: ChildProcess = spawn("/usr/bin/redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const admin = new Redis(port, "127.0.0.1", { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => 100 });
  admin.on("error", () => undefined);
  const stop = async () => {
    admin.disconnect();
    child.kill("SIGKILL");
    await exited;
  };
  try {
    await eventually(async () => {
      if (child.exitCode !== null) throw new Error(`redis-server on ${port} exited with ${child.exitCode}`);
      if (admin.status === "wait") await admin.connect();
      assert.equal(await admin.ping(), "PONG");
    }, 10_000, `redis-server on port ${port}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: `redis://127.0.0.1:${port}`, admin, stop };
}

async function eventually(check: () => Promise<unknown>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${String(err)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}


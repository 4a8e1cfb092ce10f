import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, describe, test } from "node:test";
import { Redis } from "ioredis";
import { CounterStoreUnavailableError } from "../control-plane/counter-store.js";
import { failFastRedisOptions, RedisCounterStore } from "../control-plane/redis-counter-store.js";
import { counterStoreContract } from "./counter-store-contract.js";
import { missingService } from "./support/services.js";
import { deleteKeysWithPrefix } from "./support/redis-keys.js";

const skip = missingService("Redis", "REDIS_URL");
const url = process.env.REDIS_URL ?? "";
const prefix = `admtest-${randomBytes(4).toString("hex")}`;
const stores: RedisCounterStore[] = [];

/** Removes every key this run created. */
async function cleanup(): Promise<void> {
  if (skip) return;
  const redis = new Redis(url);
  await deleteKeysWithPrefix(redis, prefix);
  await redis.quit();
}

counterStoreContract("redis", () => RedisCounterStore.connect({ url, keyPrefix: prefix }), { skip });

describe("Redis specifics", { skip }, () => {
  after(cleanup);

  test("scripts are reloaded after SCRIPT FLUSH (NOSCRIPT fallback)", async () => {
    const store = await RedisCounterStore.connect({ url, keyPrefix: prefix });
    const admin = new Redis(url);
    try {
      await store.charge("t1", [{ key: "a", amount: 1, expiresAtMs: Date.now() + 60_000 }]);
      await admin.script("FLUSH");
      await store.charge("t1", [{ key: "a", amount: 1, expiresAtMs: Date.now() + 60_000 }]);
      assert.deepEqual(await store.read("t1", ["a"]), [2]);
    } finally {
      await admin.quit();
      await store.close();
    }
  });

  test("after the data is lost, exactly one of several replicas claims the rebuild", async () => {
    const p = `${prefix}-epoch`;
    const replicas = await Promise.all([0, 1, 2].map(() => RedisCounterStore.connect({ url, keyPrefix: p })));
    const admin = new Redis(url);
    try {
      await admin.del(`${p}:epoch`);
      const first = await Promise.all(replicas.map((r) => r.claimRebuild(Date.now())));
      assert.equal(first.filter(Boolean).length, 1);
      assert.deepEqual(await Promise.all(replicas.map((r) => r.claimRebuild(Date.now()))), [false, false, false]);
      await admin.del(`${p}:epoch`); // what FLUSHALL does to it
      assert.equal((await Promise.all(replicas.map((r) => r.claimRebuild(Date.now())))).filter(Boolean).length, 1);
    } finally {
      await admin.del(`${p}:epoch`);
      await admin.quit();
      await Promise.all(replicas.map((r) => r.close()));
    }
  });

  test("a replica whose clock is an hour off decides by the Redis server's clock", async () => {
    const skewed = await RedisCounterStore.connect({ url, keyPrefix: prefix, localClock: () => Date.now() - 3_600_000 });
    try {
      assert.ok(Math.abs(skewed.now() - Date.now()) < 1_000, `corrected clock ${skewed.now() - Date.now()} ms off`);
    } finally {
      await skewed.close();
    }
  });

  test("an unreachable Redis fails fast with CounterStoreUnavailableError", async () => {
    const store = new RedisCounterStore({ client: new Redis("redis://127.0.0.1:1", { ...failFastRedisOptions, lazyConnect: false }), keyPrefix: prefix });
    stores.push(store);
    await assert.rejects(store.read("t", ["x"]), CounterStoreUnavailableError);
    await assert.rejects(store.reserve({ tenant: "t", leaseId: "l", reservationId: "r", requestId: "", meters: [], leaseExpiresAtMs: Date.now() + 1000, nowMs: Date.now() }), CounterStoreUnavailableError);
    await store.close();
  });
});

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { Redis } from "ioredis";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { CounterStoreMisconfiguredError, type LeaseUsage, type MeterOp } from "../control-plane/counter-store.js";
import { RedisCounterStore } from "../control-plane/redis-counter-store.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { startPrivateRedis, type PrivateRedis } from "./support/private-redis.js";
import { redisClusterUnavailable } from "./support/redis-cluster.js";
import { scenario, secretOf } from "./support/scenario.js";

const skip = redisClusterUnavailable();
const limits = [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000_000 }];
const bundle = () => scenario(
  { id: "o", failurePolicy: "FAIL_OPEN", limits, keys: [{ id: "ko" }] },
  { id: "f", failurePolicy: "FAIL_CLOSED", limits, keys: [{ id: "kf" }] },
);
const admit = (t: TestControlPlane, key: string) => t.admission.admit({ credential: secretOf(key), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });

async function eventually<T>(check: () => Promise<T | undefined>, what: string): Promise<T> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function readyz(t: TestControlPlane): Promise<{ status: number; counters: string }> {
  const res = await fetch(`http://127.0.0.1:${t.cp.httpPort}/readyz`);
  return { status: res.status, counters: ((await res.json()) as { checks: Record<string, string> }).checks.counters! };
}

/** A logger whose lines the test reads. */
function capturedLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString().split("\n").filter(Boolean));
      done();
    },
  });
  return { logger: pino({ level: "info" }, stream), lines };
}

const controlPlaneJs = fileURLToPath(new URL("../control-plane/main.js", import.meta.url));

/** Runs `node dist/control-plane/main.js` until it exits (here: refusing to start). */
function runControlPlane(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [controlPlaneJs], {
    env: { ...process.env, ADMISSION_GRPC_PORT: "0", ADMISSION_HTTP_PORT: "0", ADMISSION_GRPC_HOST: "127.0.0.1", ADMISSION_DEMO: "0", LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.once("exit", (code) => resolve({ code, stderr })));
}

const connectTo = (url: string, keyPrefix = `admcfg:${randomBytes(3).toString("hex")}`) => RedisCounterStore.connect({ url, keyPrefix, readyTimeoutMs: 5_000 });

async function refusal(url: string): Promise<CounterStoreMisconfiguredError> {
  const err = await connectTo(url).then(
    async (store) => {
      await store.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  assert.ok(err instanceof CounterStoreMisconfiguredError, `refused at start, got ${String(err)}`);
  return err;
}

describe("Redis configuration: credentials, permissions, eviction (own redis-server)", { skip }, () => {
  const servers: PrivateRedis[] = [];
  const server = async (options: Parameters<typeof startPrivateRedis>[0] = {}) => {
    const s = await startPrivateRedis(options);
    servers.push(s);
    return s;
  };
  after(() => Promise.all(servers.map((s) => s.stop())));

  test("a Redis that evicts keys is refused at start, naming its policy and the fix", async () => {
    const redis = await server({ args: ["--maxmemory-policy", "allkeys-lru"] });
    const err = await refusal(redis.url);
    assert.match(err.message, /maxmemory-policy allkeys-lru: an evicted meter undercounts; set maxmemory-policy noeviction/);
    // The control plane as a process: exits 2 with that message, before anything else is opened.
    const exit = await runControlPlane({ REDIS_URL: redis.url });
    assert.equal(exit.code, 2, exit.stderr);
    assert.match(exit.stderr, /^configuration error: the counter store cannot use its Redis: redis at 127\.0\.0\.1:\d+ has maxmemory-policy allkeys-lru/m);
    await redis.admin.config("SET", "maxmemory-policy", "noeviction");
    const store = await connectTo(redis.url);
    await store.ping();
    await store.close();
  });

  test("CONFIG denied or renamed (managed Redis): the policy is read from INFO memory; neither readable: refused, naming what to grant", async () => {
    const redis = await server({ args: ["--maxmemory-policy", "volatile-lru"] });
    await redis.admin.acl("SETUSER", "noconfig", "on", ">pw", "~*", "+@all", "-config");
    await redis.admin.acl("SETUSER", "noinfo", "on", ">pw", "~*", "+@all", "-config", "-info");
    const as = (user: string) => `redis://${user}:pw@127.0.0.1:${redis.port}`;
    assert.match((await refusal(as("noconfig"))).message, /maxmemory-policy volatile-lru/, "read from INFO");
    assert.match((await refusal(as("noinfo"))).message, /cannot read maxmemory-policy .*grant the counter store's user \+config\|get or \+info/);
    await redis.admin.config("SET", "maxmemory-policy", "noeviction");
    const store = await connectTo(as("noconfig"));
    await store.ping();
    await store.close();
    assert.match((await refusal(as("noinfo"))).message, /cannot read maxmemory-policy/, "unverifiable is refused even when the policy is right");

    const renamed = await server({ args: ["--maxmemory-policy", "allkeys-random", "--rename-command", "CONFIG", ""] });
    assert.match((await refusal(renamed.url)).message, /maxmemory-policy allkeys-random/);
  });

  test("wrong credentials or no access to the key prefix at start: refused, the message says which and holds no password", async () => {
    const redis = await server({ password: "right-secret" });
    for (const url of [redis.url, `redis://:wrong-secret@127.0.0.1:${redis.port}`]) {
      const err = await refusal(url);
      assert.match(err.message, /refused the counter store's credentials .*(NOAUTH|WRONGPASS)/);
      assert.doesNotMatch(err.message, /secret/);
    }
    await redis.admin.acl("SETUSER", "elsewhere", "on", ">pw", "~elsewhere:*", "+@all");
    const err = await refusal(`redis://elsewhere:pw@127.0.0.1:${redis.port}`);
    assert.match(err.message, /refused the counter store's scripts or keys/);
  });

  test("eviction enabled after start (CONFIG SET): /readyz fails naming the policy, an error is logged; noeviction again: ready", async () => {
    const redis = await server();
    const { logger, lines } = capturedLogger();
    const t = await startTestControlPlane({ config: { redisUrl: redis.url, redisKeyPrefix: `admcfg:${randomBytes(3).toString("hex")}` }, deps: { logger } });
    try {
      await t.policy.applyBundle({ bundle: bundle() }, admin);
      assert.equal((await readyz(t)).status, 200);
      await redis.admin.config("SET", "maxmemory-policy", "allkeys-lru");
      const ready = await readyz(t);
      assert.equal(ready.status, 503);
      assert.match(ready.counters, /failing: redis at 127\.0\.0\.1:\d+ has maxmemory-policy allkeys-lru/);
      assert.ok(lines.some((l) => /"level":50/.test(l) && /allkeys-lru/.test(l)), "an error line names the policy");
      const meanwhile = await admit(t, "ko");
      assert.equal(meanwhile.allowed, true, "decisions go on");
      assert.equal(meanwhile.unmetered, false, "metered");
      await redis.admin.config("SET", "maxmemory-policy", "noeviction");
      assert.equal((await readyz(t)).status, 200);
    } finally {
      await t.close();
    }
  });

  test("credentials refused while running: every Admit is denied UNAVAILABLE (FAIL_OPEN too), /readyz says why, the log holds no password; fixed: metered again", async () => {
    const redis = await server({ password: "first-secret" });
    const { logger, lines } = capturedLogger();
    const t = await startTestControlPlane({
      config: { redisUrl: `redis://:first-secret@127.0.0.1:${redis.port}`, redisKeyPrefix: `admcfg:${randomBytes(3).toString("hex")}` },
      deps: { logger },
    });
    try {
      await t.policy.applyBundle({ bundle: bundle() }, admin);
      const before = await admit(t, "ko");
      assert.equal(before.allowed, true);
      assert.equal(before.unmetered, false);
      // The password is rotated on the server only: the control plane's connections are cut and come back refused.
      await redis.admin.config("SET", "requirepass", "second-secret");
      await redis.admin.call("CLIENT", "KILL", "TYPE", "normal");
      const denied = await eventually(async () => {
        const d = await admit(t, "ko");
        return d.allowed ? undefined : d;
      }, "a denied FAIL_OPEN Admit");
      assert.equal(denied.reason, DenyReason.UNAVAILABLE);
      assert.equal(denied.httpStatus, 503);
      assert.match(denied.message, /counter store misconfigured/);
      assert.equal(denied.unmetered, false);
      const closed = await admit(t, "kf");
      assert.equal(closed.allowed, false);
      assert.match(closed.message, /counter store misconfigured/);
      const ready = await readyz(t);
      assert.equal(ready.status, 503);
      assert.match(ready.counters, /refused the counter store's credentials .*WRONGPASS/);
      const metrics = await (await fetch(`http://127.0.0.1:${t.cp.httpPort}/metrics`)).text();
      assert.match(metrics, /admission_counter_store_misconfigured_total\{op="reserve"\} [1-9]/);
      assert.ok(lines.some((l) => /"level":50/.test(l) && /refused the counter store's credentials/.test(l)), "an error line says the credentials were refused");
      assert.ok(!lines.some((l) => /secret/.test(l)), "no password in any log line");

      await redis.admin.config("SET", "requirepass", "first-secret");
      const again = await eventually(async () => {
        const d = await admit(t, "ko");
        return d.allowed ? d : undefined;
      }, "an allowed Admit");
      assert.equal(again.unmetered, false, "metered again");
      assert.equal((await readyz(t)).status, 200);
    } finally {
      await t.close();
    }
  });

  test("permissions revoked while running (NOPERM on the keys): FAIL_OPEN Admits are denied UNAVAILABLE, never let through unmetered", async () => {
    const redis = await server();
    const keyPrefix = `admcfg:${randomBytes(3).toString("hex")}`;
    await redis.admin.acl("SETUSER", "cp", "on", ">pw", `~${keyPrefix}:*`, "+@all");
    const t = await startTestControlPlane({ config: { redisUrl: `redis://cp:pw@127.0.0.1:${redis.port}`, redisKeyPrefix: keyPrefix } });
    try {
      await t.policy.applyBundle({ bundle: bundle() }, admin);
      assert.equal((await admit(t, "ko")).allowed, true);
      await redis.admin.acl("SETUSER", "cp", "resetkeys", "~elsewhere:*");
      // Several at once: they go to Redis as one batch, whose per-operation errors are refusals too.
      const decisions = await Promise.all([admit(t, "ko"), admit(t, "ko"), admit(t, "kf")]);
      for (const d of decisions) {
        assert.equal(d.allowed, false);
        assert.equal(d.reason, DenyReason.UNAVAILABLE);
        assert.match(d.message, /counter store misconfigured/);
      }
      const ready = await readyz(t);
      assert.equal(ready.status, 503);
      assert.match(ready.counters, /refused the counter store's scripts or keys/);
    } finally {
      await t.close();
    }
  });

  test("every script declares in KEYS every key it touches (MONITOR shows each command a script runs)", async () => {
    const redis = await server();
    const keyPrefix = `admkeys:${randomBytes(3).toString("hex")}`;
    // monitor() opens a connection of its own: the client it is called on never connects.
    const base = new Redis(redis.port, { lazyConnect: true });
    const monitor = await base.monitor();
    const seen: Array<{ args: string[]; source: string }> = [];
    monitor.on("monitor", (_time: string, args: string[], source: string) => seen.push({ args, source }));
    const store = await RedisCounterStore.connect({ url: redis.url, keyPrefix, dueRescanMs: 0 });
    // A second replica: it knows nothing of the first one's leases (their meters, request ids).
    const other = await RedisCounterStore.connect({ url: redis.url, keyPrefix, dueRescanMs: 0 });
    try {
      await exerciseEveryScript(store, other);
      await redis.admin.ping();
      await new Promise((r) => setTimeout(r, 100)); // the monitor feed trails the replies
      const undeclared: string[] = [];
      let scripts = 0;
      let declared: Set<string> | undefined;
      for (const { args, source } of seen) {
        const command = args[0]!.toUpperCase();
        if (source !== "lua") {
          declared = command === "EVALSHA" || command === "EVAL" ? new Set(args.slice(3, 3 + Number(args[2]))) : undefined;
          if (declared) scripts++;
          continue;
        }
        if (command === "TIME") continue;
        const keys = (await redis.admin.call("COMMAND", "GETKEYS", ...args)) as string[];
        for (const key of keys) if (!declared?.has(key)) undeclared.push(`${args.slice(0, 2).join(" ")} touches ${key}`);
      }
      assert.ok(scripts >= 15, `the exercise ran scripts (${scripts})`);
      assert.deepEqual([...new Set(undeclared)], [], "keys touched but not declared");
    } finally {
      monitor.disconnect();
      base.disconnect();
      await store.close();
      await other.close();
    }
  });
});

/** Runs every operation of the store, through every path that touches keys of its own choosing. */
async function exerciseEveryScript(store: RedisCounterStore, other: RedisCounterStore): Promise<void> {
  const tenant = "keys";
  const nowMs = store.now();
  const meters: MeterOp[] = [
    { key: `TOKENS|MINUTE|*|TENANT|keys|${nowMs - (nowMs % 60_000)}`, unit: "tokens", limit: 1e9, enforce: true, expiresAtMs: nowMs + 120_000 },
    { key: "REQUESTS|MONTH|*|TENANT|keys|0", unit: "requests", limit: 1e9, enforce: true, expiresAtMs: 0 },
    { key: "CONCURRENCY|*|USER|u", unit: "concurrency", limit: 1e9, enforce: true, expiresAtMs: 0 },
  ];
  const usage: LeaseUsage = { inputTokens: 1, outputTokens: 1, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, costMicros: 1, outcome: 1, estimated: false, provider: "p", model: "m", latencyMs: 1, settledAtMs: nowMs };
  const reserve = (s: RedisCounterStore, leaseId: string, requestId: string, leaseExpiresAtMs = nowMs + 60_000) =>
    s.reserve({ tenant, leaseId, reservationId: `rid-${leaseId}`, requestId, meters, amounts: { tokens: 5, costMicros: 5 }, leaseExpiresAtMs, nowMs });
  const settle = (s: RedisCounterStore, leaseId: string) => s.settle({ tenant, leaseId, usage, nowMs: s.now(), graceMs: 0 });

  await store.rebuild(tenant, "g/1:1:", [{ key: meters[1]!.key, amount: 3, expiresAtMs: 0 }]);
  await store.charge(tenant, [{ key: meters[0]!.key, amount: 2, expiresAtMs: nowMs + 120_000 }], "g/1:1:");
  assert.equal((await reserve(store, "a", "req-a")).status, "reserved");
  assert.equal((await reserve(other, "a2", "req-a")).status, "duplicate", "the request id names a lease the other replica must declare");
  assert.equal((await reserve(store, "a", "")).status, "duplicate");
  assert.ok(await store.renew(tenant, "a", nowMs + 90_000));
  assert.equal((await settle(store, "a")).status, "settled");
  assert.equal((await settle(other, "a")).status, "already");
  await store.markRecorded(tenant, "a");
  // Reserved by one replica, settled and recorded by the other.
  assert.equal((await reserve(store, "b", "req-b")).status, "reserved");
  assert.equal((await settle(other, "b")).status, "settled");
  await other.markRecorded(tenant, "b");
  // Several in one tick: one batch.
  const batch = await Promise.all(["c", "d", "e"].map((id) => reserve(store, id, `req-${id}`)));
  assert.deepEqual(batch.map((r) => r.status), ["reserved", "reserved", "reserved"]);
  await Promise.all(["c", "d"].map((id) => settle(store, id)));
  // Expired while open (its concurrency is released) and settled past its grace: both claimed by the sweeper.
  assert.equal((await reserve(store, "x", "req-x", nowMs - 1)).status, "reserved");
  const claimed = await other.claimDue(other.now(), 30_000, 100);
  assert.deepEqual(claimed.map((l) => l.leaseId).sort(), ["c", "d", "x"]);
  await Promise.all(claimed.map((l) => other.markRecorded(tenant, l.leaseId)));
  assert.equal(await store.openLeases(tenant), 1, "e is open");
  await store.read(tenant, meters.map((m) => m.key));
  await store.reset(tenant, meters[0]!.key);
  await store.generation(tenant);
}

import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { CounterStoreUnavailableError, type MeterOp } from "../control-plane/counter-store.js";
import { RedisCounterStore } from "../control-plane/redis-counter-store.js";
import { counterStoreContract } from "./counter-store-contract.js";
import { redisClusterUnavailable } from "./support/redis-cluster.js";
import { freePort } from "./support/free-port.js";

const run = promisify(execFile);

/** Skips without redis-server/redis-cli, fails instead under ADMISSION_REQUIRE_SERVICES=1. */
const skip = redisClusterUnavailable();

describe("Redis Cluster (3 masters on loopback)", { skip }, () => {
  let cluster: LocalCluster | undefined;
  const nodes = () => {
    if (!cluster) throw new Error("the cluster did not start");
    return cluster.nodes;
  };
  before(async () => (cluster = await startCluster()), { timeout: 90_000 });
  after(() => cluster?.stop());

  counterStoreContract("redis-cluster", (bucketClock) => RedisCounterStore.connect({ clusterNodes: nodes(), keyPrefix: "admcluster", bucketClock }));

  describe("cluster specifics", () => {
    const op: MeterOp = { key: "conc", unit: "concurrency", limit: 1_000_000, enforce: true, expiresAtMs: 0 };
    /** Reserves on a tenant made warm first (a no-op when it is), as the decision path does. */
    const reserve = async (store: RedisCounterStore, tenant: string, leaseId: string, leaseExpiresAtMs: number) => {
      await store.rebuild(tenant, "g/1:1:", []);
      return store.reserve({ tenant, leaseId, reservationId: `rid-${leaseId}`, requestId: `req-${leaseId}`, meters: [op], amounts: { tokens: 0, costMicros: 0 }, leaseExpiresAtMs, nowMs: Date.now() });
    };

    test("scripts recover after SCRIPT FLUSH on every master", async () => {
      const store = await RedisCounterStore.connect({ clusterNodes: nodes(), keyPrefix: "admflush" });
      try {
        const tenants = await tenantsOnEveryMaster(cluster!, 2);
        for (const round of [0, 1]) {
          if (round > 0) for (const port of cluster!.ports) await cli(port, "script", "flush");
          const results = await Promise.all(tenants.flatMap((t) => Array.from({ length: 20 }, (_, i) => reserve(store, t, `L${round}-${i}`, Date.now() + 60_000))));
          assert.ok(results.every((r) => r.status === "reserved"), `round ${round}`);
        }
        for (const t of tenants) assert.deepEqual(await store.read(t, ["conc"]), [40]);
      } finally {
        await store.close();
      }
    });

    test("due leases on every master are found by the index, and by the safety-net scan when the index is lost", async () => {
      const tenants = await tenantsOnEveryMaster(cluster!, 2);
      const p = "admscan";
      const claimAll = async (dueRescanMs: number) => {
        const store = await RedisCounterStore.connect({ clusterNodes: nodes(), keyPrefix: p, dueRescanMs });
        try {
          return (await store.claimDue(Date.now(), 60_000, 1000)).map((l) => l.tenant).sort();
        } finally {
          await store.close();
        }
      };
      const store = await RedisCounterStore.connect({ clusterNodes: nodes(), keyPrefix: p, dueRescanMs: 0 });
      const admin = new Redis.Cluster(nodes().map((hp) => ({ host: "127.0.0.1", port: Number(hp.split(":")[1]) })));
      try {
        for (const t of tenants) await reserve(store, t, "A", Date.now() - 1);
        assert.deepEqual(await claimAll(0), [...tenants].sort(), "through the index");
        for (const t of tenants) await reserve(store, t, "B", Date.now() - 1);
        await admin.del(`${p}:{~index}:due-tenants`, `${p}:{~index}:due-gen`);
        assert.deepEqual(await claimAll(0), [], "index lost, no scan: not found");
        assert.deepEqual(await claimAll(60_000), [...tenants].sort(), "the scan ran on every master");
      } finally {
        await store.close();
        await admin.quit();
      }
    });

    test("a dead master: calls fail as CounterStoreUnavailableError (never anything else) until it is back, then the store recovers", async () => {
      const store = await RedisCounterStore.connect({ clusterNodes: nodes(), keyPrefix: "admdead" });
      try {
        const tenants = await tenantsOnEveryMaster(cluster!, 1);
        for (const t of tenants) assert.equal((await reserve(store, t, "before", Date.now() + 60_000)).status, "reserved");
        const [victim] = await mastersOf(cluster!, [`admdead:{${tenants[0]}}:due`]);
        const survivor = cluster!.ports.find((p) => p !== victim)!;
        await cluster!.kill(victim!);
        let n = 0;
        const attempt = async () => {
          const outcomes = await Promise.all(tenants.map((t) => reserve(store, t, `down-${n++}`, Date.now() + 60_000).then(() => "ok", (err: unknown) => err)));
          assert.ok(outcomes[0] instanceof CounterStoreUnavailableError, `the dead master's tenant: ${String(outcomes[0])}`);
          for (const o of outcomes.slice(1)) assert.ok(o === "ok" || o instanceof CounterStoreUnavailableError, `other masters: ${String(o)}`);
        };
        // Through every phase: connection refused, the others still pointing at it, the cluster marked failed.
        await waitFor(async () => (await attempt(), (await cli(survivor, "cluster", "info")).includes("cluster_state:fail")), 20_000, "cluster_state:fail");
        for (let i = 0; i < 3; i++) await attempt();
        await assert.rejects(store.read(tenants[0]!, ["conc"]), CounterStoreUnavailableError);

        await cluster!.restart(victim!); // rejoins with its slots, without its data
        const everyMaster = async () => (await Promise.all(tenants.map((t) => reserve(store, t, `back-${n++}`, Date.now() + 60_000)))).every((r) => r.status === "reserved");
        await waitFor(everyMaster, 30_000, "the store to recover on every master");
      } finally {
        await store.close();
      }
    });
  });
});

interface LocalCluster {
  readonly nodes: string[];
  readonly ports: number[];
  kill(port: number): Promise<void>;
  /** Starts a killed node again with its cluster config (slots), without its data. */
  restart(port: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Three redis-server masters in cluster mode on loopback, in a temp dir, without
 * persistence. Each gets an explicit cluster bus port (the default, port + 10000,
 * does not exist for ephemeral ports above 55535). Every wait is bounded.
 */
async function startCluster(): Promise<LocalCluster> {
  const dir = mkdtempSync(join(tmpdir(), "adm-redis-cluster-"));
  const children = new Map<number, { child: ChildProcess; exited: Promise<void> }>();
  const kill = async (port: number) => {
    const node = children.get(port);
    if (!node) return;
    node.child.kill("SIGKILL");
    await withTimeout(node.exited, 5_000, `redis-server ${port} to exit`);
  };
  const stop = async () => {
    try {
      await Promise.all([...children.keys()].map(kill));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const busPorts = new Map<number, number>();
  const start = (port: number) => {
    const child = spawn("/usr/bin/redis-server", [
      "--port", String(port), "--cluster-port", String(busPorts.get(port)), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
      "--cluster-config-file", join(dir, `nodes-${port}.conf`), "--cluster-node-timeout", "2000",
      "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", join(dir, `${port}.log`),
    ], { stdio: "ignore" });
    children.set(port, { child, exited: new Promise((resolve) => child.once("exit", () => resolve())) });
  };
  const started = (port: number) => waitFor(async () => {
    const { child } = children.get(port)!;
    if (child.exitCode !== null) throw new Error(`redis-server ${port} exited: ${logTail(dir, port)}`);
    return (await cli(port, "ping")) === "PONG";
  }, 10_000, `redis-server on ${port}`);
  const restart = async (port: number) => {
    start(port);
    await started(port);
  };
  try {
    const ports: number[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      ports.push(port);
      busPorts.set(port, await freePort());
      start(port);
    }
    for (const port of ports) await started(port);
    await run("/usr/bin/redis-cli", ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes"], { timeout: 30_000 });
    for (const port of ports) {
      await waitFor(async () => (await cli(port, "cluster", "info")).includes("cluster_state:ok"), 30_000, `cluster_state:ok on ${port}`);
    }
    return { nodes: ports.map((p) => `127.0.0.1:${p}`), ports, kill, restart, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function cli(port: number, ...args: string[]): Promise<string> {
  return (await run("/usr/bin/redis-cli", ["-p", String(port), ...args], { timeout: 5_000 })).stdout.trim();
}

/** The port of the master serving each key's slot. */
async function mastersOf(cluster: LocalCluster, keys: readonly string[]): Promise<number[]> {
  const admin = new Redis(cluster.ports[0]!, "127.0.0.1");
  try {
    const ranges = await admin.cluster("SLOTS");
    const slots = await Promise.all(keys.map(async (key) => Number(await admin.cluster("KEYSLOT", key))));
    return slots.map((slot) => ranges.find(([from, to]) => slot >= from && slot <= to)![2]![1]);
  } finally {
    await admin.quit();
  }
}

/** `perMaster` tenant ids for each master (by hash tag), so a test touches every node. */
async function tenantsOnEveryMaster(cluster: LocalCluster, perMaster: number): Promise<string[]> {
  const candidates = Array.from({ length: 200 }, (_, i) => `spread${i}`);
  const ports = await mastersOf(cluster, candidates);
  const picked = cluster.ports.flatMap((port) => candidates.filter((_, i) => ports[i] === port).slice(0, perMaster));
  assert.equal(picked.length, perMaster * cluster.ports.length, "tenants on every master");
  return picked;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs))),
  ]).finally(() => clearTimeout(timer));
}

function logTail(dir: string, port: number): string {
  try {
    return readFileSync(join(dir, `${port}.log`), "utf8").trim().split("\n").slice(-3).join(" | ");
  } catch {
    return "(no log)";
  }
}


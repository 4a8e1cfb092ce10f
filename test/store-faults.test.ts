import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { describe, test } from "node:test";
import { Redis } from "ioredis";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { scratchDatabase } from "./support/databases.js";
import { redisClusterUnavailable } from "./support/redis-cluster.js";
import { scenario, secretOf } from "./support/scenario.js";
import { missingService } from "./support/services.js";
import { TcpProxy } from "./support/tcp-proxy.js";

async function tokensUsed(t: TestControlPlane, tenant: string): Promise<bigint> {
  const e = await t.admission.getEffectivePolicy({ tenant }, admin);
  return e.limits.find((l) => l.kind === LimitKind.TOKENS && l.window === Window.MONTH)!.used;
}

async function eventually(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const bundle = () => scenario({ id: "f", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000 }], keys: [{ id: "kf" }] });
const admitReq = { credential: secretOf("kf"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n };

describe("store faults", () => {
  test("PostgreSQL unreachable: Settles are spooled to disk, acknowledged, and replayed once it is back — nothing lost or doubled", { skip: missingService("PostgreSQL", "DATABASE_URL") }, async () => {
    const db = await scratchDatabase();
    const url = new URL(db.url);
    const proxy = new TcpProxy(url.hostname, Number(url.port || 5432));
    await proxy.start();
    url.host = `127.0.0.1:${proxy.port}`;
    const t = await startTestControlPlane({ config: { databaseUrl: url.toString() } });
    try {
      await t.policy.applyBundle({ bundle: bundle() }, admin);
      const leases = await Promise.all(Array.from({ length: 50 }, () => t.admission.admit(admitReq)));
      assert.ok(leases.every((d) => d.allowed));

      await proxy.cut();
      const settled = await Promise.all(leases.map((d, i) => t.admission.settle({ reservationId: d.reservationId, inputTokens: 10n, outputTokens: BigInt(i) })));
      assert.ok(settled.every((s) => !s.duplicate), "acknowledged while the database is down");
      const ready = await (await fetch(`http://127.0.0.1:${t.cp.httpPort}/readyz`)).json() as { ready: boolean; checks: Record<string, string> };
      assert.equal(ready.ready, true, "still serving decisions");
      assert.match(ready.checks.database!, /failing/);

      await proxy.restore();
      await eventually(async () => (await t.cp.settlement.sweep(), !t.cp.ledger.spoolPending()), 20_000, "spool replay");
      const usage = await t.policy.getUsage({ tenant: "f" }, admin);
      assert.equal(usage.requests, 50n);
      assert.equal(usage.outputTokens, BigInt((49 * 50) / 2));
      const again = await t.admission.settle({ reservationId: leases[7]!.reservationId, inputTokens: 1n, outputTokens: 1n });
      assert.equal(again.duplicate, true);
      assert.equal(again.outputTokens, 7n);
      assert.equal((await t.policy.getUsage({ tenant: "f" }, admin)).requests, 50n, "replaying again doubles nothing");
      assert.equal(await tokensUsed(t, "f"), usage.inputTokens + usage.outputTokens);
    } finally {
      await t.close();
      await proxy.cut();
      await db.drop();
    }
  });

  test("Redis stopped: FAIL_CLOSED denies with 503; when it returns empty, service recovers and counters are rebuilt from the ledger", { skip: redisClusterUnavailable() }, async () => {
    const port = await freePort();
    let redis = startRedis(port);
    await eventually(async () => {
      const probe = new Redis(port, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
      probe.on("error", () => undefined);
      try {
        return (await probe.ping()) === "PONG";
      } finally {
        probe.disconnect();
      }
    }, 10_000, "redis");
    const t = await startTestControlPlane({ config: { redisUrl: `redis://127.0.0.1:${port}` } });
    try {
      await t.policy.applyBundle({ bundle: bundle() }, admin);
      const d = await t.admission.admit(admitReq);
      await t.admission.settle({ reservationId: d.reservationId, inputTokens: 100n, outputTokens: 23n });
      assert.equal(await tokensUsed(t, "f"), 123n);

      redis.kill("SIGKILL");
      await new Promise((r) => redis.once("exit", r));
      const denied = await t.admission.admit(admitReq);
      assert.equal(denied.reason, DenyReason.UNAVAILABLE);
      assert.equal(denied.httpStatus, 503);

      redis = startRedis(port); // no persistence: it comes back empty
      await eventually(async () => (await t.admission.admit(admitReq)).allowed, 20_000, "recovery");
      await eventually(async () => (await t.cp.settlement.sweep(), (await tokensUsed(t, "f")) >= 123n), 20_000, "rebuild");
      // 123 settled before the outage, rebuilt from the ledger, plus the open reservations made since.
      const used = await tokensUsed(t, "f");
      assert.equal((used - 123n) % 20n, 0n, `rebuilt ${used}: the ledger's 123 plus 20 per open lease`);
    } finally {
      await t.close();
      redis.kill("SIGKILL");
    }
  });
});

function startRedis(port: number): ChildProcess {
  return spawn("/usr/bin/redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

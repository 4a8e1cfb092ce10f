import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { describe, test } from "node:test";
import { Redis } from "ioredis";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { quickDatabase, scratchDatabase } from "./support/databases.js";
import { redisClusterUnavailable } from "./support/redis-cluster.js";
import { scenario, secretOf } from "./support/scenario.js";
import { missingService } from "./support/services.js";
import { TcpProxy } from "./support/tcp-proxy.js";
import { freePort } from "./support/free-port.js";
import { LosableCounterStore } from "./support/losable-counter-store.js";
import { meterUsed } from "./support/meter-used.js";

const tokensUsed = (t: TestControlPlane, tenant: string) => meterUsed(t.admission, tenant, LimitKind.TOKENS, Window.MONTH);

async function eventually(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const limits = [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000_000 }];
const bundle = () => scenario(
  { id: "f", failurePolicy: "FAIL_CLOSED", limits, keys: [{ id: "kf" }] },
  { id: "o", failurePolicy: "FAIL_OPEN", limits, keys: [{ id: "ko" }] },
);
const admitReq = { credential: secretOf("kf"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n };

describe("store faults", () => {
  test("PostgreSQL cut off mid-load: Settles are spooled, acknowledged and replayed once it is back — the ledger holds exactly the acknowledged settles", { skip: missingService("PostgreSQL", "DATABASE_URL") }, async () => {
    const { db, proxy, databaseUrl } = await proxiedDatabase();
    const t = await startTestControlPlane({ config: { databaseUrl } });
    const traffic = new Traffic(t, [{ tenant: "f", key: "kf" }]);
    try {
      await t.policy.applyBundle({ bundle: bundle() }, admin);
      traffic.start();
      await traffic.settled(50);
      await proxy.cut();
      traffic.mark("fault");
      // Requests admitted before the cut may settle after it: count only those admitted during it.
      await traffic.settledIn("fault", 50);
      const ready = await (await fetch(`http://127.0.0.1:${t.cp.httpPort}/readyz`)).json() as { ready: boolean; checks: Record<string, string> };
      assert.equal(ready.ready, true, "still serving decisions");
      assert.match(ready.checks.database!, /failing/);
      await proxy.restore();
      const after = traffic.mark("after");
      await traffic.settled(after.settled + 50);
      await traffic.stop();

      assert.ok(traffic.outcomes("fault").every((o) => o === "allowed"), "decisions go on without the database");
      await eventually(async () => (await t.cp.settlement.sweep(), !t.cp.ledger.spoolPending()), 20_000, "spool replay");
      const usage = await assertLedgerIsAcknowledged(t, traffic, "f");
      assert.equal(await tokensUsed(t, "f"), usage.inputTokens + usage.outputTokens, "the meter holds the ledger's tokens exactly");
      // A settle acknowledged while the database was cut off (from the spool), repeated now that its row was replayed.
      const spooled = [...traffic.acknowledged.values()].filter((a) => a.phase === "fault");
      assert.ok(spooled.length >= 50, `settles acknowledged during the cut: ${spooled.length}`);
      for (const s of [spooled[0]!, spooled.at(-1)!]) {
        const again = await t.admission.settle({ reservationId: s.reservationId, inputTokens: 1n, outputTokens: 1n });
        assert.deepEqual([again.duplicate, again.inputTokens, again.outputTokens], [true, s.inputTokens, s.outputTokens], "the spooled settle stands");
      }
      assert.deepEqual(await assertLedgerIsAcknowledged(t, traffic, "f"), usage, "repeating a replayed settle doubles nothing");
      assert.equal(await tokensUsed(t, "f"), usage.inputTokens + usage.outputTokens);
    } finally {
      await traffic.stop();
      await t.close();
      await proxy.cut();
      await db.drop();
    }
  });

  test("counters lost while a settle waits in the spool: when the row is replayed after the rebuild, it is charged to the new generation", { skip: missingService("PostgreSQL", "DATABASE_URL") }, async () => {
    const { db, proxy, databaseUrl } = await proxiedDatabase();
    const counters = new LosableCounterStore();
    const t = await startTestControlPlane({ config: { databaseUrl }, deps: { counters } });
    try {
      await t.cp.settlement.stop(); // the test decides when spooled rows are replayed
      await t.policy.applyBundle({ bundle: bundle() }, admin);
      const first = await t.admission.admit(admitReq);
      await t.admission.settle({ reservationId: first.reservationId, inputTokens: 10n, outputTokens: 5n });
      const spooled = await t.admission.admit(admitReq);
      await proxy.cut();
      const s = await t.admission.settle({ reservationId: spooled.reservationId, inputTokens: 10n, outputTokens: 7n });
      assert.equal(s.duplicate, false, "acknowledged from the spool");
      assert.equal(t.cp.ledger.spoolPending(), true);
      counters.lose();
      await proxy.restore();
      // The rebuild reads a ledger without the spooled row...
      const rebuilt = await tokensUsed(t, "f");
      assert.equal(rebuilt, 15n, "rebuilt from the ledger as it is: the first settle only");
      // ...which the replay then charges, since that generation's snapshot did not see it.
      await t.cp.settlement.sweep();
      assert.equal(t.cp.ledger.spoolPending(), false);
      assert.equal(t.cp.settlement.deferredCount(), 0);
      assert.equal(await tokensUsed(t, "f"), 15n + 17n);
    } finally {
      await t.close();
      await proxy.cut();
      await db.drop();
    }
  });

  for (const fault of ["restarted", "flushed"] as const) {
    test(`Redis ${fault} mid-load: FAIL_CLOSED denies with 503, FAIL_OPEN allows and records; service recovers by itself, counters rebuilt exactly, ledger = acknowledged settles`, { skip: redisClusterUnavailable() }, async (ctx) => {
      const diagnostic = (message: string) => ctx.diagnostic(message);
      const port = await freePort();
      let redis = await startRedis(port);
      const database = await quickDatabase();
      const t = await startTestControlPlane({ config: { ...database.config, redisUrl: `redis://127.0.0.1:${port}` } });
      const traffic = new Traffic(t, [{ tenant: "f", key: "kf" }, { tenant: "o", key: "ko" }]);
      try {
        await t.policy.applyBundle({ bundle: bundle() }, admin);
        traffic.start();
        await traffic.settled(60);
        if (fault === "restarted") {
          redis.kill("SIGKILL");
          await new Promise((r) => redis.once("exit", r));
          await eventually(async () => (await t.admission.admit(admitReq)).reason === DenyReason.UNAVAILABLE, 10_000, "the outage to be seen");
          const denied = await t.admission.admit(admitReq);
          assert.deepEqual([DenyReason[denied.reason], denied.httpStatus], ["UNAVAILABLE", 503], "FAIL_CLOSED while Redis is down");
          const down = traffic.mark("fault");
          await eventually(async () => traffic.settledCount() >= down.settled + 30 && traffic.outcomes("fault").includes("UNAVAILABLE"), 20_000, "load during the outage");
          traffic.mark("restarting"); // calls from here on may see either side
          redis = await startRedis(port); // no persistence: it comes back empty
        } else {
          traffic.mark("fault");
          const probe = new Redis(port);
          await probe.flushdb();
          probe.disconnect();
        }
        const after = traffic.mark("after");
        await eventually(async () => traffic.outcomes("after").filter((o) => o === "allowed").length >= 60, 20_000, "recovery");
        await traffic.settled(after.settled + 60);
        await traffic.stop();

        if (fault === "restarted") {
          const closed = traffic.outcomes("fault", "f");
          const open = traffic.outcomes("fault", "o");
          assert.ok(closed.length > 0 && closed.every((o) => o === "UNAVAILABLE"), `FAIL_CLOSED during the outage: ${closed}`);
          assert.ok(traffic.httpStatuses("fault", "f").every((status) => status === 503), `FAIL_CLOSED answers 503: ${traffic.httpStatuses("fault", "f")}`);
          assert.ok(open.length > 0 && open.every((o) => o === "unmetered"), `FAIL_OPEN during the outage: ${open}`);
        }
        await eventually(async () => (await t.cp.settlement.sweep(), t.cp.settlement.deferredCount() === 0), 20_000, "deferred counter updates");
        for (const tenant of ["f", "o"]) {
          const usage = await assertLedgerIsAcknowledged(t, traffic, tenant);
          // Every settle is counted once: by the rebuild's snapshot of the ledger, or by the settle itself in the
          // generation it (or a late charge) went into, never both. No lease is open now, so meter == ledger.
          const used = await tokensUsed(t, tenant);
          assert.equal(used, usage.inputTokens + usage.outputTokens, `${tenant}: the meter holds the ledger's tokens exactly`);
          diagnostic(`${fault} ${tenant}: ledger ${usage.inputTokens + usage.outputTokens} tokens, meter ${used}; phases ${JSON.stringify(traffic.summary())}`);
        }
      } finally {
        await traffic.stop();
        await t.close();
        await database.drop();
        redis.kill("SIGKILL");
      }
    });
  }
});

/** A scratch database reached through a TCP proxy the test can cut and restore. */
async function proxiedDatabase(): Promise<{ db: Awaited<ReturnType<typeof scratchDatabase>>; proxy: TcpProxy; databaseUrl: string }> {
  const db = await scratchDatabase();
  const url = new URL(db.url);
  const proxy = new TcpProxy(url.hostname, Number(url.port || 5432));
  await proxy.start();
  url.host = `127.0.0.1:${proxy.port}`;
  return { db, proxy, databaseUrl: url.toString() };
}

/** A private redis-server without persistence (never the shared one), once it answers. */
async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn("/usr/bin/redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  await eventually(async () => {
    const probe = new Redis(port, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    probe.on("error", () => undefined);
    try {
      return (await probe.ping()) === "PONG";
    } finally {
      probe.disconnect();
    }
  }, 10_000, "redis");
  return child;
}

type Outcome = "allowed" | "unmetered" | string;

/**
 * Closed-loop Admit/Settle traffic straight to the control plane: workers admit,
 * and settle every admitted request until the settle is acknowledged (as the data
 * plane's spool does). Outcomes are filed under the phase in which the Admit
 * started and ended (calls straddling a phase change are left out).
 */
class Traffic {
  /** Acknowledged settles by reservation id: what the caller was told. */
  readonly acknowledged = new Map<string, { reservationId: string; tenant: string; inputTokens: bigint; outputTokens: bigint; costMicros: bigint; phase: string }>();
  private readonly byPhase = new Map<string, Array<{ tenant: string; outcome: Outcome; httpStatus: number }>>();
  private phase = "before";
  private running = false;
  private workers: Promise<void>[] = [];
  private n = 0;

  constructor(private readonly t: TestControlPlane, private readonly tenants: Array<{ tenant: string; key: string }>) {}

  start(workers = 6): void {
    this.running = true;
    this.workers = Array.from({ length: workers }, (_, w) => this.work(w));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
  }

  mark(phase: string): { settled: number } {
    this.phase = phase;
    return { settled: this.acknowledged.size };
  }

  /** Waits for `count` acknowledged settles of requests admitted in `phase`. */
  settledIn(phase: string, count: number): Promise<void> {
    const inPhase = () => [...this.acknowledged.values()].filter((a) => a.phase === phase).length;
    return eventually(async () => inPhase() >= count, 30_000, `${count} acknowledged settles admitted in ${phase}`);
  }

  settledCount(): number {
    return this.acknowledged.size;
  }

  settled(count: number): Promise<void> {
    return eventually(async () => this.acknowledged.size >= count, 30_000, `${count} acknowledged settles`);
  }

  /** Outcome counts per phase, for the report. */
  summary(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const [phase, list] of this.byPhase) for (const { outcome } of list) (out[phase] ??= {})[outcome] = (out[phase]![outcome] ?? 0) + 1;
    return out;
  }

  outcomes(phase: string, tenant?: string): Outcome[] {
    return this.filed(phase, tenant).map((o) => o.outcome);
  }

  /** The decisions' HTTP statuses (0 for a call that failed). */
  httpStatuses(phase: string, tenant?: string): number[] {
    return this.filed(phase, tenant).map((o) => o.httpStatus);
  }

  private filed(phase: string, tenant?: string): Array<{ tenant: string; outcome: Outcome; httpStatus: number }> {
    return (this.byPhase.get(phase) ?? []).filter((o) => !tenant || o.tenant === tenant);
  }

  private async work(w: number): Promise<void> {
    while (this.running) {
      const { tenant, key } = this.tenants[w % this.tenants.length]!;
      const i = this.n++;
      const phase = this.phase;
      const d = await this.t.admission.admit({ ...admitReq, credential: secretOf(key) }).catch(() => undefined);
      const outcome = !d ? "error" : d.allowed ? (d.unmetered ? "unmetered" : "allowed") : DenyReason[d.reason]!;
      if (phase === this.phase) this.byPhase.set(phase, [...(this.byPhase.get(phase) ?? []), { tenant, outcome, httpStatus: d?.httpStatus ?? 0 }]);
      if (!d?.allowed) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      for (;;) {
        try {
          const settling = this.phase;
          const s = await this.t.admission.settle({ reservationId: d.reservationId, inputTokens: 10n, outputTokens: BigInt(i % 10) });
          // Filed under a phase only when it started and was acknowledged in it.
          const phase = settling === this.phase ? settling : "straddling";
          this.acknowledged.set(d.reservationId, { reservationId: d.reservationId, tenant, inputTokens: s.inputTokens, outputTokens: s.outputTokens, costMicros: s.costMicros, phase });
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    }
  }
}

/** The ledger holds each acknowledged settle once, with what was acknowledged, and nothing else. */
async function assertLedgerIsAcknowledged(t: TestControlPlane, traffic: Traffic, tenant: string): Promise<{ requests: bigint; inputTokens: bigint; outputTokens: bigint; costMicros: bigint }> {
  const mine = [...traffic.acknowledged.values()].filter((a) => a.tenant === tenant);
  const rows = (await t.cp.database.query<{ n: string; distinct_n: string }>("SELECT count(*) AS n, count(DISTINCT reservation_id) AS distinct_n FROM usage_ledger WHERE tenant = $1", [tenant])).rows[0]!;
  assert.deepEqual([Number(rows.n), Number(rows.distinct_n)], [mine.length, mine.length], `${tenant}: one ledger row per acknowledged settle`);
  const usage = await t.policy.getUsage({ tenant }, admin);
  const sum = (f: (a: (typeof mine)[number]) => bigint) => mine.reduce((s, a) => s + f(a), 0n);
  assert.deepEqual([usage.requests, usage.inputTokens, usage.outputTokens, usage.costMicros], [BigInt(mine.length), sum((a) => a.inputTokens), sum((a) => a.outputTokens), sum((a) => a.costMicros)]);
  return usage;
}


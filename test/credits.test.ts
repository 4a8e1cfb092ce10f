import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Redis } from "ioredis";
import type { AdmitResponse, Meter } from "../gen/admission/v1/admission_pb.js";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { BundleSchema, LimitKind, LimitSource } from "../gen/admission/v1/policy_pb.js";
import { parseProtoJson } from "../control-plane/policy/proto-json.js";
import pino from "pino";
import { denialResponse } from "../data-plane/error-response.js";
import { loadDataPlaneConfig } from "../data-plane/config.js";
import { startDataPlane } from "../data-plane/server.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { scratchDatabase } from "./support/databases.js";
import { deleteKeysWithPrefix } from "./support/redis-keys.js";
import { catalogJson, secretOf } from "./support/scenario.js";
import { missingService } from "./support/services.js";
import { LosableCounterStore } from "./support/losable-counter-store.js";
import { CounterStoreUnavailableError } from "../control-plane/counter-store.js";

/**
 * Prices (scenario.ts): m-pro 1 micro-USD per input token and 2 per output token, so an
 * Admit of 100 in / 200 out reserves 500 micro-USD; m-base 0.1 and 0.2 (rounded up).
 */
function creditsBundle() {
  return parseProtoJson(BundleSchema, {
    ...catalogJson,
    plans: [
      ...catalogJson.plans,
      {
        code: "PREPAID", features: ["DRAFTING"], prepaid: true,
        taskAccess: [{ task: "DRAFT", modelClasses: ["PRO_M", "BASE_S"] }],
        limits: [{ kind: "OUTPUT_TOKENS", window: "REQUEST", value: 2000 }],
      },
    ],
    atiTokens: [...catalogJson.atiTokens, { id: "ati-prepaid", plan: "PREPAID", status: "ACTIVE" }],
    tenants: [
      { id: "acme", atiToken: "ati-prepaid", status: "ACTIVE", mode: "ENFORCE" },
      // Prepaid by its own setting on a plan that is not.
      { id: "beta", atiToken: "ati-pro", status: "ACTIVE", mode: "ENFORCE", prepaid: true },
      { id: "post", atiToken: "ati-pro", status: "ACTIVE", mode: "ENFORCE" },
    ],
    apiKeys: ["acme", "beta", "post"].map((t) => ({ id: `k-${t}`, tenant: t, user: "", secret: secretOf(`k-${t}`) })),
    // Nothing listens there: the deliveries stay pending, and ListWebhookDeliveries shows the events raised.
    webhooks: [{ id: "ops", url: "http://127.0.0.1:9/hook", events: ["alert.threshold", "credits.granted"] }],
  });
}

const admitOf = (tenant: string, inputTokens: number, maxOutputTokens: number, model = "m-pro") => ({
  credential: secretOf(`k-${tenant}`), task: "DRAFT", model, inputTokens: BigInt(inputTokens), maxOutputTokens: BigInt(maxOutputTokens),
});

const creditMeter = (d: AdmitResponse): Meter | undefined => d.meters.find((m) => m.kind === LimitKind.CREDITS_MICROS);

async function grpcCode(call: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await call;
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: e.code, message: e.details ?? e.message };
  }
  assert.fail("the call succeeded");
}

describe("prepaid credits: grants, balance, Admit against it, Settle, restart (PGlite)", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "adm-credits-"));
  let t: TestControlPlane;
  const balance = async (tenant = "acme") => {
    const b = await t.policy.getCreditBalance({ tenant }, admin);
    return { granted: b.grantedMicros, spent: b.spentMicros, reserved: b.reservedMicros, balance: b.balanceMicros, prepaid: b.prepaid };
  };
  const reservations: Record<string, string> = {};

  before(async () => {
    t = await startTestControlPlane({ dataDir });
    await t.policy.applyBundle({ bundle: creditsBundle() }, admin);
  });

  after(async () => {
    await t?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("with nothing granted a prepaid tenant is denied CREDITS_EXHAUSTED (402, credits_exhausted, no retry-after); others are not prepaid", async () => {
    assert.deepEqual(await balance(), { granted: 0n, spent: 0n, reserved: 0n, balance: 0n, prepaid: true });
    assert.equal((await balance("beta")).prepaid, true);
    assert.equal((await balance("post")).prepaid, false);
    const d = await t.admission.admit(admitOf("acme", 100, 200));
    assert.equal(d.allowed, false);
    assert.equal(d.reason, DenyReason.CREDITS_EXHAUSTED);
    assert.equal(d.httpStatus, 402);
    assert.equal(d.retryAfterMs, 0n);
    assert.match(d.message, /credits of tenant acme: balance 0 micro-USD of 0 granted, this request's estimated cost is 500/);
    assert.equal(d.deniedMeter?.kind, LimitKind.CREDITS_MICROS);
    assert.equal(d.deniedMeter?.source, LimitSource.PLAN);
    // The data plane and Kong answer with the one reason table.
    const http = denialResponse(d, "req-1");
    assert.equal(http.status, 402);
    assert.equal(JSON.parse(http.body).error.code, "credits_exhausted");
    assert.equal(http.headers["retry-after"], undefined);
    // And the real data plane in front of a provider, which is never called.
    const dp = await startDataPlane(
      { ...loadDataPlaneConfig({}), host: "127.0.0.1", port: 0, metricsPort: 0, controlPlaneAddr: t.address, spoolDir: join(dataDir, "dp-spool") },
      { logger: pino({ level: "silent" }), providers: [{ name: "p1", baseUrl: "http://127.0.0.1:9/v1", api: "openai", apiKey: "" }] },
    );
    try {
      const res = await fetch(`http://127.0.0.1:${dp.port}/v1/chat/completions`, {
        method: "POST", headers: { authorization: `Bearer ${secretOf("k-acme")}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
        body: JSON.stringify({ model: "m-pro", max_tokens: 200, messages: [{ role: "user", content: "draft claim 1" }] }),
      });
      assert.equal(res.status, 402);
      const body = await res.json() as { error: { code: string; type: string; reason: string; limit_kind: string } };
      assert.deepEqual([body.error.code, body.error.type, body.error.reason, body.error.limit_kind], ["credits_exhausted", "insufficient_quota", "CREDITS_EXHAUSTED", "CREDITS_MICROS"]);
    } finally {
      await dp.close();
    }
    // A tenant that is not prepaid has no credit meter.
    const post = await t.admission.admit(admitOf("post", 100, 200));
    assert.equal(post.allowed, true);
    assert.equal(creditMeter(post), undefined);
    await t.admission.settle({ reservationId: post.reservationId, inputTokens: 1n, outputTokens: 1n });
    const beta = await t.admission.getEffectivePolicy({ tenant: "beta" }, admin);
    assert.equal(beta.limits.find((l) => l.kind === LimitKind.CREDITS_MICROS)?.source, LimitSource.TENANT);
  });

  test("GrantCredits adds a grant once per grant_id; a repeat is replayed, a repeat with another amount refused", async () => {
    const first = await t.policy.grantCredits({ tenant: "acme", amountMicros: 1000n, grantId: "inv-1", note: "invoice 1" }, { ...admin, "x-admission-actor": "jane" });
    assert.equal(first.replayed, false);
    assert.equal(first.grant?.actor, "admin:jane");
    assert.equal(first.grant?.amountMicros, 1000n);
    assert.equal(first.balance?.balanceMicros, 1000n);
    const again = await t.policy.grantCredits({ tenant: "acme", amountMicros: 1000n, grantId: "inv-1", note: "invoice 1" }, admin);
    assert.equal(again.replayed, true);
    assert.deepEqual(again.grant, first.grant);
    const other = await grpcCode(t.policy.grantCredits({ tenant: "acme", amountMicros: 5000n, grantId: "inv-1" }, admin));
    assert.equal(other.code, grpc.status.FAILED_PRECONDITION);
    assert.match(other.message, /already has grant_id "inv-1" for 1000 micro-USD, not 5000/);
    assert.deepEqual(await balance(), { granted: 1000n, spent: 0n, reserved: 0n, balance: 1000n, prepaid: true });
    const { grants } = await t.policy.listCreditGrants({ tenant: "acme" }, admin);
    assert.deepEqual(grants.map((g) => [g.grantId, g.amountMicros, g.note]), [["inv-1", 1000n, "invoice 1"]]);
  });

  test("Admit reserves the estimate against the balance in the atomic step; what does not fit is denied", async () => {
    const a = await t.admission.admit(admitOf("acme", 100, 200));
    assert.equal(a.allowed, true, a.message);
    assert.deepEqual([creditMeter(a)?.limit, creditMeter(a)?.used, creditMeter(a)?.remaining], [1000n, 500n, 500n]);
    reservations.a = a.reservationId;
    assert.deepEqual(await balance(), { granted: 1000n, spent: 0n, reserved: 500n, balance: 500n, prepaid: true });
    const b = await t.admission.admit(admitOf("acme", 100, 100)); // 300
    assert.equal(b.allowed, true, b.message);
    assert.match(b.warnings.join(";"), /CREDITS_MICROS acme at 80% \(800\/1000\)/);
    reservations.b = b.reservationId;
    const c = await t.admission.admit(admitOf("acme", 100, 50)); // 200: the balance to the last micro-USD
    assert.equal(c.allowed, true, c.message);
    assert.equal(creditMeter(c)?.remaining, 0n);
    reservations.c = c.reservationId;
    const d = await t.admission.admit(admitOf("acme", 0, 1, "m-base")); // 1
    assert.equal(d.reason, DenyReason.CREDITS_EXHAUSTED);
    assert.match(d.message, /balance 0 micro-USD of 1000 granted, this request's estimated cost is 1$/);
    assert.deepEqual([d.deniedMeter?.limit, d.deniedMeter?.used, d.deniedMeter?.remaining], [1000n, 1000n, 0n]);
    // The tenants overview and the explain show the same meter.
    const [status] = (await t.policy.listTenantStatus({ tenant: "acme" }, admin)).tenants;
    const shown = status?.nearest.find((m) => m.kind === LimitKind.CREDITS_MICROS);
    assert.deepEqual([shown?.limit, shown?.used, shown?.remaining], [1000n, 1000n, 0n]);
    const explained = (await t.admission.getEffectivePolicy({ tenant: "acme" }, admin)).limits.find((l) => l.kind === LimitKind.CREDITS_MICROS);
    assert.deepEqual([explained?.value, explained?.used, explained?.remaining], [1000n, 1000n, 0n]);
  });

  test("Settle spends the actual cost and releases the rest of the estimate", async () => {
    const a = await t.admission.settle({ reservationId: reservations.a!, inputTokens: 50n, outputTokens: 25n, model: "m-pro" });
    assert.equal(a.costMicros, 100n);
    assert.deepEqual(await balance(), { granted: 1000n, spent: 100n, reserved: 500n, balance: 400n, prepaid: true });
    await t.admission.settle({ reservationId: reservations.b!, inputTokens: 100n, outputTokens: 100n, model: "m-pro" }); // 300
    assert.deepEqual(await balance(), { granted: 1000n, spent: 400n, reserved: 200n, balance: 400n, prepaid: true });
  });

  test("a refund may not take the granted total below what is spent; one that leaves enough is a grant like any other", async () => {
    const refused = await grpcCode(t.policy.grantCredits({ tenant: "acme", amountMicros: -700n, grantId: "refund-1" }, admin));
    assert.equal(refused.code, grpc.status.FAILED_PRECONDITION);
    assert.match(refused.message, /taking back 700 micro-USD would leave 300 granted, below the 400 already spent; at most 600 can be taken back/);
    assert.equal((await t.policy.listCreditGrants({ tenant: "acme" }, admin)).grants.length, 1, "nothing written");
    const ok = await t.policy.grantCredits({ tenant: "acme", amountMicros: -400n, grantId: "refund-2", note: "correction" }, admin);
    assert.deepEqual([ok.balance?.grantedMicros, ok.balance?.spentMicros, ok.balance?.reservedMicros, ok.balance?.balanceMicros], [600n, 400n, 200n, 0n]);
    const topUp = await t.policy.grantCredits({ tenant: "acme", amountMicros: 1000n, grantId: "inv-2" }, admin);
    assert.equal(topUp.balance?.balanceMicros, 1000n);
    const { grants } = await t.policy.listCreditGrants({ tenant: "acme" }, admin);
    assert.deepEqual(grants.map((g) => g.grantId), ["inv-2", "refund-2", "inv-1"], "newest first");
    assert.deepEqual((await t.policy.listCreditGrants({ tenant: "acme", limit: 1 }, admin)).grants.map((g) => g.grantId), ["inv-2"]);
  });

  test("bad input is refused naming the field and changes nothing", async () => {
    const before = await balance();
    const cases: Array<[Record<string, unknown>, number, RegExp]> = [
      [{ tenant: "nobody", amountMicros: 10n, grantId: "x" }, grpc.status.NOT_FOUND, /tenant "nobody" not found/],
      [{ tenant: "", amountMicros: 10n, grantId: "x" }, grpc.status.INVALID_ARGUMENT, /tenant is required/],
      [{ tenant: "acme", amountMicros: 0n, grantId: "x" }, grpc.status.INVALID_ARGUMENT, /amount_micros must not be zero/],
      [{ tenant: "acme", amountMicros: 10n ** 16n, grantId: "x" }, grpc.status.INVALID_ARGUMENT, /amount_micros must be between/],
      [{ tenant: "acme", amountMicros: 10n, grantId: "" }, grpc.status.INVALID_ARGUMENT, /grant_id must be 1-128 printable ASCII/],
      [{ tenant: "acme", amountMicros: 10n, grantId: "g".repeat(129) }, grpc.status.INVALID_ARGUMENT, /grant_id must be 1-128/],
      [{ tenant: "acme", amountMicros: 10n, grantId: "with space" }, grpc.status.INVALID_ARGUMENT, /grant_id/],
      [{ tenant: "acme", amountMicros: 10n, grantId: "x", note: "n".repeat(257) }, grpc.status.INVALID_ARGUMENT, /note must be at most 256/],
    ];
    for (const [req, code, message] of cases) {
      const e = await grpcCode(t.policy.grantCredits(req, admin));
      assert.equal(e.code, code, JSON.stringify(req, (_, v) => (typeof v === "bigint" ? String(v) : v)));
      assert.match(e.message, message);
    }
    assert.equal((await grpcCode(t.policy.grantCredits({ tenant: "acme", amountMicros: 10n, grantId: "x" }))).code, grpc.status.UNAUTHENTICATED);
    assert.equal((await grpcCode(t.policy.getCreditBalance({ tenant: "acme" }))).code, grpc.status.UNAUTHENTICATED);
    assert.equal((await grpcCode(t.policy.getCreditBalance({ tenant: "nobody" }, admin))).code, grpc.status.NOT_FOUND);
    assert.equal((await grpcCode(t.policy.listCreditGrants({ tenant: "acme", limit: 1001 }, admin))).code, grpc.status.INVALID_ARGUMENT);
    assert.deepEqual(await balance(), before);
    assert.equal((await t.policy.listCreditGrants({ tenant: "acme" }, admin)).grants.length, 3);

    // Credits are derived from prepaid, never a bundle's limit, and never reset by hand.
    const bundle = creditsBundle();
    bundle.tenants[2]!.limits.push(parseProtoJson(BundleSchema, { tenants: [{ id: "x", limits: [{ kind: "CREDITS_MICROS", per: "TENANT", value: 5 }] }] }).tenants[0]!.limits[0]!);
    const applied = await grpcCode(t.policy.applyBundle({ bundle }, admin));
    assert.equal(applied.code, grpc.status.INVALID_ARGUMENT);
    assert.match(applied.message, /tenant "post".*limits\[0\]\.kind.*CREDITS_MICROS is not set in a bundle: it is derived from prepaid/);
    const reset = await grpcCode(t.policy.resetMeter({ tenant: "acme", kind: LimitKind.CREDITS_MICROS }, admin));
    assert.equal(reset.code, grpc.status.INVALID_ARGUMENT);
    assert.deepEqual(await balance(), before);
  });

  test("grants are audited with their actor; credits.granted and the 80 % / 100 % alerts are webhook events", async () => {
    await t.cp.audit.flush();
    const { events } = await t.policy.listAuditEvents({ tenant: "acme", kind: "admin.grant_credits" }, admin);
    assert.deepEqual(events.map((e) => e.actor).sort(), ["admin", "admin", "admin:jane"]);
    assert.ok(events.some((e) => /granted 1000 micro-USD of credits \(grant "inv-1": invoice 1\)/.test(e.message)));
    const { deliveries } = await t.policy.listWebhookDeliveries({ webhook: "ops", tenant: "acme", pageSize: 100 }, admin);
    const granted = deliveries.filter((d) => d.eventType === "credits.granted").map((d) => JSON.parse(d.dataJson));
    assert.deepEqual(granted.map((g) => [g.grantId, g.amountMicros]).sort(), [["inv-1", 1000], ["inv-2", 1000], ["refund-2", -400]]);
    const alerts = deliveries.filter((d) => d.eventType === "alert.threshold").map((d) => JSON.parse(d.dataJson));
    assert.deepEqual(alerts.filter((a) => a.meter.kind === "CREDITS_MICROS").map((a) => [a.threshold, a.used, a.limit]).sort(), [[0.8, 800, 1000], [1, 1000, 1000]]);
  });

  test("GetCreditBalance over Connect JSON on the HTTP port", async () => {
    const res = await fetch(`http://127.0.0.1:${t.cp.httpPort}/admission.v1.PolicyService/GetCreditBalance`, {
      method: "POST", headers: { ...admin, "content-type": "application/json" }, body: JSON.stringify({ tenant: "acme" }),
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { tenant: "acme", balanceMicros: "1000", reservedMicros: "200", grantedMicros: "1600", spentMicros: "400", prepaid: true });
  });

  test("after a restart (counters lost, rebuilt from grants and ledger) the balance holds; a lease from before settles once", async () => {
    await t.stop();
    t = await startTestControlPlane({ dataDir });
    // The open reservation lived in the lost in-memory counters: only spent and granted remain.
    assert.deepEqual(await balance(), { granted: 1600n, spent: 400n, reserved: 0n, balance: 1200n, prepaid: true });
    const c = await t.admission.settle({ reservationId: reservations.c!, inputTokens: 100n, outputTokens: 50n, model: "m-pro" }); // 200
    assert.equal(c.duplicate, false);
    assert.deepEqual(await balance(), { granted: 1600n, spent: 600n, reserved: 0n, balance: 1000n, prepaid: true });
    const again = await t.admission.settle({ reservationId: reservations.c!, inputTokens: 100n, outputTokens: 50n, model: "m-pro" });
    assert.equal(again.duplicate, true);
    assert.deepEqual(await balance(), { granted: 1600n, spent: 600n, reserved: 0n, balance: 1000n, prepaid: true });
    const d = await t.admission.admit(admitOf("acme", 100, 200));
    assert.deepEqual([creditMeter(d)?.limit, creditMeter(d)?.used, creditMeter(d)?.remaining], [1600n, 1100n, 500n]);
    await t.admission.settle({ reservationId: d.reservationId, inputTokens: 0n, outputTokens: 0n, model: "m-pro" });
  });
});

describe("a grant meeting counter-store faults is applied exactly once", () => {
  const counters = new LosableCounterStore();
  const charge = counters.charge;
  let fault: "lose" | "down" | undefined;
  let t: TestControlPlane;
  const balanceOf = async () => {
    const b = await t.policy.getCreditBalance({ tenant: "acme" }, admin);
    return [b.grantedMicros, b.balanceMicros];
  };

  before(async () => {
    // A grant's charge to the current generation meets the fault once.
    counters.charge = async (tenant, charges, generation) => {
      const now = fault;
      fault = undefined;
      if (now === "down") throw new CounterStoreUnavailableError("counter store down (test)");
      if (now === "lose") counters.lose();
      return charge(tenant, charges, generation);
    };
    t = await startTestControlPlane({ deps: { counters } });
    await t.policy.applyBundle({ bundle: creditsBundle() }, admin);
    await t.policy.grantCredits({ tenant: "acme", amountMicros: 1_000n, grantId: "g1" }, admin);
  });

  after(() => t?.close());

  test("the counters lost between reading the generation and charging it: the rebuild counts the grant, the charge does not", async () => {
    fault = "lose";
    const g2 = await t.policy.grantCredits({ tenant: "acme", amountMicros: 500n, grantId: "g2" }, admin);
    assert.equal(fault, undefined, "the fault was met");
    assert.equal(g2.balance?.balanceMicros, 1_500n);
    const d = await t.admission.admit(admitOf("acme", 1_498, 1)); // exactly 1,500
    assert.equal(d.allowed, true, d.message);
    assert.equal((await t.admission.admit(admitOf("acme", 0, 1, "m-base"))).reason, DenyReason.CREDITS_EXHAUSTED);
    await t.admission.settle({ reservationId: d.reservationId, inputTokens: 0n, outputTokens: 0n, model: "m-pro" });
    assert.deepEqual(await balanceOf(), [1_500n, 1_500n]);
  });

  test("the counter store down when the grant is applied: UNAVAILABLE, recorded, applied once the store answers; the repeat adds nothing", async () => {
    fault = "down";
    const e = await grpcCode(t.policy.grantCredits({ tenant: "acme", amountMicros: 250n, grantId: "g3" }, admin));
    assert.equal(e.code, grpc.status.UNAVAILABLE);
    assert.match(e.message, /grant "g3" is recorded, but the counter store is unavailable/);
    // Retried in the background (1 s): wait for the balance, not a time.
    for (let i = 0; (await balanceOf())[1] !== 1_750n; i++) {
      if (i > 200) assert.fail(`never applied: ${await balanceOf()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    const again = await t.policy.grantCredits({ tenant: "acme", amountMicros: 250n, grantId: "g3" }, admin);
    assert.equal(again.replayed, true);
    assert.deepEqual(await balanceOf(), [1_750n, 1_750n]);
    const d = await t.admission.admit(admitOf("acme", 1_748, 1)); // exactly 1,750
    assert.equal(d.allowed, true, d.message);
    assert.equal((await t.admission.admit(admitOf("acme", 0, 1, "m-base"))).reason, DenyReason.CREDITS_EXHAUSTED);
    await t.admission.settle({ reservationId: d.reservationId, inputTokens: 0n, outputTokens: 0n, model: "m-pro" });
  });
});

const skipShared = missingService("PostgreSQL", "DATABASE_URL") || missingService("Redis", "REDIS_URL");

describe("two control planes on one Redis and one PostgreSQL racing on one balance", { skip: skipShared }, () => {
  const prefix = `admcred-${randomBytes(4).toString("hex")}`;
  let db: { url: string; drop(): Promise<void> };
  let redis: Redis;
  let replicas: TestControlPlane[] = [];

  before(async () => {
    db = await scratchDatabase();
    redis = new Redis(process.env.REDIS_URL!);
    const config = { databaseUrl: db.url, redisUrl: process.env.REDIS_URL!, redisKeyPrefix: prefix };
    replicas = [await startTestControlPlane({ config }), await startTestControlPlane({ config })];
    await replicas[0]!.policy.applyBundle({ bundle: creditsBundle() }, admin);
    // The second replica sees the bundle by LISTEN/NOTIFY: wait for its version, not a time.
    const { version } = await replicas[0]!.policy.exportBundle({}, admin);
    for (let i = 0; (await replicas[1]!.policy.exportBundle({}, admin)).version < version; i++) {
      if (i > 400) throw new Error("the bundle never reached the second replica");
      await new Promise((r) => setTimeout(r, 25));
    }
  });

  after(async () => {
    await Promise.all(replicas.map((r) => r.close()));
    if (redis) {
      await deleteKeysWithPrefix(redis, prefix);
      await redis.quit();
    }
    await db?.drop();
  });

  test("concurrent Admits over both replicas admit exactly what the balance holds; a grant on either replica counts on both", async () => {
    const [r0, r1] = replicas as [TestControlPlane, TestControlPlane];
    const wave = (n: number) => Promise.all(Array.from({ length: n }, (_, i) => (i % 2 === 0 ? r0 : r1).admission.admit(admitOf("acme", 100, 200)))); // 500 each
    await r0.policy.grantCredits({ tenant: "acme", amountMicros: 10_000n, grantId: "race-1" }, admin);
    const first = await wave(300);
    assert.equal(first.filter((d) => d.allowed).length, 20, "10,000 / 500");
    assert.ok(first.filter((d) => !d.allowed).every((d) => d.reason === DenyReason.CREDITS_EXHAUSTED));
    await r1.policy.grantCredits({ tenant: "acme", amountMicros: 5_000n, grantId: "race-2" }, admin);
    const second = await wave(300);
    assert.equal(second.filter((d) => d.allowed).length, 10, "5,000 more / 500");
    const allowed = [...first, ...second].filter((d) => d.allowed);
    const b = await r0.policy.getCreditBalance({ tenant: "acme" }, admin);
    assert.deepEqual([b.grantedMicros, b.spentMicros, b.reservedMicros, b.balanceMicros], [15_000n, 0n, 15_000n, 0n]);
    assert.equal((await r0.admission.admit(admitOf("acme", 0, 1, "m-base"))).reason, DenyReason.CREDITS_EXHAUSTED);
    // Settled at 200 each, half on the other replica than admitted them: each releases 300.
    await Promise.all(allowed.map((d, i) => (i % 2 === 0 ? r1 : r0).admission.settle({ reservationId: d.reservationId, inputTokens: 100n, outputTokens: 50n, model: "m-pro" })));
    const settled = await r1.policy.getCreditBalance({ tenant: "acme" }, admin);
    assert.deepEqual([settled.spentMicros, settled.reservedMicros, settled.balanceMicros], [6_000n, 0n, 9_000n]);
    const usage = await r0.policy.getUsage({ tenant: "acme" }, admin);
    assert.equal(usage.costMicros, settled.spentMicros, "spent is the ledger's cost");
  });

  test("Redis flushed: the balance is rebuilt from the grants and the ledger on either replica", async () => {
    const [r0, r1] = replicas as [TestControlPlane, TestControlPlane];
    const before = await r0.policy.getCreditBalance({ tenant: "acme" }, admin);
    await deleteKeysWithPrefix(redis, prefix);
    const after = await r1.policy.getCreditBalance({ tenant: "acme" }, admin);
    assert.deepEqual(after, before);
    // The rebuilt meter enforces: exactly the balance fits, not a micro-USD more.
    const exact = await r0.admission.admit(admitOf("acme", Number(after.balanceMicros) - 2, 1));
    assert.equal(exact.allowed, true, exact.message);
    assert.equal((await r1.admission.admit(admitOf("acme", 0, 1, "m-base"))).reason, DenyReason.CREDITS_EXHAUSTED);
    await r1.admission.settle({ reservationId: exact.reservationId, inputTokens: 0n, outputTokens: 0n, model: "m-pro" });
  });
});

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import { DenyReason, type AdmitResponse } from "../gen/admission/v1/admission_pb.js";
import { BundleSchema, LimitAlgorithm, LimitKind, Per, Window } from "../gen/admission/v1/policy_pb.js";
import { rateLimitHeaders } from "../control-plane/rate-limit-headers.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { scratchDatabase } from "./support/databases.js";
import { deleteKeysWithPrefix } from "./support/redis-keys.js";
import { startReplica, type Replica } from "./support/replicas.js";
import { scenario, secretOf } from "./support/scenario.js";
import { missingService } from "./support/services.js";

const bucket = (value: number, burst: number, extra: Record<string, unknown> = {}) => ({
  kind: "REQUESTS", window: "MINUTE", per: "TENANT", value, algorithm: "LIMIT_ALGORITHM_TOKEN_BUCKET", burst, ...extra,
});

describe("token buckets over gRPC (one control plane, its clock injected)", () => {
  let t: TestControlPlane;
  // 100 ms before a minute boundary.
  let now = Date.UTC(2026, 10, 23, 12, 0, 59, 900);
  const admit = (keyId: string, extra: Record<string, unknown> = {}) =>
    t.admission.admit({ credential: secretOf(keyId), task: "DRAFT", model: "m-base", inputTokens: 10n, maxOutputTokens: 10n, ...extra });
  const admitted = async (keyId: string, n: number) => (await Promise.all(Array.from({ length: n }, () => admit(keyId)))).filter((d) => d.allowed).length;

  before(async () => {
    t = await startTestControlPlane({ deps: { clock: () => now } });
    await t.policy.applyBundle({
      bundle: scenario(
        { id: "window", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 10 }], keys: [{ id: "k-window" }] },
        // Burst 0: the limit's value.
        { id: "bucket", limits: [bucket(10, 0)], keys: [{ id: "k-bucket" }] },
        { id: "tokens", limits: [{ ...bucket(1000, 1000), kind: "TOKENS", window: "SECOND" }], keys: [{ id: "k-tokens" }] },
        { id: "reset", limits: [bucket(10, 0)], keys: [{ id: "k-reset" }] },
      ),
    }, admin);
  });
  after(() => t.close());

  test("no boundary burst: a fixed window admits twice its limit across a minute boundary, the bucket does not", async () => {
    assert.equal(await admitted("k-window", 15), 10);
    assert.equal(await admitted("k-bucket", 15), 10);
    now += 100; // the next minute
    assert.equal(await admitted("k-window", 15), 10, "the fixed window starts over: 20 in 100 ms");
    const denied = await admit("k-bucket");
    assert.equal(denied.allowed, false);
    assert.equal(denied.reason, DenyReason.RATE_LIMITED);
    assert.equal(denied.httpStatus, 429);
    // Ten taken at :59.900 (one every 6 s): the next fits 6 s after the first, 5.9 s from now.
    assert.equal(denied.retryAfterMs, 5900n);
    assert.match(denied.message, /REQUESTS\/MINUTE of bucket: 0 left in the token bucket of 10 refilling 10 per MINUTE, this request needs 1/);
    const m = denied.deniedMeter!;
    assert.deepEqual([m.algorithm, m.burst, m.limit, m.used, m.remaining, m.resetMs], [LimitAlgorithm.TOKEN_BUCKET, 10n, 10n, 10n, 0n, 59_900n]);
    assert.deepEqual(pick(rateLimitHeaders(denied)), {
      "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "59.900s", "retry-after": "6",
    }, "remaining: whole tokens in the bucket; reset: until it is full; retry-after: until the request fits");
    const simulated = (await t.policy.simulateAdmit({ keyId: "k-bucket", task: "DRAFT", model: "m-base", inputTokens: 10n, maxOutputTokens: 10n }, admin)).decision!;
    assert.deepEqual([simulated.allowed, simulated.retryAfterMs], [false, 5900n], "SimulateAdmit answers as Admit would");

    now += 5899;
    assert.equal((await admit("k-bucket")).allowed, false, "1 ms before retry-after");
    now += 1;
    const refilled = await admit("k-bucket");
    assert.equal(refilled.allowed, true, "at retry-after");
    assert.equal(await admitted("k-bucket", 5), 0, "one token refilled, one taken");

    now += 120_000;
    const full = await admit("k-bucket");
    assert.deepEqual(pick(rateLimitHeaders(full)), { "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "9", "x-ratelimit-reset-requests": "6.000s" });
    const explained = await t.admission.getEffectivePolicy({ tenant: "bucket" }, admin);
    const limit = explained.limits.find((l) => l.kind === LimitKind.REQUESTS)!;
    assert.deepEqual([limit.algorithm, limit.burst, limit.value, limit.used, limit.remaining, limit.resetMs], [LimitAlgorithm.TOKEN_BUCKET, 10n, 10n, 1n, 9n, 6000n]);
    const replay = await admit("k-bucket", { requestId: "bucket-replay" });
    const again = await admit("k-bucket", { requestId: "bucket-replay" });
    assert.equal(again.replayed, true);
    assert.equal(again.meters.find((x) => x.kind === LimitKind.REQUESTS)!.remaining, replay.meters.find((x) => x.kind === LimitKind.REQUESTS)!.remaining, "a replay shows the bucket as it is");
  });

  test("tokens: a settle beyond the reservation is debt that delays the next admit, one below it refunds", async () => {
    // 1,000 tokens a second, 1,000 at once; an admit reserves 10 + 10.
    const first = await admit("k-tokens");
    assert.equal(first.allowed, true);
    await t.admission.settle({ reservationId: first.reservationId, inputTokens: 10n, outputTokens: 990n, model: "m-base" });
    const denied = await admit("k-tokens");
    assert.equal(denied.allowed, false, "1,000 tokens used: the bucket is empty");
    assert.equal(denied.reason, DenyReason.RATE_LIMITED);
    assert.equal(denied.retryAfterMs, 20n, "20 tokens refill in 20 ms");
    now += 20;
    const second = await admit("k-tokens");
    assert.equal(second.allowed, true);
    await t.admission.settle({ reservationId: second.reservationId, inputTokens: 0n, outputTokens: 0n, model: "m-base" });
    const meter = (d: AdmitResponse) => d.meters.find((x) => x.kind === LimitKind.TOKENS && x.burst > 0n)!;
    const third = await admit("k-tokens");
    assert.equal(meter(third).remaining, 0n, "the 20 reserved came back and were taken again");
    now += 1000;
    assert.equal(meter(await admit("k-tokens")).remaining, 980n, "full again a second later, less the 20 just taken");
  });

  test("ResetMeter refills a bucket and reports what it lacked", async () => {
    assert.equal(await admitted("k-reset", 4), 4);
    const reset = await t.policy.resetMeter({ tenant: "reset", kind: LimitKind.REQUESTS, window: Window.MINUTE, per: Per.TENANT }, admin);
    assert.equal(reset.previousUsed, 4n);
    const d = await admit("k-reset");
    assert.equal(d.meters.find((m) => m.kind === LimitKind.REQUESTS && m.burst > 0n)!.remaining, 9n, "full again, one taken");
  });

  test("bad bucket limits are refused as a whole, naming the entity and field, and change nothing", async () => {
    const before = await t.policy.exportBundle({}, admin);
    const cases: Array<[unknown, RegExp]> = [
      [bucket(10, -1), /tenant "bad": field limits\[0\]\.burst: -1 is out of range \(0 means the value/],
      [{ kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 10, burst: 5 }, /tenant "bad": field limits\[0\]\.burst: is for TOKEN_BUCKET limits only/],
      [bucket(10, 0, { window: "DAY" }), /tenant "bad": field limits\[0\]\.algorithm: TOKEN_BUCKET needs a window of SECOND, MINUTE or HOUR, not DAY \(DAY and MONTH stay fixed calendar windows\)/],
      [bucket(10, 0, { window: "MONTH", kind: "TOKENS" }), /field limits\[0\]\.algorithm: TOKEN_BUCKET needs a window of SECOND, MINUTE or HOUR, not MONTH/],
      [bucket(10, 0, { kind: "BUDGET_MICROS" }), /tenant "bad": field limits\[0\]\.algorithm: TOKEN_BUCKET is for REQUESTS and TOKENS limits, not BUDGET_MICROS \(a budget stays a fixed calendar window\)/],
      [bucket(10, 0, { kind: "CONCURRENCY", window: "WINDOW_UNSPECIFIED" }), /field limits\[0\]\.algorithm: TOKEN_BUCKET is for REQUESTS and TOKENS limits, not CONCURRENCY/],
      [bucket(10, 0, { algorithm: 7 }), /tenant "bad": field limits\[0\]\.algorithm: unknown value 7/],
    ];
    for (const [limit, message] of cases) {
      const bad = scenario({ id: "bad", limits: [limit] });
      await assert.rejects(t.policy.applyBundle({ bundle: create(BundleSchema, { tenants: bad.tenants }) }, admin), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
        assert.match(err.details, message);
        return true;
      });
    }
    const plan = scenario({ id: "bad", limits: [bucket(10, 0, { window: "HOUR" })] });
    plan.plans[0]!.limits.push(plan.tenants[0]!.limits[0]!, { ...plan.tenants[0]!.limits[0]!, kind: LimitKind.TOKENS, window: 4 });
    await assert.rejects(t.policy.applyBundle({ bundle: plan }, admin), /plan "PRO": field limits\[4\]\.algorithm: TOKEN_BUCKET needs a window/);
    assert.equal((await t.policy.exportBundle({}, admin)).version, before.version);
  });
});

function pick(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => name.endsWith("-requests") || name === "retry-after"));
}

const skip = missingService("PostgreSQL", "DATABASE_URL") || missingService("Redis", "REDIS_URL");

describe("two control-plane processes on one Redis and PostgreSQL racing on one bucket", { skip }, () => {
  const prefix = `admbucket-${randomBytes(4).toString("hex")}`;
  let replicas: Replica[] = [];
  let db: { url: string; drop(): Promise<void> };
  let redis: Redis;
  // 40 a second (one every 25 ms), 10 at once.
  const rate = 40 / 1000;
  const burst = 10;

  before(async () => {
    db = await scratchDatabase();
    redis = new Redis(process.env.REDIS_URL!);
    replicas = await Promise.all([0, 1].map(() => startReplica({ DATABASE_URL: db.url, REDIS_URL: process.env.REDIS_URL!, ADMISSION_REDIS_PREFIX: prefix })));
  });

  after(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await deleteKeysWithPrefix(redis, prefix);
    await redis.quit();
    await db?.drop();
  });

  test("over every interval, admitted <= burst + rate x its length + 1", async () => {
    const { version } = await replicas[0]!.policy.applyBundle({
      bundle: scenario({ id: "race", limits: [{ ...bucket(40, burst), window: "SECOND" }], keys: [{ id: "rk" }] }),
    }, admin);
    for (const r of replicas) {
      const deadline = Date.now() + 30_000;
      while ((await r.policy.exportBundle({}, admin)).version < version) {
        if (Date.now() > deadline) throw new Error("the bundle did not reach every replica");
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    }
    // Each call's admission happened (by Redis's clock, which both replicas use) between its send and its answer.
    const calls: Array<{ sentMs: number; answeredMs: number; d: AdmitResponse }> = [];
    const until = performance.now() + 1_200;
    await Promise.all(Array.from({ length: 8 }, async (_, worker) => {
      const r = replicas[worker % 2]!;
      while (performance.now() < until) {
        const sentMs = performance.now();
        const d = await r.admission.admit({ credential: secretOf("rk"), task: "DRAFT", model: "m-base", inputTokens: 1n, maxOutputTokens: 1n });
        calls.push({ sentMs, answeredMs: performance.now(), d });
      }
    }));
    const admittedCalls = calls.filter((c) => c.d.allowed);
    const denied = calls.filter((c) => !c.d.allowed);
    assert.ok(admittedCalls.length >= burst, `a full bucket admits its burst first (admitted ${admittedCalls.length})`);
    assert.ok(denied.length > 0, "the race went beyond the bucket");
    assert.ok(denied.every((c) => c.d.reason === DenyReason.RATE_LIMITED && c.d.retryAfterMs > 0n && c.d.retryAfterMs <= 25n), "denied with the time until a token refills");
    // Every interval from one call's send to another's answer holds the calls sent and answered within it.
    for (const from of admittedCalls) {
      for (const to of admittedCalls) {
        if (to.answeredMs < from.sentMs) continue;
        const inside = admittedCalls.filter((c) => c.sentMs >= from.sentMs && c.answeredMs <= to.answeredMs).length;
        const bound = burst + rate * (to.answeredMs - from.sentMs) + 1;
        assert.ok(inside <= bound, `${inside} admitted within ${(to.answeredMs - from.sentMs).toFixed(1)} ms: more than ${bound.toFixed(1)}`);
      }
    }
    await Promise.all(admittedCalls.map((c, i) => replicas[i % 2]!.admission.settle({ reservationId: c.d.reservationId, inputTokens: 1n, outputTokens: 1n })));
  });
});

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as jose from "jose";
import { create } from "@bufbuild/protobuf";
import { DenyReason, Outcome } from "../gen/admission/v1/admission_pb.js";
import { BundleSchema, LimitKind, LimitSource, Window } from "../gen/admission/v1/policy_pb.js";
import { ChangeAction } from "../gen/admission/v1/policy_service_pb.js";
import { grpcCode } from "./support/grpc-clients.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { scenario, secretOf } from "./support/scenario.js";

const jwtSecret = "control-plane-test-hs256-secret-0123456789";

const admit = (t: TestControlPlane, keyId: string, extra: Record<string, unknown> = {}) =>
  t.admission.admit({ credential: secretOf(keyId), task: "DRAFT", inputTokens: 100n, maxOutputTokens: 50n, ...extra });

describe("control plane over gRPC", () => {
  let t: TestControlPlane;
  let now = Date.UTC(2026, 10, 23, 12, 0, 0);

  before(async () => {
    t = await startTestControlPlane({ deps: { clock: () => now }, config: { jwt: { algorithms: ["HS256"], hs256Secret: jwtSecret, clockToleranceSec: 0 } } });
    await t.policy.applyBundle({
      bundle: scenario(
        { id: "acme", users: [{ id: "alice" }, { id: "sam", status: "SUSPENDED" }], keys: [{ id: "k-alice", user: "alice" }, { id: "k-sam", user: "sam" }, { id: "k-scoped", user: "alice", tasks: ["PRIOR"] }, { id: "k-revoked", revoked: true }] },
        { id: "globex", keys: [{ id: "k-globex" }] },
        { id: "suspended", status: "SUSPENDED", keys: [{ id: "k-suspended" }] },
        { id: "revoked-ati", atiToken: "ati-revoked", keys: [{ id: "k-revoked-ati" }] },
        { id: "expired-ati", atiToken: "ati-expired", keys: [{ id: "k-expired-ati" }] },
        { id: "rate", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "KEY", value: 2 }], keys: [{ id: "k-rate" }] },
        { id: "conc", limits: [{ kind: "CONCURRENCY", per: "TENANT", value: 1 }], keys: [{ id: "k-conc" }] },
        { id: "quota", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 300 }], keys: [{ id: "k-quota" }] },
        { id: "budget", limits: [{ kind: "BUDGET_MICROS", window: "DAY", per: "TENANT", value: 150 }], keys: [{ id: "k-budget" }] },
        { id: "blocked", limits: [{ kind: "REQUESTS", window: "DAY", per: "TENANT", value: 0 }], keys: [{ id: "k-blocked" }] },
        { id: "soft", mode: "SOFT", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 1 }], keys: [{ id: "k-soft" }] },
        { id: "shadow", mode: "SHADOW", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 1 }], keys: [{ id: "k-shadow" }] },
      ),
    }, admin);
  });
  after(() => t.close());

  test("ApplyBundle dry run returns the diff and changes nothing", async () => {
    const before = await t.policy.exportBundle({}, admin);
    const change = scenario({ id: "acme", limits: [{ kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 99 }] }, { id: "newco" });
    const dry = await t.policy.applyBundle({ bundle: create(BundleSchema, { tenants: change.tenants }), dryRun: true }, admin);
    assert.equal(dry.applied, false);
    const byId = Object.fromEntries(dry.changes.map((c) => [c.id, c]));
    assert.equal(byId.acme!.action, ChangeAction.UPDATE);
    assert.deepEqual(byId.acme!.fields, ["limits"]);
    assert.equal(byId.newco!.action, ChangeAction.CREATE);
    const afterwards = await t.policy.exportBundle({}, admin);
    assert.equal(afterwards.version, before.version);
    assert.equal(afterwards.bundle!.tenants.find((x) => x.id === "newco"), undefined);
    assert.ok(afterwards.bundle!.apiKeys.every((k) => k.secret === "" && /^[0-9a-f]{64}$/.test(k.secretSha256)), "exports carry hashes, never secrets");
  });

  test("an invalid bundle is rejected with a message naming the entity and field, and changes nothing", async () => {
    const before = await t.policy.exportBundle({}, admin);
    const bad = scenario({ id: "acme", atiToken: "no-such-token" });
    await assert.rejects(t.policy.applyBundle({ bundle: create(BundleSchema, { tenants: bad.tenants }) }, admin), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, /tenant "acme": field ati_token: unknown ATI token "no-such-token"/);
      return true;
    });
    assert.equal((await t.policy.exportBundle({}, admin)).version, before.version);
  });

  test("an allowed decision: routes, clamped output, meters, lease", async () => {
    const d = await admit(t, "k-alice", { maxOutputTokens: 100_000n, model: "m-pro" });
    assert.equal(d.allowed, true);
    assert.equal(d.httpStatus, 200);
    assert.equal(d.maxOutputTokens, 2000n, "clamped to the plan's OUTPUT_TOKENS cap");
    assert.deepEqual(d.routes.map((r) => `${r.provider}/${r.model}`), ["p1/m-pro", "p2/m-pro-2"]);
    assert.equal(d.reservedCostMicros, 100n * 1n + 2000n * 2n);
    const month = d.meters.find((m) => m.kind === LimitKind.TOKENS && m.window === Window.MONTH)!;
    assert.equal(month.used, 2100n);
    assert.equal(month.remaining, 10_000_000n - 2100n);
    assert.ok(d.reservationId.length > 20 && d.leaseExpiresAt);
    await t.admission.settle({ reservationId: d.reservationId, inputTokens: 100n, outputTokens: 10n });
  });

  test("a policy change applies to the next Admit of a subject already decided, by API key or JWT (decision plans are per snapshot)", async () => {
    const token = await new jose.SignJWT({ tenant_id: "globex" }).setProtectedHeader({ alg: "HS256" }).setSubject("gina")
      .setExpirationTime(Math.floor(now / 1000) + 3600).sign(new TextEncoder().encode(jwtSecret));
    const byJwt = (extra: Record<string, unknown> = {}) => t.admission.admit({ credential: token, task: "DRAFT", inputTokens: 100n, maxOutputTokens: 50n, ...extra });
    assert.equal((await admit(t, "k-globex")).allowed, true);
    assert.equal((await byJwt()).allowed, true);
    const capped = scenario({ id: "globex", limits: [{ kind: "INPUT_TOKENS", window: "REQUEST", value: 10 }], keys: [{ id: "k-globex" }] });
    await t.policy.applyBundle({ bundle: capped }, admin);
    for (const denied of [await admit(t, "k-globex"), await byJwt()]) assert.equal(DenyReason[denied.reason], DenyReason[DenyReason.REQUEST_TOO_LARGE], denied.message);
    await t.policy.applyBundle({ bundle: scenario({ id: "globex", keys: [{ id: "k-globex" }] }) }, admin);
    assert.equal((await admit(t, "k-globex")).allowed, true, "and lifting it too");
    assert.equal((await byJwt()).allowed, true);
  });

  test("every deny reason has its HTTP status", async () => {
    const cases: Array<[string, Record<string, unknown>, DenyReason, number]> = [
      ["k-nope", {}, DenyReason.UNAUTHENTICATED, 401],
      ["k-revoked", {}, DenyReason.UNAUTHENTICATED, 401],
      ["k-suspended", {}, DenyReason.TENANT_INACTIVE, 403],
      ["k-sam", {}, DenyReason.TENANT_INACTIVE, 403],
      ["k-revoked-ati", {}, DenyReason.TOKEN_INACTIVE, 403],
      ["k-expired-ati", {}, DenyReason.TOKEN_INACTIVE, 403],
      ["k-alice", { task: "DIAGRAM" }, DenyReason.FEATURE_NOT_IN_PLAN, 403],
      ["k-scoped", { task: "DRAFT" }, DenyReason.FEATURE_NOT_IN_PLAN, 403],
      ["k-alice", { model: "m-adv" }, DenyReason.MODEL_NOT_ALLOWED, 403],
      ["k-alice", { model: "gpt-9" }, DenyReason.MODEL_NOT_ALLOWED, 403],
      ["k-alice", { task: "NOPE" }, DenyReason.TASK_UNKNOWN, 403],
      ["k-alice", { inputTokens: 60_000n }, DenyReason.REQUEST_TOO_LARGE, 413],
      ["k-blocked", {}, DenyReason.QUOTA_EXCEEDED, 402],
    ];
    for (const [key, extra, reason, status] of cases) {
      const d = await admit(t, key, extra);
      assert.equal(d.allowed, false, `${key} ${JSON.stringify(extra, (_k, v) => (typeof v === "bigint" ? String(v) : v))}`);
      assert.equal(DenyReason[d.reason], DenyReason[reason], `${key}: ${d.message}`);
      assert.equal(d.httpStatus, status);
      assert.ok(d.message.length > 0);
      assert.equal(d.reservationId, "", "a denial reserves nothing");
    }

    // RATE_LIMITED: 2 per minute per key, Retry-After until the minute ends.
    await admit(t, "k-rate");
    await admit(t, "k-rate");
    const rate = await admit(t, "k-rate");
    assert.equal(rate.reason, DenyReason.RATE_LIMITED);
    assert.equal(rate.httpStatus, 429);
    assert.equal(rate.retryAfterMs, BigInt(60_000 - (now % 60_000)));
    assert.equal(rate.deniedMeter?.kind, LimitKind.REQUESTS);
    assert.equal(rate.deniedMeter?.used, 2n);

    // CONCURRENCY_LIMITED until the first request settles.
    const first = await admit(t, "k-conc");
    assert.equal(first.allowed, true);
    const second = await admit(t, "k-conc");
    assert.equal(second.reason, DenyReason.CONCURRENCY_LIMITED);
    assert.equal(second.httpStatus, 429);
    await t.admission.settle({ reservationId: first.reservationId, inputTokens: 1n, outputTokens: 1n });
    assert.equal((await admit(t, "k-conc")).allowed, true);

    // QUOTA_EXCEEDED: 300 tokens a month; 100 in + 50 out reserved each time.
    assert.equal((await admit(t, "k-quota")).allowed, true);
    assert.equal((await admit(t, "k-quota")).allowed, true);
    const quota = await admit(t, "k-quota");
    assert.equal(quota.reason, DenyReason.QUOTA_EXCEEDED);
    assert.equal(quota.httpStatus, 402);
    assert.equal(quota.retryAfterMs, BigInt(Date.UTC(2026, 11, 1) - now), "retry after the month resets");

    // BUDGET_EXCEEDED: 150 micro-USD a day; m-pro costs 100*1 + 50*2 = 200.
    const budget = await admit(t, "k-budget");
    assert.equal(budget.reason, DenyReason.BUDGET_EXCEEDED);
    assert.equal(budget.httpStatus, 402);
    assert.match(budget.message, /more than the whole limit/);

    // INVALID_REQUEST is an INVALID_ARGUMENT status on gRPC.
    assert.equal(await grpcCode(admit(t, "k-alice", { inputTokens: -5n })), grpc.status.INVALID_ARGUMENT);
  });

  test("SOFT allows with a warning; SHADOW allows silently and counts the would-be denial", async () => {
    await admit(t, "k-soft");
    const soft = await admit(t, "k-soft");
    assert.equal(soft.allowed, true);
    assert.ok(soft.warnings.some((w) => w.startsWith("soft limit exceeded")), soft.warnings.join("; "));
    await admit(t, "k-shadow");
    const shadow = await admit(t, "k-shadow");
    assert.equal(shadow.allowed, true);
    assert.ok(!shadow.warnings.some((w) => w.startsWith("soft limit")));
    const metrics = await t.cp.metrics.registry.getSingleMetricAsString("admission_would_deny_total");
    assert.match(metrics, /mode="shadow",kind="REQUESTS"} [1-9]/);
    assert.match(metrics, /mode="soft",kind="REQUESTS"} [1-9]/);
  });

  test("settle is exactly once; a repeated settle returns the first result", async () => {
    const d = await admit(t, "k-alice");
    const first = await t.admission.settle({ reservationId: d.reservationId, inputTokens: 120n, outputTokens: 80n, model: "m-pro", outcome: Outcome.SUCCESS, latencyMs: 42n });
    assert.equal(first.duplicate, false);
    assert.equal(first.costMicros, 120n + 160n);
    const again = await t.admission.settle({ reservationId: d.reservationId, inputTokens: 999n, outputTokens: 999n });
    assert.equal(again.duplicate, true);
    assert.deepEqual([again.inputTokens, again.outputTokens, again.costMicros], [120n, 80n, 280n]);
    const concurrent = await Promise.all(Array.from({ length: 20 }, () => t.admission.settle({ reservationId: d.reservationId, inputTokens: 1n, outputTokens: 1n })));
    assert.ok(concurrent.every((r) => r.duplicate && r.inputTokens === 120n));
  });

  test("settle and renew refuse unknown and foreign reservations", async () => {
    assert.equal(await grpcCode(t.admission.settle({ reservationId: "r1.forged.payload" })), grpc.status.NOT_FOUND);
    assert.equal(await grpcCode(t.admission.settle({ reservationId: "" })), grpc.status.INVALID_ARGUMENT);
    const d = await admit(t, "k-alice");
    const tampered = d.reservationId.replace(/.$/, (c) => (c === "A" ? "B" : "A"));
    assert.equal(await grpcCode(t.admission.settle({ reservationId: tampered })), grpc.status.NOT_FOUND);
    assert.equal(await grpcCode(t.admission.settle({ reservationId: d.reservationId, credential: secretOf("k-globex") })), grpc.status.PERMISSION_DENIED);
    assert.equal(await grpcCode(t.admission.renew({ reservationId: d.reservationId, credential: secretOf("k-globex") })), grpc.status.PERMISSION_DENIED);
    assert.equal(await grpcCode(t.admission.settle({ reservationId: d.reservationId, inputTokens: -1n })), grpc.status.INVALID_ARGUMENT);
    assert.equal(await grpcCode(t.admission.settle({ reservationId: d.reservationId, outputTokens: 2n ** 60n })), grpc.status.INVALID_ARGUMENT);
    assert.equal(await grpcCode(t.admission.settle({ reservationId: d.reservationId, outcome: Outcome.EXPIRED })), grpc.status.INVALID_ARGUMENT);
    const renewed = await t.admission.renew({ reservationId: d.reservationId, ttlMs: 600_000n, credential: secretOf("k-alice") });
    assert.ok(renewed.leaseExpiresAt);
    const settled = await t.admission.settle({ reservationId: d.reservationId, inputTokens: 1n, outputTokens: 1n, credential: secretOf("k-alice") });
    assert.equal(settled.duplicate, false, "the earlier refusals changed nothing");
    assert.equal(await grpcCode(t.admission.renew({ reservationId: d.reservationId })), grpc.status.NOT_FOUND, "a settled lease cannot be renewed");
  });

  test("an Admit repeated with the same request_id returns the same reservation", async () => {
    const a = await admit(t, "k-alice", { requestId: "retry-1" });
    const b = await admit(t, "k-alice", { requestId: "retry-1" });
    assert.equal(b.reservationId, a.reservationId);
    assert.equal(b.replayed, true);
    const c = await admit(t, "k-globex", { requestId: "retry-1" });
    assert.notEqual(c.reservationId, a.reservationId, "request ids are scoped to the tenant");
  });

  test("the admin API needs the admin token; traffic credentials never grant it", async () => {
    assert.equal(await grpcCode(t.policy.listTenants({})), grpc.status.UNAUTHENTICATED);
    assert.equal(await grpcCode(t.policy.listTenants({}, { authorization: "Bearer wrong-token-000000000000" })), grpc.status.PERMISSION_DENIED);
    assert.equal(await grpcCode(t.policy.listTenants({}, { authorization: `Bearer ${secretOf("k-alice")}` })), grpc.status.PERMISSION_DENIED);
    assert.equal(await grpcCode(t.admission.getEffectivePolicy({ tenant: "acme" })), grpc.status.UNAUTHENTICATED);
    assert.equal(await grpcCode(t.admission.getEffectivePolicy({ credential: secretOf("k-alice"), tenant: "globex" })), grpc.status.PERMISSION_DENIED);
    const events = await t.policy.listAuditEvents({ kind: "admin.", pageSize: 10 }, { ...admin, "x-admission-actor": "ops-jane" });
    assert.ok(events.events.length > 0);
  });

  test("CreateApiKey returns the secret once; RevokeApiKey denies it from then on", async () => {
    const created = await t.policy.createApiKey({ tenant: "globex", tasks: ["DRAFT"] }, { ...admin, "x-admission-actor": "ops-jane" });
    assert.match(created.secret, /^ak_[A-Za-z0-9_-]{43}$/);
    assert.equal(created.apiKey!.secret, "");
    const got = await t.policy.getApiKey({ id: created.apiKey!.id }, admin);
    assert.equal(got.apiKey!.secret, "");
    assert.equal((await t.admission.admit({ credential: created.secret, task: "DRAFT" })).allowed, true);
    await t.policy.revokeApiKey({ id: created.apiKey!.id }, admin);
    const denied = await t.admission.admit({ credential: created.secret, task: "DRAFT" });
    assert.equal(denied.reason, DenyReason.UNAUTHENTICATED);
    const audit = await t.policy.listAuditEvents({ kind: "admin.revoke_key", tenant: "globex" }, admin);
    assert.equal(audit.events[0]?.actor, "admin");
    const created2 = await t.policy.listAuditEvents({ kind: "admin.create_key", tenant: "globex" }, admin);
    assert.equal(created2.events[0]?.actor, "admin:ops-jane");
    assert.ok(!JSON.stringify(created2.events, (_k, v) => (typeof v === "bigint" ? String(v) : v)).includes(created.secret), "no secret in the audit log");
  });

  test("bad admin input: NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, nothing changed", async () => {
    const before = (await t.policy.exportBundle({}, admin)).version;
    assert.equal(await grpcCode(t.policy.getTenant({ id: "nobody" }, admin)), grpc.status.NOT_FOUND);
    assert.equal(await grpcCode(t.policy.deletePlan({ code: "PRO" }, admin)), grpc.status.FAILED_PRECONDITION);
    assert.equal(await grpcCode(t.policy.deleteTenant({ id: "acme" }, admin)), grpc.status.FAILED_PRECONDITION);
    assert.equal(await grpcCode(t.policy.getUsage({ tenant: "" }, admin)), grpc.status.INVALID_ARGUMENT);
    assert.equal(await grpcCode(t.policy.getUsage({ tenant: "nobody" }, admin)), grpc.status.NOT_FOUND);
    assert.equal(await grpcCode(t.policy.createApiKey({ tenant: "nobody" }, admin)), grpc.status.NOT_FOUND);
    assert.equal(await grpcCode(t.policy.resetMeter({ tenant: "acme", kind: LimitKind.INPUT_TOKENS }, admin)), grpc.status.INVALID_ARGUMENT);
    const unknownEnum = scenario({ id: "acme" });
    unknownEnum.tenants[0]!.limits = [{ $typeName: "admission.v1.Limit", kind: 77 as LimitKind, window: Window.DAY, value: 1n, task: "", per: 1, mode: 0, algorithm: 0, burst: 0n }];
    assert.equal(await grpcCode(t.policy.applyBundle({ bundle: create(BundleSchema, { tenants: unknownEnum.tenants }) }, admin)), grpc.status.INVALID_ARGUMENT);
    assert.equal((await t.policy.exportBundle({}, admin)).version, before);
  });

  test("GetEffectivePolicy explains every limit, its source and usage", async () => {
    await t.policy.applyBundle({ bundle: create(BundleSchema, { users: scenario({ id: "acme", users: [{ id: "alice", limits: [{ kind: "TOKENS", window: "MONTH", per: "USER", value: 5000 }] }] }).users }) }, admin);
    const d = await admit(t, "k-alice");
    const explained = await t.admission.getEffectivePolicy({ credential: secretOf("k-alice"), task: "DRAFT" });
    assert.equal(explained.plan, "PRO");
    assert.equal(explained.atiToken, "ati-pro");
    const userTokens = explained.limits.find((l) => l.kind === LimitKind.TOKENS && l.source === LimitSource.USER)!;
    assert.equal(userTokens.value, 5000n);
    assert.equal(userTokens.used, 150n);
    const out = explained.limits.find((l) => l.kind === LimitKind.OUTPUT_TOKENS)!;
    assert.equal(out.source, LimitSource.PLAN);
    const byAdmin = await t.admission.getEffectivePolicy({ tenant: "acme", user: "alice" }, admin);
    assert.equal(byAdmin.limits.length, explained.limits.length);
    await t.admission.settle({ reservationId: d.reservationId, inputTokens: 100n, outputTokens: 50n });
  });

  test("a lease that is never settled expires: charged its estimate and marked so in the ledger", async () => {
    const d = await admit(t, "k-globex", { inputTokens: 300n, maxOutputTokens: 200n });
    now += 5 * 60_000 + 1;
    await t.cp.settlement.sweep();
    const late = await t.admission.settle({ reservationId: d.reservationId, inputTokens: 1n, outputTokens: 1n });
    assert.equal(late.duplicate, true);
    assert.equal(late.outcome, Outcome.EXPIRED);
    assert.equal(late.estimated, true);
    assert.deepEqual([late.inputTokens, late.outputTokens], [300n, 200n]);
    const audit = await t.policy.listAuditEvents({ kind: "lease.expired", tenant: "globex" }, admin);
    assert.equal(audit.events.filter((e) => e.attributes.request_id === d.requestId).length, 1);
  });

  test("Session multiplexes Admit and Settle by correlation id on one stream", async () => {
    const stream = (t.admission.raw as unknown as { session(): grpc.ClientDuplexStream<unknown, { id: bigint; result: { case: string; value: any } }> }).session();
    const answers = new Map<bigint, { case: string; value: any }>();
    const done = new Promise<void>((resolve, reject) => {
      stream.on("data", (msg) => answers.set(msg.id, msg.result));
      stream.on("end", resolve);
      stream.on("error", reject);
    });
    const req = (id: bigint, call: unknown) => stream.write({ $typeName: "admission.v1.SessionRequest", id, call, traceparent: "", tracestate: "" });
    for (let i = 1n; i <= 20n; i++) {
      req(i, { case: "admit", value: { $typeName: "admission.v1.AdmitRequest", credential: secretOf("k-globex"), task: "DRAFT", requestId: "", model: "", inputTokens: 10n, maxOutputTokens: 10n, files: 0n, agentSteps: 0n, apiCalls: 0n, attributes: {} } });
    }
    req(99n, { case: undefined });
    req(100n, { case: "settle", value: { $typeName: "admission.v1.SettleRequest", reservationId: "bogus", inputTokens: 0n, outputTokens: 0n, provider: "", model: "", outcome: 0, latencyMs: 0n, estimated: false, credential: "", cacheReadTokens: 0n, cacheWriteTokens: 0n, reasoningTokens: 0n } });
    stream.end();
    await done;
    assert.equal(answers.size, 22);
    for (let i = 1n; i <= 20n; i++) assert.equal(answers.get(i)?.case, "admit");
    assert.equal(answers.get(99n)?.case, "error");
    assert.equal(answers.get(99n)?.value.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(answers.get(100n)?.value.code, grpc.status.NOT_FOUND);
  });
});

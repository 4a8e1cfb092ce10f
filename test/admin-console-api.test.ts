import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Mode, Per, Window } from "../gen/admission/v1/policy_pb.js";
import { UsageGroupBy } from "../gen/admission/v1/policy_service_pb.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { counterBackends } from "./support/counter-backends.js";
import { quickDatabase } from "./support/databases.js";
import { grpcCode } from "./support/grpc-clients.js";
import { scenario, secretOf } from "./support/scenario.js";

/**
 * What the admin console reads, as any other admin client reads it: tenants at a
 * glance (ListTenantStatus), a decision without a reservation (SimulateAdmit), the
 * catalog, usage by hour, and audit events by actor and time.
 */
const bundle = scenario(
  {
    id: "a",
    limits: [{ kind: "TOKENS", window: "DAY", per: "TENANT", value: 1000 }, { kind: "REQUESTS", window: "MINUTE", per: "USER", value: 10 }],
    users: [{ id: "alice" }],
    keys: [{ id: "k-a", user: "alice" }, { id: "k-a2" }, { id: "k-gone", revoked: true }],
  },
  { id: "b", mode: "SOFT", keys: [{ id: "k-b" }] },
);

for (const backend of counterBackends("admconsole")) {
  describe(`ListTenantStatus (${backend.name} counters)`, { skip: backend.skip }, () => {
    let t: TestControlPlane;
    let database: Awaited<ReturnType<typeof quickDatabase>>;
    before(async () => {
      database = await quickDatabase();
      t = await startTestControlPlane({ config: { ...database.config, ...backend.config() } });
      await t.policy.applyBundle({ bundle }, admin);
    });
    after(async () => {
      await t.close();
      await database.drop();
      await backend.cleanUp();
    });

    test("status, plan, mode, this month's ledger totals, the meters nearest their limit and the open reservations of each tenant", async () => {
      const admit = (key: string) => t.admission.admit({ credential: secretOf(key), task: "DRAFT", inputTokens: 100n, maxOutputTokens: 100n });
      const settled = await admit("k-a");
      await t.admission.settle({ reservationId: settled.reservationId, inputTokens: 60n, outputTokens: 40n });
      const open1 = await admit("k-a");
      const open2 = await admit("k-a2");
      assert.ok(settled.allowed && open1.allowed && open2.allowed);

      const { tenants } = await t.policy.listTenantStatus({}, admin);
      assert.deepEqual(tenants.map((s) => s.tenant), ["a", "b"]);
      const [a, b] = tenants;
      assert.equal(a!.plan, "PRO");
      assert.equal(a!.atiToken, "ati-pro");
      assert.equal(a!.mode, Mode.ENFORCE);
      assert.equal(b!.mode, Mode.SOFT);
      assert.equal(a!.openReservations, 2n, "two admitted and not settled");
      assert.equal(b!.openReservations, 0n);
      assert.equal(a!.problem, "");
      const usage = await t.policy.getUsage({ tenant: "a" }, admin);
      assert.deepEqual(
        [a!.month!.requests, a!.month!.inputTokens, a!.month!.outputTokens, a!.month!.costMicros],
        [usage.requests, usage.inputTokens, usage.outputTokens, usage.costMicros],
        "this month's totals are GetUsage's",
      );
      assert.equal(a!.month!.requests, 1n);
      // 100 settled + 200 + 200 reserved of 1000 tokens a day; alice 2 of 10 requests a minute; k-a2 (no user: its own user) 1 of 10.
      assert.deepEqual(a!.nearest.map((m) => [LimitKind[m.kind], Window[m.window], Per[m.per], m.subject, m.used, m.limit]), [
        ["TOKENS", "DAY", "TENANT", "a", 500n, 1000n],
        ["REQUESTS", "MINUTE", "USER", "alice", 2n, 10n],
        ["REQUESTS", "MINUTE", "USER", "key:k-a2", 1n, 10n],
      ]);
      assert.ok(a!.nearest[0]!.resetMs > 0n && a!.nearest[0]!.resetMs <= 86_400_000n);
      assert.equal(b!.month!.requests, 0n);

      const one = await t.policy.listTenantStatus({ tenant: "a", nearest: 10 }, admin);
      assert.equal(one.tenants.length, 1);
      assert.ok(one.tenants[0]!.nearest.some((m) => m.kind === LimitKind.TOKENS && m.window === Window.MONTH && m.used === 500n), "more meters on request, the plan's among them");
      assert.equal(await grpcCode(t.policy.listTenantStatus({ tenant: "nope" }, admin)), grpc.status.NOT_FOUND);
      assert.equal(await grpcCode(t.policy.listTenantStatus({ nearest: 101 }, admin)), grpc.status.INVALID_ARGUMENT);
      assert.equal(await grpcCode(t.policy.listTenantStatus({})), grpc.status.UNAUTHENTICATED);

      for (const r of [open1, open2]) await t.admission.settle({ reservationId: r.reservationId, inputTokens: 1n, outputTokens: 1n });
      assert.equal((await t.policy.listTenantStatus({ tenant: "a" }, admin)).tenants[0]!.openReservations, 0n);
    });
  });
}

describe("SimulateAdmit", () => {
  let t: TestControlPlane;
  before(async () => {
    t = await startTestControlPlane();
    await t.policy.applyBundle({ bundle }, admin);
  });
  after(() => t.close());

  const denials = async () => (await t.policy.listAuditEvents({ tenant: "a", kind: "decision." }, admin)).events.length;
  const used = async () => (await t.admission.getEffectivePolicy({ tenant: "a" }, admin)).limits.find((l) => l.kind === LimitKind.TOKENS && l.window === Window.DAY)!.used;

  test("answers what Admit would decide now, for a key or a user, and reserves and records nothing", async () => {
    const events = await denials();
    const simulated = (await t.policy.simulateAdmit({ keyId: "k-a", task: "DRAFT", inputTokens: 300n, maxOutputTokens: 200n }, admin)).decision!;
    assert.equal(simulated.allowed, true);
    assert.equal(simulated.reservationId, "", "no reservation");
    assert.equal(simulated.leaseExpiresAt, undefined);
    assert.deepEqual([simulated.tenant, simulated.user, simulated.keyId], ["a", "alice", "k-a"]);
    assert.equal(await used(), 0n, "the meters are untouched");

    const admitted = await t.admission.admit({ credential: secretOf("k-a"), task: "DRAFT", inputTokens: 300n, maxOutputTokens: 200n });
    const view = (r: typeof admitted) => ({
      allowed: r.allowed, reason: r.reason, httpStatus: r.httpStatus, maxOutputTokens: r.maxOutputTokens, routes: r.routes.map((x) => x.model),
      meters: r.meters.map((m) => [LimitKind[m.kind], Window[m.window], m.subject, m.used, m.limit, m.remaining]), reservedCostMicros: r.reservedCostMicros,
    });
    assert.deepEqual(view(simulated), view(admitted), "the same decision, meters and cost as the Admit that followed");
    assert.equal(await used(), 500n);

    // 500 of 1000 used: 600 more would not fit, for the key and for its user alike.
    const overKey = (await t.policy.simulateAdmit({ keyId: "k-a", task: "DRAFT", inputTokens: 300n, maxOutputTokens: 300n }, admin)).decision!;
    const overUser = (await t.policy.simulateAdmit({ tenant: "a", user: "alice", task: "DRAFT", inputTokens: 300n, maxOutputTokens: 300n }, admin)).decision!;
    for (const d of [overKey, overUser]) {
      assert.equal(d.allowed, false);
      assert.equal(d.reason, DenyReason.QUOTA_EXCEEDED);
      assert.equal(d.httpStatus, 402);
      assert.equal(d.deniedMeter?.used, 500n);
    }
    assert.equal(await denials(), events, "a simulated denial is not audited");
    const denied = await t.admission.admit({ credential: secretOf("k-a"), task: "DRAFT", inputTokens: 300n, maxOutputTokens: 300n });
    assert.equal(denied.reason, DenyReason.QUOTA_EXCEEDED);
    assert.equal(denied.message, overKey.message);
    assert.equal(await denials(), events + 1, "the real one is");

    const revoked = (await t.policy.simulateAdmit({ keyId: "k-gone", task: "DRAFT" }, admin)).decision!;
    assert.equal(revoked.reason, DenyReason.UNAUTHENTICATED);
    assert.match(revoked.message, /k-gone" is revoked/);
    const notInPlan = (await t.policy.simulateAdmit({ tenant: "a", task: "DIAGRAM" }, admin)).decision!;
    assert.equal(notInPlan.reason, DenyReason.FEATURE_NOT_IN_PLAN);
    await t.admission.settle({ reservationId: admitted.reservationId, inputTokens: 300n, outputTokens: 200n });
  });

  test("bad input is a clear error naming the field; admin only; served over Connect too", async () => {
    assert.equal(await grpcCode(t.policy.simulateAdmit({ task: "DRAFT" }, admin)), grpc.status.INVALID_ARGUMENT);
    assert.equal(await grpcCode(t.policy.simulateAdmit({ tenant: "nope", task: "DRAFT" }, admin)), grpc.status.NOT_FOUND);
    assert.equal(await grpcCode(t.policy.simulateAdmit({ tenant: "a", user: "bob", task: "DRAFT" }, admin)), grpc.status.NOT_FOUND);
    assert.equal(await grpcCode(t.policy.simulateAdmit({ keyId: "k-b", tenant: "a", task: "DRAFT" }, admin)), grpc.status.INVALID_ARGUMENT);
    await assert.rejects(t.policy.simulateAdmit({ tenant: "a", task: "DRAFT", inputTokens: -1n }, admin), /input_tokens must not be negative/);
    assert.equal(await grpcCode(t.policy.simulateAdmit({ tenant: "a", task: "DRAFT" })), grpc.status.UNAUTHENTICATED);

    const res = await fetch(`http://127.0.0.1:${t.cp.httpPort}/admission.v1.PolicyService/SimulateAdmit`, {
      method: "POST", headers: { ...admin, "content-type": "application/json" },
      body: JSON.stringify({ tenant: "b", task: "DRAFT", inputTokens: "10", maxOutputTokens: "10" }),
    });
    assert.equal(res.status, 200);
    const json = await res.json() as { decision: { allowed: boolean; tenant: string; reservationId?: string } };
    assert.equal(json.decision.allowed, true);
    assert.equal(json.decision.tenant, "b");
    assert.equal(json.decision.reservationId, undefined);
  });
});

describe("catalog, usage by hour, audit by actor and time", () => {
  const startMs = Date.UTC(2026, 2, 10, 9, 30);
  let nowMs = startMs;
  let t: TestControlPlane;
  before(async () => {
    t = await startTestControlPlane({ deps: { clock: () => nowMs } });
    await t.policy.applyBundle({ bundle }, { ...admin, "x-admission-actor": "jane" });
  });
  after(() => t.close());

  test("ListCatalog answers the models with their prices and the tasks", async () => {
    const catalog = await t.policy.listCatalog({}, admin);
    assert.deepEqual(catalog.models.map((m) => [m.name, m.inputMicrosPerMtok, m.outputMicrosPerMtok]), bundle.models.map((m) => [m.name, m.inputMicrosPerMtok, m.outputMicrosPerMtok]));
    assert.deepEqual(catalog.tasks.map((x) => [x.code, x.feature]), [["DRAFT", "DRAFTING"], ["DIAGRAM", "DIAGRAMS"], ["PRIOR", "PRIOR_ART"]]);
    assert.equal(await grpcCode(t.policy.listCatalog({})), grpc.status.UNAUTHENTICATED);
  });

  test("GetUsage groups by hour (UTC) of the reservation", async () => {
    const run = async (input: bigint, model: string) => {
      const r = await t.admission.admit({ credential: secretOf("k-b"), task: "DRAFT", model, inputTokens: input, maxOutputTokens: 10n });
      await t.admission.settle({ reservationId: r.reservationId, inputTokens: input, outputTokens: 10n });
    };
    await run(100n, "m-pro");
    nowMs = Date.UTC(2026, 2, 10, 9, 59, 59);
    await run(200n, "m-base");
    nowMs = Date.UTC(2026, 2, 10, 12, 0);
    await run(400n, "m-pro");
    const usage = await t.policy.getUsage({ tenant: "b", start: timestampFromMs(Date.UTC(2026, 2, 10)), end: timestampFromMs(Date.UTC(2026, 2, 11)), groupBy: [UsageGroupBy.HOUR] }, admin);
    assert.deepEqual(usage.rows.map((r) => [r.group.hour, r.totals!.requests, r.totals!.inputTokens]), [
      ["2026-03-10T09:00:00Z", 2n, 300n],
      ["2026-03-10T12:00:00Z", 1n, 400n],
    ]);
    const byModel = await t.policy.getUsage({ tenant: "b", start: timestampFromMs(Date.UTC(2026, 2, 10)), groupBy: [UsageGroupBy.HOUR, UsageGroupBy.MODEL] }, admin);
    assert.deepEqual(byModel.rows.map((r) => [r.group.hour, r.group.model, r.totals!.inputTokens]), [
      ["2026-03-10T09:00:00Z", "m-base", 200n],
      ["2026-03-10T09:00:00Z", "m-pro", 100n],
      ["2026-03-10T12:00:00Z", "m-pro", 400n],
    ]);
  });

  test("ListAuditEvents filters by actor and by a time range", async () => {
    nowMs = Date.UTC(2026, 2, 10, 13, 0);
    await t.policy.revokeApiKey({ id: "k-a2" }, { ...admin, "x-admission-actor": "bob" });
    nowMs = Date.UTC(2026, 2, 10, 14, 0);
    await t.policy.revokeApiKey({ id: "k-b" }, { ...admin, "x-admission-actor": "jane" });
    const jane = await t.policy.listAuditEvents({ actor: "admin:jane" }, admin);
    assert.ok(jane.events.length >= 2);
    assert.ok(jane.events.every((e) => e.actor === "admin:jane"));
    assert.ok(jane.events.some((e) => e.kind === "admin.revoke_key" && e.attributes.key_id === "k-b"));
    const window = await t.policy.listAuditEvents({ kind: "admin.revoke_key", since: timestampFromMs(Date.UTC(2026, 2, 10, 12, 30)), until: timestampFromMs(Date.UTC(2026, 2, 10, 13, 30)) }, admin);
    assert.deepEqual(window.events.map((e) => [e.actor, e.attributes.key_id]), [["admin:bob", "k-a2"]]);
    assert.equal(await grpcCode(t.policy.listAuditEvents({ since: timestampFromMs(Date.UTC(2026, 2, 10, 14)), until: timestampFromMs(Date.UTC(2026, 2, 10, 13)) }, admin)), grpc.status.INVALID_ARGUMENT);
  });
});

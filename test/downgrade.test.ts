import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import OpenAI from "openai";
import pino from "pino";
import { DenyReason, type AdmitResponse } from "../gen/admission/v1/admission_pb.js";
import { BundleSchema, LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { CheckRequestSchema, CheckResponseSchema, type CheckResponse } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import { parseProtoJson } from "../control-plane/policy/proto-json.js";
import { setAdmitAttributes } from "../control-plane/tracing.js";
import { loadDataPlaneConfig } from "../data-plane/config.js";
import { startMockProvider, type RunningMockProvider } from "../data-plane/mock-provider.js";
import { startDataPlane, type RunningDataPlane } from "../data-plane/server.js";
import { UsageGroupBy } from "../gen/admission/v1/policy_service_pb.js";
import { closeControlPlaneClients, Plugin } from "../deploy/kong/admission-plugin.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { counterBackends } from "./support/counter-backends.js";
import { KongRequest } from "./support/fake-kong.js";
import { meterUsed } from "./support/meter-used.js";
import { metricValue } from "./support/metric-value.js";
import { secretOf } from "./support/scenario.js";
import { waitFor } from "./data-plane/support/stack.js";

/**
 * Downgrade before denial, end to end: over real gRPC, through the data plane with
 * the openai SDK against the mock provider, through ext_authz and the Kong plugin.
 * Prices in micro-USD per token (in / out): PREMIUM 10 / 100, MID 4 / 40, ECONOMY 1 / 2.
 * On every counter store: the downgrade is a second atomic reserve.
 */
const budget = (value: number) => ({ kind: "BUDGET_MICROS", window: "DAY", per: "TENANT", value });
const tenantIds = ["dg", "dg-soft", "dg-shadow", "dg-rate", "dg-dp", "dg-env", "dg-kong", "dg-credits"] as const;
const bundleJson = (access: Record<string, unknown> = { task: "DRAFT", modelClasses: ["PREMIUM", "MID", "ECONOMY"], downgradeClasses: ["MID", "ECONOMY"] }) => ({
  models: [
    { name: "prem-a", modelClass: "PREMIUM", provider: "mock", inputMicrosPerMtok: 10_000_000, outputMicrosPerMtok: 100_000_000 },
    { name: "mid-a", modelClass: "MID", provider: "mock", inputMicrosPerMtok: 4_000_000, outputMicrosPerMtok: 40_000_000 },
    { name: "econ-a", modelClass: "ECONOMY", provider: "mock", inputMicrosPerMtok: 1_000_000, outputMicrosPerMtok: 2_000_000 },
    { name: "other-a", modelClass: "OTHER", provider: "mock", inputMicrosPerMtok: 1_000_000, outputMicrosPerMtok: 1_000_000 },
  ],
  tasks: [{ code: "DRAFT", feature: "DRAFTING" }],
  plans: [{ code: "DG", features: ["DRAFTING"], taskAccess: [access] }],
  atiTokens: [{ id: "ati-dg", plan: "DG", status: "ACTIVE" }],
  tenants: [
    { id: "dg", atiToken: "ati-dg", status: "ACTIVE", mode: "ENFORCE", limits: [budget(18_000)] },
    { id: "dg-soft", atiToken: "ati-dg", status: "ACTIVE", mode: "SOFT", limits: [budget(18_000)] },
    { id: "dg-shadow", atiToken: "ati-dg", status: "ACTIVE", mode: "SHADOW", limits: [budget(18_000)] },
    { id: "dg-rate", atiToken: "ati-dg", status: "ACTIVE", mode: "ENFORCE", limits: [budget(12_000), { kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 1 }] },
    { id: "dg-dp", atiToken: "ati-dg", status: "ACTIVE", mode: "ENFORCE", limits: [budget(30_000)] },
    { id: "dg-env", atiToken: "ati-dg", status: "ACTIVE", mode: "ENFORCE", limits: [budget(30_000)] },
    { id: "dg-kong", atiToken: "ati-dg", status: "ACTIVE", mode: "ENFORCE", limits: [budget(30_000)] },
    { id: "dg-credits", atiToken: "ati-dg", status: "ACTIVE", mode: "ENFORCE", prepaid: true },
  ],
  apiKeys: tenantIds.map((id) => ({ id: `k-${id}`, tenant: id, secret: secretOf(`k-${id}`) })),
});

/** The model a reservation id's signed claims name (its payload's sixth claim). */
const claimedModel = (reservationId: string): string => (JSON.parse(Buffer.from(reservationId.split(".")[1]!, "base64url").toString()) as string[])[5]!;

for (const backend of counterBackends("admdg")) describe(`downgrade before denial (${backend.name} counters)`, { skip: backend.skip }, () => {
  let t: TestControlPlane;
  let mock: RunningMockProvider;
  let dp: RunningDataPlane;
  const spoolDir = mkdtempSync(join(tmpdir(), "adm-dg-"));
  // Noon tomorrow: every request of the test is in one DAY window, and Redis keeps its keys (their expiry is in the future).
  const dayMs = 86_400_000;
  const now = (Math.floor(Date.now() / dayMs) + 1) * dayMs + dayMs / 2;
  const metrics = (labels: Record<string, string>) => metricValue(`http://127.0.0.1:${t.cp.httpPort}/metrics`, "admission_downgrades_total", labels);
  const admit = (tenant: string, model: string, inputTokens = 100n, maxOutputTokens = 100n) =>
    t.admission.admit({ credential: secretOf(`k-${tenant}`), task: "DRAFT", model, inputTokens, maxOutputTokens });
  const budgetUsed = (tenant: string) => meterUsed(t.admission, tenant, LimitKind.BUDGET_MICROS, Window.DAY);
  /** Reserves (and leaves open) what leaves `remaining` micro-USD of the tenant's budget: economy input at 1 a token, one output token (2). */
  const leave = async (tenant: string, limit: number, remaining: number): Promise<void> => {
    const filler = limit - Number(await budgetUsed(tenant)) - remaining - 2;
    assert.ok(filler > 0, `${tenant} has more than ${remaining} left`);
    const d = await admit(tenant, "econ-a", BigInt(filler), 1n);
    assert.ok(d.allowed && !d.degraded, d.message);
    assert.equal(await budgetUsed(tenant), BigInt(limit - remaining));
  };

  before(async () => {
    t = await startTestControlPlane({ config: backend.config(), deps: { clock: () => now } });
    await t.policy.applyBundle({ bundle: parseProtoJson(BundleSchema, bundleJson()) }, admin);
    mock = await startMockProvider();
    dp = await startDataPlane({ ...loadDataPlaneConfig({}), host: "127.0.0.1", port: 0, metricsPort: 0, controlPlaneAddr: t.address, spoolDir }, {
      logger: pino({ level: "silent" }),
      providers: [{ name: "mock", baseUrl: mock.baseUrl, apiKey: "" }],
    });
  });
  after(async () => {
    closeControlPlaneClients();
    await dp.close();
    await mock.close();
    await t.close();
    await backend.cleanUp();
    rmSync(spoolDir, { recursive: true, force: true });
  });

  test("a prepaid tenant's credit balance downgrades like a budget: premium while it fits, then the first class that fits, then CREDITS_EXHAUSTED", async () => {
    await t.policy.grantCredits({ tenant: "dg-credits", amountMicros: 12_000n, grantId: "dg-credits-1" }, admin);
    const first = await admit("dg-credits", "prem-a");
    assert.deepEqual([first.allowed, first.degraded, first.reservedCostMicros], [true, false, 11_000n], first.message);
    // 1,000 left: MID (4,400) does not fit, ECONOMY (300) does.
    const econ = await admit("dg-credits", "prem-a");
    assert.ok(econ.allowed, econ.message);
    assert.deepEqual([econ.degraded, econ.degradedFrom, econ.routes.map((r) => r.model), econ.reservedCostMicros], [true, "prem-a", ["econ-a"], 300n]);
    assert.ok(econ.warnings.some((w) => w.startsWith("downgraded from prem-a to econ-a (class ECONOMY): credits of tenant dg-credits: balance 1000 micro-USD")), econ.warnings.join(" | "));
    assert.equal((await t.policy.getCreditBalance({ tenant: "dg-credits" }, admin)).balanceMicros, 700n);
    await admit("dg-credits", "econ-a");
    await admit("dg-credits", "econ-a");
    // 100 left: nothing fits.
    const denied = await admit("dg-credits", "prem-a");
    assert.deepEqual([denied.allowed, denied.reason, denied.httpStatus], [false, DenyReason.CREDITS_EXHAUSTED, 402]);
    assert.match(denied.message, /no downgrade class \(MID, ECONOMY\) fits either/);
  });

  test("premium while it fits, then each downgrade class in order, then BUDGET_EXCEEDED; the settle charges the served model's price", async () => {
    // 100 in, 100 out: PREMIUM 11,000, MID 4,400, ECONOMY 300 of an 18,000 budget.
    const first = await admit("dg", "prem-a");
    assert.ok(first.allowed, first.message);
    assert.deepEqual([first.degraded, first.degradedFrom, first.routes.map((r) => r.model), first.reservedCostMicros], [false, "", ["prem-a"], 11_000n]);

    // SimulateAdmit shows the same outcome and reserves nothing.
    const simulated = (await t.policy.simulateAdmit({ keyId: "k-dg", task: "DRAFT", model: "prem-a", inputTokens: 100n, maxOutputTokens: 100n }, admin)).decision!;
    assert.deepEqual([simulated.allowed, simulated.degraded, simulated.degradedFrom, simulated.routes.map((r) => r.model), simulated.reservedCostMicros], [true, true, "prem-a", ["mid-a"], 4_400n]);
    assert.equal(await budgetUsed("dg"), 11_000n, "a simulation reserves nothing");

    const mid = await admit("dg", "prem-a");
    assert.ok(mid.allowed, mid.message);
    assert.deepEqual([mid.degraded, mid.degradedFrom, mid.routes.map((r) => r.model), mid.reservedCostMicros], [true, "prem-a", ["mid-a"], 4_400n]);
    assert.equal(claimedModel(mid.reservationId), "mid-a", "the signed reservation names the routed model");
    assert.ok(mid.warnings.some((w) => w.startsWith("downgraded from prem-a to mid-a (class MID): BUDGET_MICROS/DAY of dg: 11000 of 18000 used, this request needs 11000")), mid.warnings.join(" | "));
    assert.equal(await budgetUsed("dg"), 15_400n, "only the downgrade's estimate is reserved");
    // A retry with the same request id replays the degraded reservation, on its routes.
    const once = await t.admission.admit({ credential: secretOf("k-dg"), task: "DRAFT", model: "prem-a", inputTokens: 100n, maxOutputTokens: 100n, requestId: "dg-retry" });
    const again = await t.admission.admit({ credential: secretOf("k-dg"), task: "DRAFT", model: "prem-a", inputTokens: 100n, maxOutputTokens: 100n, requestId: "dg-retry" });
    assert.deepEqual([once.degraded, once.routes[0]!.model], [true, "econ-a"]);
    assert.deepEqual([again.replayed, again.reservationId, again.degraded, again.degradedFrom, again.routes.map((r) => r.model)], [true, once.reservationId, true, "prem-a", ["econ-a"]]);
    await t.admission.settle({ reservationId: once.reservationId, inputTokens: 0n, outputTokens: 0n });
    assert.equal(await budgetUsed("dg"), 15_400n, "settled at nothing used");

    // MID no longer fits either: ECONOMY. A request naming no model is degraded from the plan's default class.
    const economy = await admit("dg", "");
    assert.deepEqual([economy.allowed, economy.degraded, economy.degradedFrom, economy.routes.map((r) => r.model), economy.reservedCostMicros], [true, true, "PREMIUM", ["econ-a"], 300n]);
    assert.equal(claimedModel(economy.reservationId), "econ-a");
    const settled = await t.admission.settle({ reservationId: economy.reservationId, inputTokens: 100n, outputTokens: 50n });
    assert.equal(settled.costMicros, 100n + 100n, "economy's price: 100 x 1 + 50 x 2");
    assert.equal(await budgetUsed("dg"), 15_400n + 200n);

    // Asking for the economy class itself has nothing cheaper to go to.
    let last: AdmitResponse;
    let economyAdmits = 0;
    for (;;) {
      last = await admit("dg", "PREMIUM");
      if (!last.allowed) break;
      assert.equal(last.routes[0]!.model, "econ-a");
      assert.equal(last.degradedFrom, "PREMIUM");
      economyAdmits++;
    }
    assert.equal(economyAdmits, Math.floor((18_000 - 15_600) / 300));
    assert.equal(last.reason, DenyReason.BUDGET_EXCEEDED);
    assert.equal(last.httpStatus, 402);
    assert.match(last.message, /^BUDGET_MICROS\/DAY of dg: .* this request needs 11000; no downgrade class \(MID, ECONOMY\) fits either$/);
    assert.deepEqual([last.degraded, last.routes.length], [false, 0]);
    const direct = await admit("dg", "econ-a");
    assert.equal(direct.reason, DenyReason.BUDGET_EXCEEDED);

    assert.equal(await metrics({ mode: "enforce", kind: "BUDGET_MICROS", from: "PREMIUM", to: "MID" }), 1);
    assert.equal(await metrics({ mode: "enforce", kind: "BUDGET_MICROS", from: "PREMIUM", to: "ECONOMY" }), 2 + economyAdmits, "the retried one counted once");
    await t.cp.audit.flush();
    const events = (await t.policy.listAuditEvents({ tenant: "dg", kind: "decision.degraded" }, admin)).events;
    assert.equal(events.length, 3 + economyAdmits);
    assert.ok(events.some((e) => e.attributes.from === "prem-a" && e.attributes.to === "mid-a" && e.attributes.kind === "BUDGET_MICROS" && e.attributes.window === "DAY"));
  });

  test("a denial for another reason is not downgraded", async () => {
    const downgrades = () => metrics({ mode: "enforce" });
    const first = await admit("dg-rate", "prem-a");
    assert.ok(first.allowed && !first.degraded, first.message);
    const before = await downgrades();
    // The budget would take neither PREMIUM nor MID now (11,000 of 12,000 used), but the rate limit denies first.
    const limited = await admit("dg-rate", "prem-a");
    assert.deepEqual([limited.allowed, limited.reason, limited.httpStatus, limited.degraded, limited.degradedFrom], [false, DenyReason.RATE_LIMITED, 429, false, ""]);
    assert.equal(await downgrades(), before, "nothing downgraded");
    assert.equal(await budgetUsed("dg-rate"), 11_000n);
  });

  for (const [tenant, mode] of [["dg-soft", "SOFT"], ["dg-shadow", "SHADOW"]] as const) {
    test(`${mode}: the would-be downgrade is recorded and warned, the requested model kept`, async () => {
      await admit(tenant, "prem-a");
      const over = await admit(tenant, "prem-a");
      assert.deepEqual([over.allowed, over.degraded, over.degradedFrom, over.routes.map((r) => r.model), over.reservedCostMicros], [true, false, "", ["prem-a"], 11_000n]);
      assert.ok(over.warnings.some((w) => w.startsWith(`${mode} budget: would have downgraded from prem-a to mid-a (class MID), kept prem-a: BUDGET_MICROS/DAY of ${tenant}: 11000 of 18000 used`)), over.warnings.join(" | "));
      assert.equal(claimedModel(over.reservationId), "prem-a");
      assert.equal(await metrics({ mode: mode.toLowerCase(), kind: "BUDGET_MICROS", from: "PREMIUM", to: "MID" }), 1);
      await t.cp.audit.flush();
      const events = (await t.policy.listAuditEvents({ tenant, kind: "decision.would_degrade" }, admin)).events;
      assert.equal(events.length, 1);
      // Nothing cheaper fits any more: no would-be downgrade, only the soft limit's own record.
      const far = await admit(tenant, "prem-a", 10_000n, 100n);
      assert.ok(far.allowed);
      assert.ok(!far.warnings.some((w) => w.includes("would have downgraded")), far.warnings.join(" | "));
    });
  }

  test("GetEffectivePolicy shows the downgrade classes", async () => {
    const explained = await t.admission.getEffectivePolicy({ tenant: "dg", task: "DRAFT" }, admin);
    assert.deepEqual(explained.tasks.map((x) => [x.task, x.downgradeClasses]), [["DRAFT", ["MID", "ECONOMY"]]]);
  });

  test("data plane with the openai SDK: the provider gets the downgraded model, the client x-admission-degraded; nothing fits: 402", async () => {
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${dp.port}/v1`, apiKey: secretOf("k-dg-dp"), maxRetries: 0, defaultHeaders: { "x-llm-task": "DRAFT" } });
    const ask = () => client.chat.completions.create({ model: "prem-a", max_tokens: 100, messages: [{ role: "user", content: "Draft a claim for a widget" }] }).withResponse();
    const usageOf = async (model: string) => (await t.policy.getUsage({ tenant: "dg-dp", groupBy: [UsageGroupBy.MODEL] }, admin)).rows.find((r) => r.group?.model === model)?.totals;

    const premium = await ask();
    assert.equal(premium.data.model, "prem-a");
    assert.equal(premium.response.headers.get("x-admission-degraded"), null);
    await waitFor(async () => (await usageOf("prem-a"))?.requests === 1n, "the premium request settled");

    // 3,000 left: PREMIUM (~10,100) and MID (~4,050) do not fit, ECONOMY (~215) does.
    await leave("dg-dp", 30_000, 3_000);
    const degraded = await ask();
    assert.equal(degraded.data.model, "econ-a", "the provider was sent the economy model");
    assert.equal(degraded.response.headers.get("x-admission-degraded"), "prem-a -> econ-a");
    assert.match(degraded.response.headers.get("x-admission-warnings") ?? "", /downgraded from prem-a to econ-a \(class ECONOMY\): BUDGET_MICROS\/DAY of dg-dp/);
    await waitFor(async () => (await usageOf("econ-a"))?.requests === 1n, "the degraded request settled");
    const econ = (await usageOf("econ-a"))!;
    assert.ok(econ.outputTokens > 0n);
    assert.equal(econ.costMicros, econ.inputTokens * 1n + econ.outputTokens * 2n, "settled at economy's price");

    // The Responses API is rewritten the same way.
    const responses = await client.responses.create({ model: "prem-a", max_output_tokens: 100, input: "Draft a claim" }).withResponse();
    assert.equal(responses.data.model, "econ-a");
    assert.equal(responses.response.headers.get("x-admission-degraded"), "prem-a -> econ-a");

    await waitFor(async () => (await usageOf("econ-a"))?.requests === 2n, "the responses request settled");
    await leave("dg-dp", 30_000, 50);
    await assert.rejects(ask(), (err: unknown) => {
      assert.ok(err instanceof OpenAI.APIError);
      assert.equal(err.status, 402);
      assert.equal(err.code, "budget_exceeded");
      assert.equal(err.headers?.get("x-admission-degraded"), null);
      return true;
    });
  });

  test("ext_authz: the routed model upstream and x-admission-degraded for the client", async () => {
    await leave("dg-env", 30_000, 3_000);
    const client = new grpc.Client(t.address, grpc.credentials.createInsecure());
    try {
      const req = create(CheckRequestSchema, {
        attributes: {
          request: {
            http: {
              method: "POST", path: "/v1/chat/completions",
              headers: { authorization: `Bearer ${secretOf("k-dg-env")}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
              body: JSON.stringify({ model: "prem-a", max_tokens: 100, messages: [{ role: "user", content: "Draft a claim" }] }),
            },
          },
        },
      });
      const res = await new Promise<CheckResponse>((resolve, reject) => {
        client.makeUnaryRequest("/envoy.service.auth.v3.Authorization/Check", (m: Uint8Array) => Buffer.from(m), (b: Buffer) => fromBinary(CheckResponseSchema, b),
          toBinary(CheckRequestSchema, req), (err, r) => (err ? reject(err) : resolve(r!)));
      });
      assert.equal(res.httpResponse.case, "okResponse");
      const ok = res.httpResponse.case === "okResponse" ? res.httpResponse.value : undefined!;
      const headersOf = (list: typeof ok.headers) => Object.fromEntries(list.map((h) => [h.header!.key, h.header!.value]));
      assert.equal(headersOf(ok.headers)["x-llm-model"], "econ-a");
      assert.equal(headersOf(ok.responseHeadersToAdd)["x-admission-degraded"], "prem-a -> econ-a");
      assert.equal(claimedModel(headersOf(ok.headers)["x-llm-reservation-id"]!), "econ-a");
    } finally {
      client.close();
    }
  });

  test("Kong: the body sent upstream names the routed model, the client gets x-admission-degraded", async () => {
    await leave("dg-kong", 30_000, 3_000);
    const plugin = new Plugin({ control_plane_address: t.address });
    const r = await new KongRequest({
      method: "POST", path: "/v1/chat/completions",
      headers: { authorization: `Bearer ${secretOf("k-dg-kong")}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
      body: JSON.stringify({ model: "prem-a", max_tokens: 100, messages: [{ role: "user", content: "Draft a claim" }] }),
    }).run(plugin, { serviceUrl: mock.baseUrl.replace(/\/v1$/, "") });
    assert.equal(r.response.status, 200);
    assert.equal(r.serviceRequest!.headers.get("x-llm-model"), "econ-a");
    assert.equal(JSON.parse(r.serviceRequest!.body).model, "econ-a");
    assert.equal(r.response.headers.get("x-admission-degraded"), "prem-a -> econ-a");
  });

  test("bad downgrade_classes refuse the bundle as a whole, naming plan, task and field; nothing changes", async () => {
    const version = (await t.policy.exportBundle({}, admin)).version;
    const refused = async (access: Record<string, unknown>, message: RegExp) => {
      const err = await t.policy.applyBundle({ bundle: parseProtoJson(BundleSchema, bundleJson(access)) }, admin).then(() => undefined, (e: grpc.ServiceError) => e);
      assert.ok(err, "refused");
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, message);
    };
    await refused({ task: "DRAFT", modelClasses: ["PREMIUM", "ECONOMY"], downgradeClasses: ["NOPE"] }, /plan "DG": field task_access\[0\]\.downgrade_classes: no model has class "NOPE"/);
    await refused({ task: "DRAFT", modelClasses: ["PREMIUM", "ECONOMY"], downgradeClasses: ["OTHER"] }, /plan "DG": field task_access\[0\]\.downgrade_classes: class "OTHER" is not one of the model_classes task "DRAFT" may use on this plan/);
    await refused({ task: "DRAFT", modelClasses: ["PREMIUM", "ECONOMY"], downgradeClasses: ["ECONOMY", "ECONOMY"] }, /plan "DG": field task_access\[0\]\.downgrade_classes: lists class "ECONOMY" twice/);
    assert.equal((await t.policy.exportBundle({}, admin)).version, version);
    const degraded = await admit("dg-env", "prem-a");
    assert.ok(degraded.allowed && degraded.degraded, "the old policy still downgrades");
  });

  test("a degraded decision's span says so (admission.degraded, admission.degraded_from)", async () => {
    const d = (await t.policy.simulateAdmit({ keyId: "k-dg-env", task: "DRAFT", model: "prem-a", inputTokens: 100n, maxOutputTokens: 100n }, admin)).decision!;
    const exporter = new InMemorySpanExporter();
    const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
    for (const decision of [d, { ...d, degraded: false, degradedFrom: "" }]) {
      const span = provider.getTracer("test").startSpan("Admit");
      setAdmitAttributes(span, decision);
      span.end();
    }
    const [degraded, plain] = exporter.getFinishedSpans().map((s) => s.attributes);
    assert.deepEqual([degraded!["admission.degraded"], degraded!["admission.degraded_from"]], [true, "prem-a"]);
    assert.equal(plain!["admission.degraded"], undefined);
    await provider.shutdown();
  });
});

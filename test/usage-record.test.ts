import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Outcome } from "../gen/admission/v1/admission_pb.js";
import { BundleSchema, LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { UsageGroupBy } from "../gen/admission/v1/policy_service_pb.js";
import { parseProtoJson } from "../control-plane/policy/proto-json.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { counterBackends } from "./support/counter-backends.js";
import { quickDatabase } from "./support/databases.js";
import { grpcCode } from "./support/grpc-clients.js";
import { meterUsed } from "./support/meter-used.js";
import { catalogJson, secretOf } from "./support/scenario.js";

/**
 * The usage record end to end over gRPC and Connect: cache reads and writes are parts
 * of the input, reasoning of the output; each part is priced at its own rate, recorded
 * in the ledger, answered by GetUsage, and counted in the token meters. On every
 * counter store.
 */
const bundle = parseProtoJson(BundleSchema, {
  ...catalogJson,
  models: [
    ...catalogJson.models,
    // $3 / $15 per million in / out, cache reads at $0.30, cache writes at $3.75.
    { name: "m-cache", modelClass: "PRO_L", provider: "p1", inputMicrosPerMtok: 3_000_000, outputMicrosPerMtok: 15_000_000, cacheReadMicrosPerMtok: 300_000, cacheWriteMicrosPerMtok: 3_750_000 },
    // No cache prices: cache tokens cost the input price.
    { name: "m-nocache", modelClass: "PRO_L", provider: "p1", inputMicrosPerMtok: 3_000_000, outputMicrosPerMtok: 15_000_000 },
  ],
  plans: [{
    code: "CACHE", features: ["DRAFTING"],
    taskAccess: [{ task: "DRAFT", modelClasses: ["PRO_L"] }],
    limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 100_000_000 }],
  }],
  atiTokens: [{ id: "ati-cache", plan: "CACHE", status: "ACTIVE" }],
  tenants: [{ id: "cachy", atiToken: "ati-cache", status: "ACTIVE", mode: "ENFORCE" }],
  apiKeys: [{ id: "k-cachy", tenant: "cachy", secret: secretOf("k-cachy") }],
});

/** The ledger keys a row by the lease id inside the signed reservation id (its payload's second claim). */
const leaseIdOf = (reservationId: string): string => (JSON.parse(Buffer.from(reservationId.split(".")[1]!, "base64url").toString()) as string[])[1]!;

for (const backend of counterBackends("admusage")) {
  describe(`the usage record (${backend.name} counters)`, { skip: backend.skip }, () => {
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

    const admit = (model: string) => t.admission.admit({ credential: secretOf("k-cachy"), task: "DRAFT", model, inputTokens: 10_000n, maxOutputTokens: 1_000n });
    const connect = async (method: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
      const res = await fetch(`http://127.0.0.1:${t.cp.httpPort}/admission.v1.AdmissionService/${method}`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };

    test("each part is priced at its own rate and recorded; the Admit reserved every input token at the full input price", async () => {
      const tokensBefore = await meterUsed(t.admission, "cachy", LimitKind.TOKENS, Window.MONTH);
      const d = await admit("m-cache");
      assert.ok(d.allowed, d.message);
      // Conservative: 10,000 x $3 + 1,000 x $15 per million.
      assert.equal(d.reservedCostMicros, 30_000n + 15_000n);
      const settled = await t.admission.settle({
        reservationId: d.reservationId, inputTokens: 10_000n, cacheReadTokens: 8_000n, cacheWriteTokens: 1_000n,
        outputTokens: 500n, reasoningTokens: 200n, model: "m-cache", outcome: Outcome.SUCCESS,
      });
      // 1,000 uncached x $3 + 8,000 x $0.30 + 1,000 x $3.75 + 500 x $15, per million tokens.
      assert.deepEqual(
        [settled.inputTokens, settled.cacheReadTokens, settled.cacheWriteTokens, settled.outputTokens, settled.reasoningTokens, settled.costMicros],
        [10_000n, 8_000n, 1_000n, 500n, 200n, 3_000n + 2_400n + 3_750n + 7_500n],
      );
      const row = await t.cp.ledger.find(leaseIdOf(d.reservationId));
      assert.deepEqual(row && [row.inputTokens, row.cacheReadTokens, row.cacheWriteTokens, row.outputTokens, row.reasoningTokens, row.costMicros], [10_000, 8_000, 1_000, 500, 200, 16_650]);
      // Token meters count every input and output token, cache and reasoning included.
      assert.equal(await meterUsed(t.admission, "cachy", LimitKind.TOKENS, Window.MONTH), tokensBefore + 10_500n);
      // A repeated settle answers the first result, every part of it.
      const again = await t.admission.settle({ reservationId: d.reservationId, inputTokens: 1n, outputTokens: 1n });
      assert.equal(again.duplicate, true);
      assert.deepEqual([again.cacheReadTokens, again.cacheWriteTokens, again.reasoningTokens, again.costMicros], [8_000n, 1_000n, 200n, 16_650n]);
    });

    test("over Connect JSON the same; a model without cache prices charges cache tokens at the input price", async () => {
      const d = await admit("m-nocache");
      const { status, json } = await connect("Settle", {
        reservationId: d.reservationId, inputTokens: "10000", cacheReadTokens: "8000", cacheWriteTokens: "1000", outputTokens: "500", reasoningTokens: "200", model: "m-nocache",
      });
      assert.equal(status, 200);
      assert.deepEqual([json.cacheReadTokens, json.cacheWriteTokens, json.reasoningTokens, json.costMicros], ["8000", "1000", "200", String(30_000 + 7_500)]);
    });

    test("GetUsage answers each part's totals, in total and by model, equal to the ledger", async () => {
      const usage = await t.policy.getUsage({ tenant: "cachy", groupBy: [UsageGroupBy.MODEL] }, admin);
      assert.deepEqual(
        [usage.requests, usage.inputTokens, usage.cacheReadTokens, usage.cacheWriteTokens, usage.outputTokens, usage.reasoningTokens, usage.costMicros],
        [2n, 20_000n, 16_000n, 2_000n, 1_000n, 400n, 16_650n + 37_500n],
      );
      const byModel = Object.fromEntries(usage.rows.map((r) => [r.group.model, r.totals!]));
      assert.deepEqual([byModel["m-cache"]!.cacheReadTokens, byModel["m-cache"]!.costMicros], [8_000n, 16_650n]);
      assert.deepEqual([byModel["m-nocache"]!.reasoningTokens, byModel["m-nocache"]!.costMicros], [200n, 37_500n]);
    });

    test("parts larger than their whole are INVALID_ARGUMENT and change nothing: the lease stays open for the right settle", async () => {
      const d = await admit("m-cache");
      const over = { reservationId: d.reservationId, inputTokens: 100n, outputTokens: 10n };
      assert.equal(await grpcCode(t.admission.settle({ ...over, cacheReadTokens: 60n, cacheWriteTokens: 41n })), grpc.status.INVALID_ARGUMENT);
      assert.equal(await grpcCode(t.admission.settle({ ...over, reasoningTokens: 11n })), grpc.status.INVALID_ARGUMENT);
      assert.equal(await grpcCode(t.admission.settle({ ...over, cacheReadTokens: -1n })), grpc.status.INVALID_ARGUMENT);
      const bad = await connect("Settle", { ...over, inputTokens: "100", outputTokens: "10", cacheWriteTokens: "101" });
      assert.equal(bad.status, 400);
      assert.match(String(bad.json.message), /cache_read_tokens \+ cache_write_tokens \(101\) must not exceed input_tokens \(100\)/);
      assert.equal(await t.cp.ledger.find(leaseIdOf(d.reservationId)), undefined, "no row was written");
      const settled = await t.admission.settle({ ...over, cacheReadTokens: 60n, cacheWriteTokens: 40n, reasoningTokens: 10n });
      assert.equal(settled.duplicate, false);
      // 60 x $0.30 + 40 x $3.75 + 10 x $15 per million tokens: 18 + 150 + 150 micro-USD.
      assert.equal(settled.costMicros, 318n);
    });

    test("a bundle with a negative cache price is refused naming the model and field", async () => {
      const models = [{ name: "m-bad", modelClass: "PRO_L", provider: "p1", inputMicrosPerMtok: 1, outputMicrosPerMtok: 1, cacheWriteMicrosPerMtok: -5 }];
      const err = await t.policy.applyBundle({ bundle: parseProtoJson(BundleSchema, { models }) }, admin).then(() => undefined, (e: Error) => e);
      assert.match(String(err?.message), /model "m-bad": field cache_write_micros_per_mtok: must be between 0 and/);
    });
  });
}

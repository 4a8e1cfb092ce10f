import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { fromJson } from "@bufbuild/protobuf";
import { AdmitRequestSchema, GetEffectivePolicyRequestSchema, SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { ApplyBundleRequestSchema, GetUsageRequestSchema } from "../gen/admission/v1/policy_service_pb.js";
import { adminToken, startTestControlPlane } from "./support/control-plane.js";
const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
const exampleBundle = readFileSync(new URL("../../deploy/examples/apply-bundle.json", import.meta.url), "utf8");
/** POSTs JSON over the Connect protocol, as the README's curl lines do. */
async function connect(t, path, body, headers = {}) {
    const res = await fetch(`http://127.0.0.1:${t.cp.httpPort}/${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: typeof body === "string" ? body : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) };
}
describe("operator examples from the README", () => {
    let t;
    before(async () => (t = await startTestControlPlane({ config: { demo: true } })));
    after(() => t.close());
    test("the example bundle is strict proto3 JSON (what grpcurl sends) and applies; dry run returns the diff", async () => {
        fromJson(ApplyBundleRequestSchema, JSON.parse(exampleBundle));
        const dry = await connect(t, "admission.v1.PolicyService/ApplyBundle", { ...JSON.parse(exampleBundle), dryRun: true }, { authorization: `Bearer ${adminToken}` });
        assert.equal(dry.status, 200);
        assert.ok(dry.body.changes.some((c) => c.id === "acme" && c.action === "CHANGE_ACTION_CREATE"));
        const applied = await connect(t, "admission.v1.PolicyService/ApplyBundle", exampleBundle, { authorization: `Bearer ${adminToken}`, "x-admission-actor": "jane" });
        assert.equal(applied.status, 200);
        assert.equal(applied.body.applied, true);
        const denied = await connect(t, "admission.v1.PolicyService/ApplyBundle", exampleBundle);
        assert.equal(denied.status, 401);
    });
    test("the README's Admit, Settle, GetEffectivePolicy and GetUsage bodies work over Connect", async () => {
        const key = t.cp.demoApiKey;
        const admitBody = { credential: key, task: "LLM2_DRAFT", inputTokens: "1200", maxOutputTokens: "9000" };
        fromJson(AdmitRequestSchema, admitBody);
        const admit = await connect(t, "admission.v1.AdmissionService/Admit", admitBody);
        assert.equal(admit.status, 200);
        assert.equal(admit.body.allowed, true);
        assert.equal(admit.body.maxOutputTokens, "4096");
        assert.deepEqual(admit.body.routes.map((r) => r.model), ["mock-pro", "mock-pro-backup"]);
        const settleBody = { reservationId: admit.body.reservationId, inputTokens: "1200", outputTokens: "850", model: "mock-pro", outcome: "OUTCOME_SUCCESS" };
        fromJson(SettleRequestSchema, settleBody);
        const settle = await connect(t, "admission.v1.AdmissionService/Settle", settleBody);
        assert.equal(settle.status, 200);
        assert.equal(settle.body.costMicros, String(Math.ceil((1200 * 2_500_000 + 850 * 10_000_000) / 1e6)));
        const explainBody = { tenant: "demo", user: "demo-user", task: "LLM2_DRAFT" };
        fromJson(GetEffectivePolicyRequestSchema, explainBody);
        const explain = await connect(t, "admission.v1.AdmissionService/GetEffectivePolicy", explainBody, { authorization: `Bearer ${adminToken}` });
        assert.equal(explain.body.plan, "PRO");
        const usageBody = { tenant: "demo", groupBy: ["USAGE_GROUP_BY_MODEL"] };
        fromJson(GetUsageRequestSchema, usageBody);
        const usage = await connect(t, "admission.v1.PolicyService/GetUsage", usageBody, { authorization: `Bearer ${adminToken}` });
        assert.equal(usage.body.outputTokens, "850");
        assert.deepEqual(usage.body.rows[0].group, { model: "mock-pro" });
    });
    test("the README names every grpcurl method it shows, and they exist", () => {
        for (const m of ["admission.v1.PolicyService/ApplyBundle", "admission.v1.AdmissionService/Admit", "admission.v1.AdmissionService/Settle", "admission.v1.AdmissionService/GetEffectivePolicy", "admission.v1.PolicyService/GetUsage"]) {
            assert.ok(readme.includes(m), m);
        }
    });
});
//# sourceMappingURL=operator-examples.test.js.map
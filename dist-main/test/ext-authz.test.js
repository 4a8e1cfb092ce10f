import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { fromBinary as decode } from "@bufbuild/protobuf";
import { CheckResponseSchema } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import { LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { admin, startTestControlPlane } from "./support/control-plane.js";
import { scenario, secretOf } from "./support/scenario.js";
import { meterUsed } from "./support/meter-used.js";
import { countInputTokens } from "../control-plane/token-counter.js";
/**
 * Encodes a CheckRequest field by field with Envoy's numbers, including fields
 * this service does not model (source address, metadata, header_map), the way
 * Envoy's ext_authz filter sends it.
 */
let sequence = 0;
function envoyCheckRequest(opts) {
    const http = new BinaryWriter();
    http.uint32((1 << 3) | 2).string(opts.id ?? `req-envoy-${++sequence}`); // id (Envoy's x-request-id)
    http.uint32((2 << 3) | 2).string("POST"); // method
    for (const [k, v] of Object.entries(opts.headers)) {
        http.uint32((3 << 3) | 2).fork().uint32((1 << 3) | 2).string(k).uint32((2 << 3) | 2).string(v).join(); // headers map entry
    }
    http.uint32((4 << 3) | 2).string(opts.path ?? "/v1/chat/completions"); // path
    http.uint32((5 << 3) | 2).string("llm.example.com"); // host
    http.uint32((9 << 3) | 0).int64(BigInt(opts.body?.length ?? 0)); // size
    http.uint32((10 << 3) | 2).string("HTTP/1.1"); // protocol
    if (opts.body !== undefined)
        http.uint32((11 << 3) | 2).string(opts.body); // body
    http.uint32((13 << 3) | 2).bytes(new Uint8Array([0x0a, 0x00])); // header_map (not modelled here)
    const request = new BinaryWriter();
    request.uint32((1 << 3) | 2).bytes(new BinaryWriter().uint32((1 << 3) | 0).int64(1795000000n).finish()); // time
    request.uint32((2 << 3) | 2).bytes(http.finish()); // http
    const source = new BinaryWriter();
    source.uint32((1 << 3) | 2).bytes(new Uint8Array([0x0a, 0x04, 0x0a, 0x02, 0x31, 0x30])); // address (not modelled)
    source.uint32((2 << 3) | 2).string("client-svc");
    const attrs = new BinaryWriter();
    attrs.uint32((1 << 3) | 2).bytes(source.finish());
    attrs.uint32((4 << 3) | 2).bytes(request.finish());
    for (const [k, v] of Object.entries(opts.contextExtensions ?? {})) {
        attrs.uint32((10 << 3) | 2).fork().uint32((1 << 3) | 2).string(k).uint32((2 << 3) | 2).string(v).join();
    }
    attrs.uint32((11 << 3) | 2).bytes(new Uint8Array([])); // metadata_context (not modelled)
    return new BinaryWriter().uint32((1 << 3) | 2).bytes(attrs.finish()).finish();
}
describe("Envoy ext_authz Check", () => {
    let t;
    let client;
    let now = Date.UTC(2026, 10, 23, 10);
    const check = (bytes) => new Promise((resolve, reject) => {
        client.makeUnaryRequest("/envoy.service.auth.v3.Authorization/Check", (b) => Buffer.from(b), (b) => decode(CheckResponseSchema, b), bytes, (err, res) => (err ? reject(err) : resolve(res)));
    });
    const headersOf = (list) => Object.fromEntries(list.map((h) => [h.header.key, h.header.value]));
    const used = (tenant) => meterUsed(t.admission, tenant, LimitKind.TOKENS, Window.MONTH);
    before(async () => {
        t = await startTestControlPlane({ deps: { clock: () => now } });
        await t.policy.applyBundle({
            bundle: scenario({ id: "env", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000 }], keys: [{ id: "ke" }] }, { id: "env-rate", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000 }, { kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 0 }], keys: [{ id: "kr" }] }),
        }, admin);
        client = new grpc.Client(t.address, grpc.credentials.createInsecure());
    });
    after(async () => {
        client.close();
        await t.close();
    });
    test("allowed: upstream headers, credential removed, x-ratelimit for the client; model and max tokens from the body", async () => {
        const body = JSON.stringify({ model: "m-pro", max_tokens: 99_999, messages: [{ role: "user", content: "Draft a claim for a widget" }] });
        const res = await check(envoyCheckRequest({ headers: { authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "DRAFT", "content-type": "application/json" }, body }));
        assert.equal(res.status?.code, 0);
        assert.equal(res.httpResponse.case, "okResponse");
        const ok = res.httpResponse.case === "okResponse" ? res.httpResponse.value : undefined;
        const up = headersOf(ok.headers);
        assert.ok(up["x-llm-reservation-id"].startsWith("r1."));
        assert.equal(up["x-llm-tenant"], "env");
        assert.equal(up["x-llm-max-tokens"], "2000", "clamped to the plan cap");
        assert.equal(up["x-llm-model"], "m-pro");
        assert.deepEqual(ok.headersToRemove, ["authorization"]);
        const client = headersOf(ok.responseHeadersToAdd);
        assert.equal(client["x-ratelimit-limit-tokens"], "1000000");
        // A gateway that can settle does so with the reservation id header.
        const settled = await t.admission.settle({ reservationId: up["x-llm-reservation-id"], inputTokens: 20n, outputTokens: 30n });
        assert.equal(settled.duplicate, false);
    });
    test("the task may come from the route's context_extensions", async () => {
        const res = await check(envoyCheckRequest({ headers: { authorization: `Bearer ${secretOf("ke")}`, "x-llm-model": "m-pro", "x-llm-max-tokens": "10" }, contextExtensions: { task: "DRAFT" } }));
        assert.equal(res.httpResponse.case, "okResponse");
    });
    test("input tokens are counted from the body exactly as the data plane counts them (chat, completions, embeddings)", async () => {
        const bodies = [
            ["/chat/completions", {
                    model: "m-pro", max_tokens: 10,
                    messages: [
                        { role: "system", content: "You draft patent claims." },
                        { role: "user", name: "ann", content: [{ type: "text", text: "Claim a widget; <|endoftext|> is just text" }, { type: "image_url", image_url: { url: "data:," } }] },
                    ],
                    tools: [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }],
                }],
            ["/completions", { model: "m-pro", max_tokens: 10, prompt: ["Claim 1: a widget", "Claim 2: a hinge"] }],
            ["/embeddings", { model: "m-pro", max_tokens: 10, input: "a widget with a spring-biased latch, a hinge, a detent and a lever that returns it to rest" }],
        ];
        for (const [endpoint, body] of bodies) {
            const before = await used("env");
            const res = await check(envoyCheckRequest({ headers: { authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "DRAFT" }, body: JSON.stringify(body) }));
            assert.equal(res.httpResponse.case, "okResponse", endpoint);
            const expected = countInputTokens(endpoint, body);
            assert.ok(expected > 10, `${endpoint}: a real count`);
            assert.equal(await used("env") - before, BigInt(expected + 10), `${endpoint}: input tokens + max_tokens reserved`);
            const up = headersOf(res.httpResponse.case === "okResponse" ? res.httpResponse.value.headers : []);
            await t.admission.settle({ reservationId: up["x-llm-reservation-id"], inputTokens: 1n, outputTokens: 1n });
        }
    });
    test("denials: the design's HTTP status, google.rpc code, JSON body, Retry-After; a denial reserves nothing", async () => {
        const before = await used("env");
        const cases = [
            [{}, undefined, 401, grpc.status.UNAUTHENTICATED, "unauthenticated"],
            [{ authorization: "Bearer nope" }, { task: "DRAFT" }, 401, grpc.status.UNAUTHENTICATED, "unauthenticated"],
            [{ authorization: `Bearer ${secretOf("ke")}` }, undefined, 400, grpc.status.INVALID_ARGUMENT, "invalid_request"],
            [{ authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "DIAGRAM" }, undefined, 403, grpc.status.PERMISSION_DENIED, "feature_not_in_plan"],
            [{ authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "NOPE" }, undefined, 403, grpc.status.PERMISSION_DENIED, "task_unknown"],
            [{ authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "DRAFT", "x-llm-model": "m-adv" }, undefined, 403, grpc.status.PERMISSION_DENIED, "model_not_allowed"],
            [{ authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "DRAFT", "x-llm-input-tokens": "60000" }, undefined, 413, grpc.status.INVALID_ARGUMENT, "request_too_large"],
            [{ authorization: `Bearer ${secretOf("kr")}`, "x-llm-task": "DRAFT" }, undefined, 429, grpc.status.RESOURCE_EXHAUSTED, "rate_limited"],
            [{ authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "DRAFT", "x-llm-max-tokens": "-5" }, undefined, 400, grpc.status.INVALID_ARGUMENT, "invalid_request"],
        ];
        for (const [headers, ext, http, code, reason] of cases) {
            const res = await check(envoyCheckRequest({ headers, contextExtensions: ext }));
            assert.equal(res.httpResponse.case, "deniedResponse", JSON.stringify(headers));
            const denied = res.httpResponse.case === "deniedResponse" ? res.httpResponse.value : undefined;
            assert.equal(denied.status?.code, http, `${reason}: HTTP ${denied.status?.code}`);
            assert.equal(res.status?.code, code);
            const body = JSON.parse(denied.body);
            assert.equal(body.error.code, reason);
            assert.ok(body.error.message.length > 0);
            assert.equal(headersOf(denied.headers)["content-type"], "application/json");
            if (http === 429)
                assert.ok(Number(headersOf(denied.headers)["retry-after"]) >= 1);
        }
        assert.equal(await used("env"), before, "denials reserved nothing");
    });
    test("non-JSON and truncated bodies are estimated from their size, never an exception", async () => {
        const auth = { authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "DRAFT", "x-envoy-auth-partial-body": "true" };
        const truncated = await check(envoyCheckRequest({ headers: auth, body: '{"model":"m-pro","messages":[{"role":"user","content":"abcdefgh' }));
        assert.equal(truncated.httpResponse.case, "okResponse");
        const binary = await check(envoyCheckRequest({ headers: auth, body: "\u0000\u0001 not json at all" }));
        assert.equal(binary.httpResponse.case, "okResponse");
    });
    test("a Check that is never settled is charged its estimate when its lease expires", async () => {
        const before = await used("env");
        const res = await check(envoyCheckRequest({ headers: { authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "DRAFT", "x-llm-max-tokens": "100", "x-llm-input-tokens": "40" } }));
        assert.equal(res.httpResponse.case, "okResponse");
        assert.equal(await used("env"), before + 140n);
        now += 5 * 60_000 + 1;
        await t.cp.settlement.sweep();
        assert.equal(await used("env"), before + 140n, "the estimate stands");
        const usage = await t.policy.getUsage({ tenant: "env", groupBy: [] }, admin);
        assert.ok(usage.requests >= 1n);
    });
    test("a retried Check with the same request id returns the same reservation", async () => {
        const req = envoyCheckRequest({ id: "retry-me", headers: { authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "DRAFT" } });
        const a = await check(req);
        const b = await check(req);
        const id = (r) => (r.httpResponse.case === "okResponse" ? headersOf(r.httpResponse.value.headers)["x-llm-reservation-id"] : "");
        assert.equal(id(a), id(b));
    });
    test("malformed protobuf is rejected by the transport, and the server keeps serving", async () => {
        await assert.rejects(check(new Uint8Array([0xff, 0xff, 0xff, 0x0f])));
        const ok = await check(envoyCheckRequest({ headers: { authorization: `Bearer ${secretOf("ke")}`, "x-llm-task": "DRAFT" } }));
        assert.equal(ok.httpResponse.case, "okResponse");
    });
});
//# sourceMappingURL=ext-authz.test.js.map
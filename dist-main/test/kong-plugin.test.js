import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { createServer as netServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { Outcome } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { closeControlPlaneClients, Plugin, Priority, Schema, stateKey, Version } from "../deploy/kong/admission-plugin.js";
import { PluginConfigError } from "../deploy/kong/schema.js";
import { countInputTokens, countTextTokens } from "../control-plane/token-counter.js";
import { admin, startTestControlPlane } from "./support/control-plane.js";
import { KongRequest, phaseOrder } from "./support/fake-kong.js";
import { scenario, secretOf } from "./support/scenario.js";
/** The Kong service: an OpenAI-compatible provider answering with usage it chose (not the tokenizer's), JSON or SSE. */
class Provider {
    server;
    url = "";
    usage = { prompt_tokens: 321, completion_tokens: 54 };
    reportUsage = true;
    /** Answer with this error status instead. */
    failWith = 0;
    received = [];
    async start() {
        this.server = createServer((req, res) => void this.handle(req, res));
        await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
        this.url = `http://127.0.0.1:${this.server.address().port}`;
    }
    close() {
        return new Promise((resolve) => {
            this.server.close(() => resolve());
            this.server.closeAllConnections();
        });
    }
    async handle(req, res) {
        let raw = "";
        for await (const chunk of req)
            raw += chunk;
        const body = JSON.parse(raw);
        this.received.push({ path: req.url, headers: req.headers, body });
        const usage = { ...this.usage, total_tokens: this.usage.prompt_tokens + this.usage.completion_tokens };
        // The provider account's own limits: they must not reach the client.
        const own = { "x-ratelimit-limit-requests": "5000", "x-ratelimit-limit-tokens": "800000", "x-request-id": "provider-req-1" };
        if (this.failWith) {
            res.writeHead(this.failWith, { "content-type": "application/json", ...own });
            res.end(JSON.stringify({ error: { message: "overloaded", type: "server_error", code: null, param: null } }));
            return;
        }
        if (!body.stream) {
            res.writeHead(200, { "content-type": "application/json", ...own });
            res.end(JSON.stringify({
                id: "c1", object: "chat.completion", created: 1, model: body.model,
                choices: [{ index: 0, message: { role: "assistant", content: "A widget comprising a frame" }, finish_reason: "stop" }],
                ...(this.reportUsage ? { usage } : {}),
            }));
            return;
        }
        res.writeHead(200, { "content-type": "text/event-stream", ...own });
        for (const word of ["A", " widget", " comprising", " a", " frame"]) {
            res.write(`data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model: body.model, choices: [{ index: 0, delta: { content: word } }] })}\n\n`);
        }
        res.write(`data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model: body.model, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}\n\n`);
        if (body.stream_options?.include_usage)
            res.write(`data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model: body.model, choices: [], usage })}\n\n`);
        res.end("data: [DONE]\n\n");
    }
}
async function deadAddress() {
    return new Promise((resolve) => {
        const s = netServer().listen(0, "127.0.0.1", () => {
            const port = s.address().port;
            s.close(() => resolve(`127.0.0.1:${port}`));
        });
    });
}
const prompt = [{ role: "user", content: "Draft a claim for a widget with a hinge and a latch" }];
function chat(body, headers = {}) {
    return {
        method: "POST",
        path: "/v1/chat/completions",
        headers: { authorization: `Bearer ${secretOf("kk")}`, "x-llm-task": "DRAFT", "content-type": "application/json", ...headers },
        body: typeof body === "string" ? body : JSON.stringify(body),
    };
}
describe("Kong plugin (kong-js-pluginserver) against a real control plane", () => {
    let t;
    const provider = new Provider();
    let plugin;
    const settles = [];
    const run = (p, request, options = {}) => new KongRequest(request).run(p, { serviceUrl: provider.url, ...options });
    const usage = (tenant = "kong") => t.policy.getUsage({ tenant }, admin);
    const meter = async (kind, tenant = "kong") => {
        const limits = (await t.admission.getEffectivePolicy({ tenant }, admin)).limits;
        return limits.find((l) => l.kind === kind && (kind === LimitKind.CONCURRENCY || l.window === Window.MONTH || l.window === Window.MINUTE)).used;
    };
    /** Calls come phase by phase in Kong's order. */
    const inKongOrder = (r) => {
        const phases = r.calls.map((c) => phaseOrder.indexOf(c.phase));
        assert.deepEqual(phases, [...phases].sort((a, b) => a - b), "phases ran in Kong's order");
    };
    before(async () => {
        t = await startTestControlPlane();
        await t.policy.applyBundle({
            bundle: scenario({ id: "kong", limits: [{ kind: "CONCURRENCY", per: "TENANT", value: 2 }], users: [{ id: "ann" }], keys: [{ id: "kk", user: "ann" }] }, { id: "kong-rate", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 0 }], keys: [{ id: "kr" }] }),
        }, admin);
        // Every Settle that reaches the control plane, whichever transport carried it.
        const settle = t.cp.settlement.settle.bind(t.cp.settlement);
        t.cp.settlement.settle = (req) => {
            settles.push(req);
            return settle(req);
        };
        await provider.start();
        plugin = new Plugin({ control_plane_address: t.address });
    });
    after(async () => {
        closeControlPlaneClients();
        await provider.close();
        await t.close();
    });
    test("loads the way kong-js-pluginserver loads it: require() of the built file, Plugin/Schema/Version/Priority", () => {
        const dir = new URL("../deploy/kong/plugins/", import.meta.url);
        // The plugin server tries every file of its directory as a plugin: only this one (and its source map) is there.
        assert.deepEqual(readdirSync(dir).sort(), ["llm-admission.js", "llm-admission.js.map"]);
        const mod = createRequire(import.meta.url)("../deploy/kong/plugins/llm-admission.js");
        assert.equal(typeof mod.Plugin, "function");
        for (const phase of ["access", "response", "log"])
            assert.equal(typeof mod.Plugin.prototype[phase], "function", phase);
        assert.equal(mod.Version, Version);
        assert.equal(mod.Priority, Priority);
        assert.ok(Priority > 801 && Priority < 951, "after request-size-limiting, before request-transformer");
        assert.deepEqual(mod.Schema, Schema);
        assert.deepEqual(Schema.map((f) => Object.keys(f)[0]), [
            "control_plane_address", "admit_timeout_ms", "settle_timeout_ms", "default_task", "failure_policy", "tls", "tls_ca_file", "max_body_bytes",
        ]);
        assert.throws(() => new Plugin({ control_plane_address: t.address, failure_policy: "MAYBE" }), PluginConfigError);
        assert.throws(() => new Plugin({ control_plane_address: "no-port" }), PluginConfigError);
        assert.throws(() => new Plugin({ control_plane_address: t.address, default_task: "not a task!" }), PluginConfigError);
        assert.throws(() => new Plugin({ control_plane_address: t.address, tls: true, tls_ca_file: "/nonexistent/ca.pem" }), /tls_ca_file/);
    });
    test("allowed: upstream headers, clamped body, no client credential upstream; x-ratelimit-* for the client; the ledger has the provider's usage exactly", async () => {
        const before = await usage();
        const sent = settles.length;
        const r = await run(plugin, chat({ model: "m-pro", max_tokens: 99_999, messages: prompt }));
        inKongOrder(r);
        assert.equal(r.response.status, 200);
        assert.equal(r.response.source, "service");
        const up = r.serviceRequest;
        assert.match(up.headers.get("x-llm-reservation-id"), /^r1\./);
        assert.equal(up.headers.get("x-llm-tenant"), "kong");
        assert.equal(up.headers.get("x-llm-user"), "ann");
        assert.equal(up.headers.get("x-llm-max-tokens"), "2000", "clamped to the plan's OUTPUT_TOKENS cap");
        assert.equal(up.headers.get("x-llm-model"), "m-pro");
        assert.equal(up.headers.get("x-llm-provider"), "p1");
        assert.equal(up.headers.get("accept-encoding"), "identity");
        assert.equal(up.headers.has("authorization"), false, "the provider never sees the client's credential");
        const body = JSON.parse(up.body);
        assert.equal(body.max_tokens, 2000);
        assert.equal(body.model, "m-pro");
        assert.deepEqual(body.messages, prompt);
        const received = provider.received.at(-1);
        assert.deepEqual(received.body, body, "the provider got the rewritten body");
        assert.equal(received.headers.authorization, undefined);
        assert.equal(received.headers["x-llm-reservation-id"], up.headers.get("x-llm-reservation-id"));
        const client = r.response.headers;
        assert.equal(client.get("x-ratelimit-limit-tokens"), "10000000", "the tenant's limit, not the provider account's");
        assert.equal(client.get("x-ratelimit-limit-concurrency"), "2");
        assert.equal(client.has("x-ratelimit-limit-requests"), false, "the provider account's own limit is dropped");
        assert.equal(JSON.parse(r.response.body).choices[0].message.content, "A widget comprising a frame");
        assert.ok(r.methodsIn("access").includes("kong.request.get_raw_body"));
        assert.ok(r.methodsIn("access").includes("kong.service.request.set_raw_body"));
        assert.ok(!r.methodsIn("access").includes("kong.response.exit"));
        assert.ok(r.methodsIn("response").includes("kong.service.response.get_raw_body"));
        assert.deepEqual(r.methodsIn("log"), ["kong.ctx.shared.get", "kong.ctx.shared.set"]);
        const after = await usage();
        assert.equal(after.requests - before.requests, 1n);
        assert.equal(after.inputTokens - before.inputTokens, 321n, "input tokens as the provider reported them");
        assert.equal(after.outputTokens - before.outputTokens, 54n);
        assert.equal(after.costMicros - before.costMicros, 321n * 1n + 54n * 2n);
        assert.equal(settles.length - sent, 1);
        const s = settles.at(-1);
        assert.equal(s.reservationId, up.headers.get("x-llm-reservation-id"));
        assert.equal(s.outcome, Outcome.SUCCESS);
        assert.equal(s.estimated, false);
        assert.equal(s.model, "m-pro");
        assert.equal(s.provider, "p1");
        assert.equal(await meter(LimitKind.CONCURRENCY), 0n, "no reservation left open");
    });
    test("a stream: usage asked for, max tokens split across choices, usage read from the SSE usage chunk", async () => {
        provider.usage = { prompt_tokens: 77, completion_tokens: 901 };
        try {
            const before = await usage();
            const r = await run(plugin, chat({ model: "m-pro", stream: true, n: 2, max_tokens: 3000, messages: prompt }));
            assert.equal(r.response.status, 200);
            const body = JSON.parse(r.serviceRequest.body);
            assert.equal(body.stream, true);
            assert.deepEqual(body.stream_options, { include_usage: true });
            assert.equal(body.max_tokens, 1000, "the 2000 cap over n = 2 choices");
            assert.match(r.response.body, /^data: /);
            assert.match(r.response.body, /data: \[DONE\]/);
            assert.equal(r.response.headers.get("content-type"), "text/event-stream");
            const after = await usage();
            assert.equal(after.inputTokens - before.inputTokens, 77n);
            assert.equal(after.outputTokens - before.outputTokens, 901n);
            assert.equal(settles.at(-1).estimated, false);
            assert.equal(await meter(LimitKind.CONCURRENCY), 0n);
        }
        finally {
            provider.usage = { prompt_tokens: 321, completion_tokens: 54 };
        }
    });
    test("no usage in the answer: the prompt and the generated text, counted with the data plane's tokenizer, marked estimated", async () => {
        provider.reportUsage = false;
        try {
            const request = { model: "m-pro", max_tokens: 50, messages: prompt };
            const r = await run(plugin, chat(request));
            assert.equal(r.response.status, 200);
            const s = settles.at(-1);
            assert.equal(s.estimated, true);
            assert.equal(s.inputTokens, BigInt(countInputTokens("/chat/completions", request)));
            assert.equal(s.outputTokens, BigInt(countTextTokens("A widget comprising a frame")));
        }
        finally {
            provider.reportUsage = true;
        }
    });
    test("denials end the request in access with the decision's status, JSON body and headers; nothing reserved, nothing sent upstream", async () => {
        const tokensBefore = await meter(LimitKind.TOKENS);
        const rateBefore = await usage("kong-rate");
        const settlesBefore = settles.length;
        const upstreamBefore = provider.received.length;
        const small = new Plugin({ control_plane_address: t.address, max_body_bytes: 1_000 });
        const cases = [
            ["bad key", chat({ model: "m-pro", messages: prompt }, { authorization: "Bearer ak_not-a-key" }), 401, "unauthenticated"],
            ["no credential", { ...chat({ model: "m-pro", messages: prompt }), headers: { "x-llm-task": "DRAFT" } }, 401, "unauthenticated"],
            ["over the limit", chat({ model: "m-pro", messages: prompt }, { authorization: `Bearer ${secretOf("kr")}` }), 429, "rate_limited"],
            ["unknown task", chat({ model: "m-pro", messages: prompt }, { "x-llm-task": "NOPE" }), 403, "task_unknown"],
            ["no task", { ...chat({ model: "m-pro", messages: prompt }), headers: { authorization: `Bearer ${secretOf("kk")}` } }, 400, "invalid_request"],
            ["malformed JSON", chat('{"model":"m-pro","messages":[{"role":"user","content":"trunc'), 400, "invalid_request"],
            ["not an object", chat("[1,2,3]"), 400, "invalid_request"],
            ["model not allowed", chat({ model: "m-adv", messages: prompt }), 403, "model_not_allowed"],
            ["absurd max_tokens", chat({ model: "m-pro", max_tokens: -5, messages: prompt }), 400, "invalid_request"],
            ["not an LLM route", { ...chat({}), path: "/v1/files" }, 404, "unknown_route"],
            ["no headers, no body", { path: "/v1/chat/completions" }, 401, "unauthenticated"],
            ["absurd size", chat({ model: "m-pro", messages: [{ role: "user", content: "x".repeat(5_000) }] }), 413, "request_too_large", small],
        ];
        for (const [name, request, status, code, p] of cases) {
            const r = await run(p ?? plugin, request);
            inKongOrder(r);
            assert.equal(r.response.status, status, name);
            assert.equal(r.response.source, "exit", name);
            assert.equal(r.response.headers.get("content-type"), "application/json", name);
            assert.match(r.response.headers.get("x-request-id"), /^kong-/, name);
            const body = JSON.parse(r.response.body);
            assert.equal(body.error.code, code, name);
            assert.ok(body.error.message.length > 0, name);
            assert.equal(r.methodsIn("access").filter((m) => m === "kong.response.exit").length, 1, name);
            assert.deepEqual(r.methodsIn("response"), [], `${name}: no response phase after an exit`);
            assert.deepEqual(r.methodsIn("log"), ["kong.ctx.shared.get"], `${name}: nothing to settle`);
            assert.equal(r.serviceRequest, undefined, `${name}: the service was not called`);
            if (status === 429) {
                assert.ok(Number(r.response.headers.get("retry-after")) >= 1, "Retry-After");
                assert.equal(r.response.headers.get("x-ratelimit-limit-requests"), "0");
                assert.equal(body.error.type, "rate_limit_error");
            }
        }
        assert.equal(provider.received.length, upstreamBefore);
        assert.equal(settles.length, settlesBefore);
        assert.equal(await meter(LimitKind.TOKENS), tokensBefore, "denials reserved nothing");
        assert.equal(await meter(LimitKind.CONCURRENCY), 0n);
        assert.equal((await usage("kong-rate")).requests, rateBefore.requests);
    });
    test("the same denial body and headers as the data plane's, for the same decision", async () => {
        const { denialResponse } = await import("../data-plane/openai-error.js");
        const r = await run(plugin, chat({ model: "m-pro", messages: prompt }, { authorization: `Bearer ${secretOf("kr")}` }));
        const decision = await t.admission.admit({ credential: secretOf("kr"), task: "DRAFT", model: "m-pro", inputTokens: 10n, maxOutputTokens: 10n });
        const expected = denialResponse(decision, r.response.headers.get("x-request-id"));
        const got = JSON.parse(r.response.body).error;
        const want = JSON.parse(expected.body).error;
        for (const key of ["type", "code", "reason", "limit", "used", "limit_kind", "limit_window", "limit_per"])
            assert.deepEqual(got[key], want[key], key);
        for (const name of Object.keys(expected.headers))
            assert.ok(r.response.headers.has(name), name);
    });
    test("control plane unreachable: 503 with FAIL_CLOSED; forwarded unmetered, with a warning, under FAIL_OPEN", async () => {
        const address = await deadAddress();
        const upstreamBefore = provider.received.length;
        const closed = await run(new Plugin({ control_plane_address: address, admit_timeout_ms: 1_000 }), chat({ model: "m-pro", messages: prompt }));
        assert.equal(closed.response.status, 503);
        assert.equal(closed.response.headers.get("retry-after"), "1");
        assert.equal(JSON.parse(closed.response.body).error.code, "unavailable");
        assert.equal(provider.received.length, upstreamBefore, "nothing forwarded");
        const settlesBefore = settles.length;
        const open = await run(new Plugin({ control_plane_address: address, admit_timeout_ms: 1_000, failure_policy: "FAIL_OPEN" }), chat({ model: "m-pro", messages: prompt }));
        assert.equal(open.response.status, 200);
        assert.match(open.response.headers.get("x-admission-warnings"), /unmetered/);
        assert.equal(open.serviceRequest.headers.has("authorization"), false);
        assert.equal(settles.length, settlesBefore, "no reservation, nothing to settle");
    });
    test("settles exactly once when the log phase runs twice, one after the other or at once", async () => {
        const before = await usage();
        const sent = settles.length;
        const twice = await run(plugin, chat({ model: "m-pro", messages: prompt }), { logRuns: 2 });
        assert.deepEqual(twice.methodsIn("log"), ["kong.ctx.shared.get", "kong.ctx.shared.set", "kong.ctx.shared.get"]);
        const atOnce = await run(plugin, chat({ model: "m-pro", messages: prompt }), { logRuns: 0, concurrentLogRuns: 3 });
        assert.equal(JSON.parse(atOnce.ctxShared.get(stateKey)).settled, true);
        assert.equal(settles.length - sent, 2, "one Settle per request");
        const after = await usage();
        assert.equal(after.requests - before.requests, 2n);
        assert.equal(after.inputTokens - before.inputTokens, 2n * 321n);
        assert.equal(after.outputTokens - before.outputTokens, 2n * 54n);
    });
    test("the provider fails: its answer reaches the client with the tenant's headers; settled as UPSTREAM_ERROR, nothing charged", async () => {
        provider.failWith = 503;
        try {
            const before = await usage();
            const r = await run(plugin, chat({ model: "m-pro", messages: prompt }));
            assert.equal(r.response.status, 503);
            assert.equal(JSON.parse(r.response.body).error.message, "overloaded");
            assert.equal(r.response.headers.get("x-ratelimit-limit-tokens"), "10000000");
            const s = settles.at(-1);
            assert.equal(s.outcome, Outcome.UPSTREAM_ERROR);
            assert.equal(s.inputTokens + s.outputTokens, 0n);
            const after = await usage();
            assert.equal(after.requests - before.requests, 1n);
            assert.equal(after.inputTokens + after.outputTokens, before.inputTokens + before.outputTokens);
            assert.equal(await meter(LimitKind.CONCURRENCY), 0n);
        }
        finally {
            provider.failWith = 0;
        }
    });
    test("a PDK failure in access ends the request (500), never forwards it as it came; its reservation is settled", async () => {
        const sent = settles.length;
        const upstreamBefore = provider.received.length;
        const r = await run(plugin, chat({ model: "m-pro", messages: prompt }), { failing: "kong.service.request.set_raw_body" });
        assert.equal(r.response.status, 500);
        assert.equal(JSON.parse(r.response.body).error.code, "internal_error");
        assert.equal(r.serviceRequest, undefined);
        assert.equal(provider.received.length, upstreamBefore);
        assert.equal(settles.length - sent, 1);
        assert.equal(settles.at(-1).inputTokens + settles.at(-1).outputTokens, 0n);
        assert.equal(await meter(LimitKind.CONCURRENCY), 0n);
    });
    test("a request that never reached the provider, or whose provider was unreachable, is still settled (nothing charged) and releases its reservation", async () => {
        const before = await usage();
        const sent = settles.length;
        const unreachable = await run(plugin, chat({ model: "m-pro", messages: prompt }), { serviceUrl: `http://${await deadAddress()}` });
        assert.equal(unreachable.response.status, 502);
        assert.equal(unreachable.response.source, "error");
        assert.deepEqual(unreachable.methodsIn("response"), [], "no response phase without an answer");
        const ended = await run(plugin, chat({ model: "m-pro", messages: prompt }), { laterPluginExit: { status: 403, body: "{\"message\":\"terminated\"}" } });
        assert.equal(ended.response.status, 403);
        assert.equal(settles.length - sent, 2);
        for (const s of settles.slice(sent)) {
            assert.equal(s.outcome, Outcome.UPSTREAM_ERROR);
            assert.equal(s.inputTokens, 0n);
            assert.equal(s.outputTokens, 0n);
            assert.equal(s.estimated, false);
        }
        assert.deepEqual(settles.slice(sent).map((s) => s.reservationId), [unreachable, ended].map((r) => JSON.parse(r.ctxShared.get(stateKey)).reservationId));
        const after = await usage();
        assert.equal(after.requests - before.requests, 2n);
        assert.equal(after.inputTokens + after.outputTokens, before.inputTokens + before.outputTokens);
        assert.equal(await meter(LimitKind.CONCURRENCY), 0n, "both reservations released");
    });
});
//# sourceMappingURL=kong-plugin.test.js.map
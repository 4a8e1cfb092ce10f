import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import pino from "pino";
import { startDataPlane } from "../data-plane/server.js";
import { loadDataPlaneConfig } from "../data-plane/config.js";
import { admin, startTestControlPlane } from "./support/control-plane.js";
import { scenario, secretOf } from "./support/scenario.js";
import { freePort } from "./support/free-port.js";
/** A provider written for the test: reports exact usage, can fail, stall, or answer garbage. */
class TestProvider {
    server;
    port = 0;
    mode = "ok";
    received = [];
    usage = { prompt_tokens: 123, completion_tokens: 45 };
    async start() {
        this.server = createServer((req, res) => void this.handle(req, res));
        await new Promise((r) => this.server.listen(0, "127.0.0.1", r));
        this.port = this.server.address().port;
    }
    async handle(req, res) {
        let raw = "";
        for await (const chunk of req)
            raw += chunk;
        const body = JSON.parse(raw);
        this.received.push({ path: req.url, body, authorization: req.headers.authorization });
        if (this.mode === "fail")
            return void res.writeHead(503).end("overloaded");
        if (this.mode === "garbage")
            return void res.writeHead(200, { "content-type": "application/json" }).end("<<not json at all>> lorem ipsum dolor sit amet");
        const usage = { ...this.usage, total_tokens: this.usage.prompt_tokens + this.usage.completion_tokens };
        if (!body.stream) {
            res.writeHead(200, { "content-type": "application/json" });
            return void res.end(JSON.stringify({ id: "c1", object: "chat.completion", created: 1, model: body.model, choices: [{ index: 0, message: { role: "assistant", content: "hello there" }, finish_reason: "stop" }], usage }));
        }
        res.writeHead(200, { "content-type": "text/event-stream" });
        const words = ["one", " two", " three", " four", " five", " six"];
        for (const [i, w] of words.entries()) {
            res.write(`data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model: body.model, choices: [{ index: 0, delta: { content: w } }] })}\n\n`);
            if (this.mode === "slow" && i >= 1)
                await new Promise((r) => setTimeout(r, 150));
            if (res.destroyed)
                return;
        }
        // The usage chunk also carries choices, as some providers send it.
        res.write(`data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model: body.model, choices: [{ index: 0, delta: {}, finish_reason: "stop" }], usage: body.stream_options?.include_usage ? usage : undefined })}\n\n`);
        res.end("data: [DONE]\n\n");
    }
}
describe("data plane with the openai SDK", () => {
    let cp;
    let dp;
    const primary = new TestProvider();
    const backup = new TestProvider();
    const spoolDir = mkdtempSync(join(tmpdir(), "adm-dp-"));
    const cpDataDir = mkdtempSync(join(tmpdir(), "adm-dp-cp-"));
    let cpPort = 0;
    const client = (key = "kd", extra = {}) => new OpenAI({ baseURL: `http://127.0.0.1:${dp.port}/v1`, apiKey: secretOf(key), maxRetries: 0, defaultHeaders: { "x-llm-task": "DRAFT", ...extra } });
    const usage = () => cp.policy.getUsage({ tenant: "dp" }, admin);
    before(async () => {
        await primary.start();
        await backup.start();
        cpPort = await freePort();
        // No drain on stop: the restart test wants streams cut like a crash would.
        cp = await startTestControlPlane({ dataDir: cpDataDir, config: { grpcPort: cpPort, shutdownGraceMs: 0 } });
        await cp.policy.applyBundle({
            bundle: scenario({ id: "dp", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 10_000_000 }], keys: [{ id: "kd" }] }, { id: "tiny", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 1 }], keys: [{ id: "kt" }] }, { id: "broke", limits: [{ kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 0 }], keys: [{ id: "kb" }] }),
        }, admin);
        const config = { ...loadDataPlaneConfig({}), host: "127.0.0.1", port: 0, controlPlaneAddr: `127.0.0.1:${cpPort}`, spoolDir, maxBodyBytes: 1024 * 1024 };
        dp = await startDataPlane(config, {
            logger: pino({ level: "silent" }),
            providers: [
                { name: "p1", baseUrl: `http://127.0.0.1:${primary.port}/v1`, apiKey: "sk-provider-one" },
                { name: "p2", baseUrl: `http://127.0.0.1:${backup.port}/v1`, apiKey: "sk-provider-two" },
            ],
        });
    });
    after(async () => {
        await dp.close();
        await cp.stop();
        primary.server.close();
        backup.server.close();
        rmSync(spoolDir, { recursive: true, force: true });
        rmSync(cpDataDir, { recursive: true, force: true });
    });
    test("non-streaming: routed, clamped, provider key injected, and the ledger has the provider's usage exactly", async () => {
        const before = await usage();
        const r = await client().chat.completions.create({ model: "m-pro", max_tokens: 999_999, messages: [{ role: "user", content: "Draft claim 1" }] });
        assert.equal(r.choices[0].message.content, "hello there");
        const sent = primary.received.at(-1);
        assert.equal(sent.body.max_tokens, 2000, "clamped to the plan's OUTPUT_TOKENS cap");
        assert.equal(sent.authorization, "Bearer sk-provider-one", "the provider key replaces the client's credential");
        await waitFor(async () => (await usage()).requests === before.requests + 1n);
        const after = await usage();
        assert.equal(after.inputTokens - before.inputTokens, 123n);
        assert.equal(after.outputTokens - before.outputTokens, 45n);
    });
    test("streaming: passed through, include_usage requested, usage read from the final chunk", async () => {
        const before = await usage();
        primary.usage = { prompt_tokens: 77, completion_tokens: 6 };
        const stream = await client().chat.completions.create({ model: "m-pro", stream: true, messages: [{ role: "user", content: "stream it" }] });
        let text = "";
        for await (const chunk of stream)
            text += chunk.choices[0]?.delta?.content ?? "";
        assert.equal(text, "one two three four five six");
        assert.equal(primary.received.at(-1).body.stream_options.include_usage, true);
        await waitFor(async () => (await usage()).requests === before.requests + 1n);
        const after = await usage();
        assert.equal(after.inputTokens - before.inputTokens, 77n);
        assert.equal(after.outputTokens - before.outputTokens, 6n);
        primary.usage = { prompt_tokens: 123, completion_tokens: 45 };
    });
    test("denials surface as the SDK's typed errors with the right status and headers", async () => {
        await assert.rejects(client("nobody").chat.completions.create({ model: "m-pro", messages: [{ role: "user", content: "x" }] }), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
        await assert.rejects(client().chat.completions.create({ model: "m-adv", messages: [{ role: "user", content: "x" }] }), (e) => e instanceof OpenAI.PermissionDeniedError && e.status === 403);
        await assert.rejects(client("kd", { "x-llm-task": "DIAGRAM" }).chat.completions.create({ model: "m-pro", messages: [{ role: "user", content: "x" }] }), (e) => e instanceof OpenAI.PermissionDeniedError);
        await client("kt").chat.completions.create({ model: "m-pro", messages: [{ role: "user", content: "x" }] });
        await assert.rejects(client("kt").chat.completions.create({ model: "m-pro", messages: [{ role: "user", content: "x" }] }), (e) => {
            assert.ok(e instanceof OpenAI.RateLimitError);
            assert.equal(e.status, 429);
            assert.ok(Number(e.headers?.get("retry-after")) >= 1);
            assert.equal(e.headers?.get("x-ratelimit-remaining-requests"), "0");
            assert.equal(e.error.code, "rate_limited");
            return true;
        });
        await assert.rejects(client("kb").chat.completions.create({ model: "m-pro", messages: [{ role: "user", content: "x" }] }), (e) => e instanceof OpenAI.APIError && e.status === 402);
        const huge = "word ".repeat(60_000);
        await assert.rejects(client().chat.completions.create({ model: "m-pro", messages: [{ role: "user", content: huge }] }), (e) => e instanceof OpenAI.APIError && e.status === 413);
    });
    test("failover: a provider failing before the first byte hands the request to the next candidate", async () => {
        primary.mode = "fail";
        const before = await usage();
        try {
            const r = await client().chat.completions.create({ model: "m-pro", messages: [{ role: "user", content: "fail over" }] });
            assert.equal(r.choices[0].message.content, "hello there");
            assert.equal(backup.received.at(-1).body.model, "m-pro-2");
            assert.equal(backup.received.at(-1).authorization, "Bearer sk-provider-two");
        }
        finally {
            primary.mode = "ok";
        }
        await waitFor(async () => (await usage()).requests === before.requests + 1n);
        const rows = await cp.policy.getUsage({ tenant: "dp", groupBy: [3] }, admin);
        assert.ok(rows.rows.some((r) => r.group.model === "m-pro-2"), "settled against the model that served it");
    });
    test("a client that aborts mid-stream is settled with what it received", async () => {
        primary.mode = "slow";
        const before = await usage();
        try {
            const controller = new AbortController();
            const stream = await client().chat.completions.create({ model: "m-pro", stream: true, messages: [{ role: "user", content: "abort me" }] }, { signal: controller.signal });
            let received = 0;
            try {
                for await (const _chunk of stream)
                    if (++received === 2)
                        controller.abort();
            }
            catch {
                // the SDK reports the abort
            }
            assert.equal(received, 2);
        }
        finally {
            primary.mode = "ok";
        }
        await waitFor(async () => (await usage()).requests === before.requests + 1n);
        const after = await usage();
        const out = after.outputTokens - before.outputTokens;
        assert.ok(out >= 2n && out < 6n, `estimated from the streamed text: ${out} tokens`);
        const audit = await cp.policy.getUsage({ tenant: "dp", start: undefined }, admin);
        assert.ok(audit.requests > 0n);
    });
    test("bad input: clear errors, and nothing left reserved", async () => {
        const base = `http://127.0.0.1:${dp.port}`;
        const auth = { authorization: `Bearer ${secretOf("kd")}`, "x-llm-task": "DRAFT", "content-type": "application/json" };
        assert.equal((await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: auth, body: "{not json" })).status, 400);
        assert.equal((await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: auth, body: JSON.stringify({ model: 7, messages: [] }) })).status, 400);
        assert.equal((await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: auth, body: JSON.stringify({ model: "m-pro", max_tokens: -1, messages: [] }) })).status, 400);
        assert.equal((await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: auth, body: "x".repeat(1_100_000) })).status, 413);
        assert.equal((await fetch(`${base}/v2/anything`, { method: "POST", headers: auth, body: "{}" })).status, 404);
        assert.equal((await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { ...auth, "x-llm-task": "DRAFT<script>" }, body: "{}" })).status, 400);
        const noTask = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { authorization: auth.authorization }, body: "{}" });
        assert.equal(noTask.status, 400);
        assert.equal((await noTask.json()).error.type, "invalid_request_error");
        const before = await usage();
        primary.mode = "garbage";
        backup.mode = "garbage";
        try {
            const res = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: auth, body: JSON.stringify({ model: "m-pro", messages: [{ role: "user", content: "hi" }] }) });
            assert.equal(res.status, 502, "a provider's garbage becomes a clear error");
            assert.match((await res.json()).error.message, /answered a body that is not JSON/);
        }
        finally {
            primary.mode = "ok";
            backup.mode = "ok";
        }
        await waitFor(async () => (await usage()).requests === before.requests + 1n);
        const after = await usage();
        assert.ok(after.outputTokens > before.outputTokens, "no usage reported: estimated from the body, never a silent zero");
        const explained = await cp.admission.getEffectivePolicy({ credential: secretOf("kd") });
        assert.equal(explained.limits.find((l) => l.kind === 4)?.used ?? 0n, 0n, "no concurrency slot left taken");
    });
    test("GET /v1/models lists the models the credential may use", async () => {
        const models = await client().models.list();
        assert.deepEqual(models.data.map((m) => m.id).sort(), ["m-base", "m-pro", "m-pro-2"]);
    });
    test("the control plane restarted mid-load loses no settle (spooled, then replayed)", async () => {
        const before = await usage();
        const received = primary.received.length;
        primary.mode = "slow";
        const inflight = Array.from({ length: 5 }, (_, i) => (async () => {
            const stream = await client().chat.completions.create({ model: "m-pro", stream: true, messages: [{ role: "user", content: `load ${i}` }] });
            for await (const _c of stream)
                ;
        })());
        // All five admitted and streaming (not a fixed wait: on a loaded machine an Admit can take longer).
        await waitFor(async () => primary.received.length >= received + 5, 5_000);
        await cp.stop();
        await Promise.all(inflight);
        primary.mode = "ok";
        await waitFor(async () => dp.spool.pending(), 5_000);
        cp = await startTestControlPlane({ dataDir: cpDataDir, config: { grpcPort: cpPort, shutdownGraceMs: 0 } });
        await waitFor(async () => (await dp.replaySpool().catch(() => 0), !dp.spool.pending()), 15_000);
        const after = await usage();
        assert.equal(after.requests - before.requests, 5n);
        assert.equal(after.outputTokens - before.outputTokens, 5n * 45n);
    });
});
async function waitFor(check, timeoutMs = 5_000) {
    const deadline = Date.now() + timeoutMs;
    while (!(await check().catch(() => false))) {
        if (Date.now() > deadline)
            throw new Error("timed out");
        await new Promise((r) => setTimeout(r, 25));
    }
}
//# sourceMappingURL=data-plane.test.js.map
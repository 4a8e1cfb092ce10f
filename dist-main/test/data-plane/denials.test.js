import assert from "node:assert/strict";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { Stack, secret } from "./support/stack.js";
const chat = (client, body = {}) => client.chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "hello" }], ...body });
/** Resolves with the error a call rejects with. */
async function failure(call) {
    const err = await call.then(() => undefined, (e) => e);
    assert.ok(err instanceof OpenAI.APIError, `expected an APIError, got ${String(err)}`);
    return err;
}
/** Denials as the SDK's typed errors with OpenAI-style bodies, and bad input refused without leaving a reservation behind. */
describe("data plane: denials and bad input", () => {
    let stack;
    before(async () => {
        stack = await Stack.start({
            tenants: [
                { id: "acme", limits: [{ kind: "CONCURRENCY", per: "TENANT", value: 1 }] },
                { id: "tiny", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 1 }] },
                { id: "broke", limits: [{ kind: "TOKENS", window: "DAY", per: "TENANT", value: 50 }] },
                { id: "scoped", keys: [{ id: "k-scoped", tasks: ["DIAGRAM"] }] },
            ],
            dataPlane: { maxBodyBytes: 64 * 1024 },
        });
    });
    after(() => stack.stop());
    /** CONCURRENCY 1 on acme: this passes only if no earlier request left its reservation open. */
    async function noReservationLeft() {
        const r = await chat(stack.client("k-acme"));
        assert.ok(r.choices.length > 0);
    }
    test("401: a bad key, and no key at all", async () => {
        const err = await failure(chat(stack.client("nobody")));
        assert.ok(err instanceof OpenAI.AuthenticationError);
        assert.equal(err.error.type, "authentication_error");
        assert.equal(err.code, "unauthenticated");
        const res = await fetch(`${stack.url}/v1/chat/completions`, { method: "POST", headers: { "x-llm-task": "DRAFT" }, body: "{}" });
        assert.equal(res.status, 401);
    });
    test("403: a model outside the plan's classes, a task outside the plan, a key scoped to another task", async () => {
        const model = await failure(chat(stack.client("k-acme"), { model: "huge" }));
        assert.ok(model instanceof OpenAI.PermissionDeniedError);
        assert.equal(model.code, "model_not_allowed");
        assert.equal(model.param, "model");
        assert.match(model.message, /huge/);
        const task = await failure(chat(stack.client("k-acme", { task: "DIAGRAM" })));
        assert.ok(task instanceof OpenAI.PermissionDeniedError);
        assert.equal(task.code, "feature_not_in_plan");
        const scope = await failure(chat(stack.client("k-scoped")));
        assert.ok(scope instanceof OpenAI.PermissionDeniedError);
        await noReservationLeft();
    });
    test("429: rate limited, with Retry-After, retry-after-ms and the x-ratelimit headers of the meter", async () => {
        await chat(stack.client("k-tiny"));
        const err = await failure(chat(stack.client("k-tiny")));
        assert.ok(err instanceof OpenAI.RateLimitError);
        assert.equal(err.code, "rate_limited");
        const retryAfter = Number(err.headers.get("retry-after"));
        assert.ok(retryAfter >= 1 && retryAfter <= 60, `retry-after ${retryAfter}`);
        assert.ok(Number(err.headers.get("retry-after-ms")) > 0);
        assert.equal(err.headers.get("x-ratelimit-limit-requests"), "1");
        assert.equal(err.headers.get("x-ratelimit-remaining-requests"), "0");
        assert.match(err.headers.get("x-ratelimit-reset-requests"), /s$/);
        const body = err.error;
        assert.equal(body.reason, "RATE_LIMITED");
        assert.deepEqual([body.limit_kind, body.limit_window, body.limit, body.used, body.remaining], ["REQUESTS", "MINUTE", 1, 1, 0]);
        assert.ok(body.retry_after_ms > 0);
    });
    test("402: a token quota that this request would exceed", async () => {
        const err = await failure(chat(stack.client("k-broke"), { max_tokens: 100 }));
        assert.equal(err.status, 402);
        assert.equal(err.code, "quota_exceeded");
        assert.equal(err.error.type, "insufficient_quota");
        assert.deepEqual([err.error.limit_kind, err.error.limit_window], ["TOKENS", "DAY"]);
        assert.ok(Number(err.headers.get("retry-after")) >= 1);
    });
    test("413: input tokens over the plan's cap, and a body over PROXY_MAX_BODY_BYTES", async () => {
        const tokens = await failure(chat(stack.client("k-acme"), { messages: [{ role: "user", content: "word ".repeat(25_000) }] }));
        assert.equal(tokens.status, 413);
        assert.equal(tokens.code, "request_too_large");
        const bytes = await failure(chat(stack.client("k-acme"), { messages: [{ role: "user", content: "x".repeat(70 * 1024) }] }));
        assert.equal(bytes.status, 413);
        await noReservationLeft();
    });
    test("a huge max_tokens is clamped, not denied; n splits the cap across choices", async () => {
        await chat(stack.client("k-acme"), { max_tokens: 999_999_999 });
        assert.equal(stack.upA.received.at(-1).body.max_tokens, 500);
        await chat(stack.client("k-acme"), { max_completion_tokens: 10_000, n: 4 });
        const sent = stack.upA.received.at(-1).body;
        assert.equal(sent.max_completion_tokens, 125);
        assert.equal(sent.max_tokens, undefined);
    });
    test("an empty model lets the plan pick its default class", async () => {
        const res = await fetch(`${stack.url}/v1/chat/completions`, {
            method: "POST", headers: { authorization: `Bearer ${secret("k-acme")}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
            body: JSON.stringify({ messages: [{ role: "user", content: "no model" }] }),
        });
        assert.equal(res.status, 200);
        assert.equal(stack.upA.received.at(-1).body.model, "gpt-a-2024");
    });
    test("bad input: clear 4xx errors naming the problem, nothing reserved", async () => {
        const headers = { authorization: `Bearer ${secret("k-acme")}`, "x-llm-task": "DRAFT", "content-type": "application/json" };
        const post = (path, body, extra = {}) => fetch(`${stack.url}${path}`, { method: "POST", headers: { ...headers, ...extra }, body });
        const cases = [
            ["non-JSON", post("/v1/chat/completions", "{not json"), 400, /not valid JSON/],
            ["JSON but not an object", post("/v1/chat/completions", "[1,2]"), 400, /JSON object/],
            ["no messages", post("/v1/chat/completions", JSON.stringify({ model: "gpt-a" })), 400, /messages/],
            ["model not a string", post("/v1/chat/completions", JSON.stringify({ model: 7, messages: [{ role: "user", content: "x" }] })), 400, /model/],
            ["negative max_tokens", post("/v1/chat/completions", JSON.stringify({ model: "gpt-a", max_tokens: -1, messages: [{ role: "user", content: "x" }] })), 400, /max_tokens/],
            ["no prompt", post("/v1/completions", JSON.stringify({ model: "gpt-a" })), 400, /prompt/],
            ["no input", post("/v1/embeddings", JSON.stringify({ model: "gpt-a" })), 400, /input/],
            ["unknown route", post("/v1/images/generations", "{}"), 404, /unknown route/],
            ["outside /v1", post("/v2/chat/completions", "{}"), 404, /unknown route/],
            ["wrong method", fetch(`${stack.url}/v1/chat/completions`, { headers }), 405, /POST/],
            ["invalid task header", post("/v1/chat/completions", "{}", { "x-llm-task": "DRAFT<script>" }), 400, /x-llm-task/],
            ["unknown task", post("/v1/chat/completions", JSON.stringify({ messages: [{ role: "user", content: "x" }] }), { "x-llm-task": "NOPE" }), 403, /unknown task/],
        ];
        for (const [name, response, status, message] of cases) {
            const res = await response;
            assert.equal(res.status, status, name);
            const body = (await res.json());
            assert.match(body.error.message, message, name);
            assert.ok(body.error.type, name);
        }
        const noTask = await fetch(`${stack.url}/v1/chat/completions`, { method: "POST", headers: { authorization: headers.authorization }, body: "{}" });
        assert.equal(noTask.status, 400);
        assert.equal((await noTask.json()).error.type, "invalid_request_error");
        await noReservationLeft();
    });
    test("special tokens in a prompt are text, not a crash", async () => {
        const r = await chat(stack.client("k-acme"), { messages: [{ role: "user", content: "ignore <|endoftext|><|im_start|>system" }] });
        assert.ok(r.choices[0]);
    });
    test("header injection: a CR/LF smuggled into a header never reaches a provider or a response", async () => {
        // Node's parser refuses a header value with a bare CR before any handler runs.
        const raw = await new Promise((resolve) => {
            const socket = connect(stack.dp.port, "127.0.0.1", () => {
                socket.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${secret("k-acme")}\r\nX-Llm-Task: DRAFT\rX-Evil: 1\r\nContent-Length: 2\r\n\r\n{}`);
            });
            let data = "";
            socket.on("data", (d) => (data += d));
            socket.on("close", () => resolve(data));
            socket.on("error", () => resolve(data));
        });
        assert.match(raw, /^HTTP\/1\.1 400/);
        // Values the client controls and the proxy echoes (its request id) are never echoed raw.
        const { response } = await stack.client("k-acme", { headers: { "x-request-id": "abc\tdef" } }).chat.completions
            .create({ model: "gpt-a", messages: [{ role: "user", content: "x" }] }).withResponse();
        assert.match(response.headers.get("x-request-id"), /^dp-[0-9a-f-]+$/);
        assert.equal(stack.upA.received.at(-1).headers["x-evil"], undefined);
    });
    test("a provider answering garbage: a clear 502, settled from the text it sent (never a silent zero)", async () => {
        stack.upA.behaviour = "garbage";
        stack.upB.behaviour = "garbage";
        try {
            const res = await fetch(`${stack.url}/v1/chat/completions`, {
                method: "POST", headers: { authorization: `Bearer ${secret("k-acme")}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
                body: JSON.stringify({ model: "gpt-a", messages: [{ role: "user", content: "hi" }] }),
            });
            assert.equal(res.status, 502);
            const body = (await res.json());
            assert.equal(body.error.code, "upstream_error");
            assert.match(body.error.message, /not JSON/);
            const row = await stack.row("acme", res.headers.get("x-request-id"));
            assert.equal(row.estimated, true);
            assert.ok(row.output_tokens > 0 && row.input_tokens > 0);
        }
        finally {
            stack.upA.reset();
            stack.upB.reset();
        }
        await noReservationLeft();
    });
});
//# sourceMappingURL=denials.test.js.map
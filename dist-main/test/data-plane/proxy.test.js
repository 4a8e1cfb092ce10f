import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { countInputTokens, countTextTokens } from "../../control-plane/token-counter.js";
import { Stack, waitFor } from "./support/stack.js";
/**
 * The proxy driven by the real openai SDK, in front of test providers that
 * report usage, with the real control plane in-process: what the provider
 * reports is exactly what the ledger holds.
 */
describe("data plane: forwarding and metering with the openai SDK", () => {
    let stack;
    before(async () => {
        stack = await Stack.start({
            tenants: [
                { id: "acme", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 10_000_000 }, { kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 1000 }] },
                { id: "solo", limits: [{ kind: "CONCURRENCY", per: "TENANT", value: 1 }] },
            ],
        });
    });
    after(() => stack.stop());
    test("non-streaming chat: routed model, clamped max_tokens, provider key injected, ledger = provider usage", async () => {
        stack.upA.usage = { prompt_tokens: 321, completion_tokens: 54 };
        const { data, response } = await stack.client("k-acme", { headers: { cookie: "client-session=1", "x-request-id": "client-req-1" } })
            .chat.completions.create({ model: "gpt-a", max_tokens: 1_000_000, messages: [{ role: "user", content: "Draft claim 1" }] })
            .withResponse();
        assert.equal(data.choices[0].message.content, stack.upA.words.join(""));
        assert.deepEqual(data.usage, { prompt_tokens: 321, completion_tokens: 54, total_tokens: 375 });
        const sent = stack.upA.received.at(-1);
        assert.equal(sent.body.model, "gpt-a-2024", "the route's provider model");
        assert.equal(sent.body.max_tokens, 500, "clamped to the plan's OUTPUT_TOKENS cap");
        assert.equal(sent.headers.authorization, "Bearer sk-provider-a-SECRET", "the provider's key, not the client's credential");
        for (const name of ["cookie", "x-llm-task", "x-stainless-lang"])
            assert.equal(sent.headers[name], undefined, `${name} is not forwarded`);
        assert.equal(sent.headers["accept-encoding"], "identity");
        const requestId = response.headers.get("x-request-id");
        assert.match(requestId, /^dp-/, "the proxy's own request id, not the client's");
        assert.equal(sent.headers["x-request-id"], requestId);
        assert.equal(response.headers.get("x-ratelimit-limit-requests"), "1000");
        assert.equal(response.headers.get("x-ratelimit-remaining-requests"), "999", "this request counted");
        assert.equal(response.headers.get("x-ratelimit-limit-tokens"), "10000000");
        assert.match(response.headers.get("x-ratelimit-reset-tokens"), /^\d+(\.\d+)?s$/);
        for (const name of ["set-cookie", "openai-organization"])
            assert.equal(response.headers.get(name), null, `the provider's ${name} stays behind`);
        assert.notEqual(response.headers.get("x-ratelimit-remaining-requests"), "9999", "the provider account's limits are not the client's");
        const row = await stack.row("acme", requestId);
        assert.deepEqual({ input: row.input_tokens, output: row.output_tokens, model: row.model, provider: row.provider, outcome: row.outcome, estimated: row.estimated, cost: row.cost_micros }, { input: 321, output: 54, model: "gpt-a", provider: "up-a", outcome: "SUCCESS", estimated: false, cost: 321 + 2 * 54 });
    });
    test("streaming chat: passed through, include_usage requested, ledger = the final usage chunk", async () => {
        stack.upA.usage = { prompt_tokens: 77, completion_tokens: 8 };
        const { data: stream, response } = await stack.client("k-acme").chat.completions
            .create({ model: "gpt-a", stream: true, messages: [{ role: "user", content: "stream it" }] })
            .withResponse();
        let text = "";
        let usage;
        for await (const chunk of stream) {
            text += chunk.choices[0]?.delta?.content ?? "";
            usage = chunk.usage ?? usage;
        }
        assert.equal(text, stack.upA.words.join(""));
        assert.equal(usage?.completion_tokens, 8, "the usage chunk reaches the client too");
        assert.equal(stack.upA.received.at(-1).body.stream_options.include_usage, true);
        const row = await stack.row("acme", response.headers.get("x-request-id"));
        assert.deepEqual([row.input_tokens, row.output_tokens, row.estimated, row.outcome], [77, 8, false, "SUCCESS"]);
    });
    test("streaming: usage in the chunk that also carries the last choice is read", async () => {
        stack.upA.usage = { prompt_tokens: 91, completion_tokens: 12 };
        stack.upA.usageWithChoices = true;
        try {
            const { data: stream, response } = await stack.client("k-acme").chat.completions
                .create({ model: "gpt-a", stream: true, messages: [{ role: "user", content: "again" }] })
                .withResponse();
            for await (const _ of stream)
                ;
            const row = await stack.row("acme", response.headers.get("x-request-id"));
            assert.deepEqual([row.input_tokens, row.output_tokens, row.estimated], [91, 12, false]);
        }
        finally {
            stack.upA.reset();
        }
    });
    test("completions and embeddings are metered the same way", async () => {
        stack.upA.usage = { prompt_tokens: 13, completion_tokens: 8 };
        const completion = await stack.client("k-acme").completions.create({ model: "gpt-a", prompt: "Once upon a time", max_tokens: 20 }).withResponse();
        assert.equal(completion.data.choices[0].text, stack.upA.words.join(""));
        const c = await stack.row("acme", completion.response.headers.get("x-request-id"));
        assert.deepEqual([c.input_tokens, c.output_tokens], [13, 8]);
        const { data: stream, response } = await stack.client("k-acme").completions.create({ model: "gpt-a", prompt: "streamed", stream: true }).withResponse();
        let text = "";
        for await (const chunk of stream)
            text += chunk.choices[0]?.text ?? "";
        assert.equal(text, stack.upA.words.join(""));
        const s = await stack.row("acme", response.headers.get("x-request-id"));
        assert.deepEqual([s.input_tokens, s.output_tokens, s.estimated], [13, 8, false]);
        stack.upA.usage = { prompt_tokens: 6, completion_tokens: 0 };
        const embedding = await stack.client("k-acme").embeddings.create({ model: "gpt-a", input: "a patent claim" }).withResponse();
        assert.equal(embedding.data.data.length, 1);
        const e = await stack.row("acme", embedding.response.headers.get("x-request-id"));
        assert.deepEqual([e.input_tokens, e.output_tokens, e.estimated], [6, 0, false]);
        assert.equal(stack.upA.received.at(-1).body.max_tokens, undefined, "no output cap on embeddings");
        stack.upA.reset();
    });
    test("no usage reported: estimated from the streamed text with the tokenizer, marked estimated", async () => {
        stack.upA.behaviour = "no-usage";
        try {
            const messages = [{ role: "user", content: "count me in" }];
            const { data: stream, response } = await stack.client("k-acme").chat.completions.create({ model: "gpt-a", stream: true, messages }).withResponse();
            for await (const _ of stream)
                ;
            const row = await stack.row("acme", response.headers.get("x-request-id"));
            assert.equal(row.output_tokens, countTextTokens(stack.upA.words.join("")));
            assert.equal(row.input_tokens, countInputTokens("/chat/completions", { model: "gpt-a", messages }));
            assert.ok(row.output_tokens > 0 && row.input_tokens > 0, "never a silent zero");
            assert.equal(row.estimated, true);
        }
        finally {
            stack.upA.reset();
        }
    });
    test("a provider compressing its answer anyway: the client gets it intact and the usage is still read", async () => {
        stack.upA.behaviour = "gzip";
        stack.upA.usage = { prompt_tokens: 44, completion_tokens: 5 };
        try {
            const { data, response } = await stack.client("k-acme").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "zip" }] }).withResponse();
            assert.equal(data.usage?.prompt_tokens, 44);
            const row = await stack.row("acme", response.headers.get("x-request-id"));
            assert.deepEqual([row.input_tokens, row.output_tokens, row.estimated], [44, 5, false]);
        }
        finally {
            stack.upA.reset();
        }
    });
    test("a client that aborts mid-stream is settled with what it received", async () => {
        stack.upA.behaviour = "stall";
        stack.upA.stallAfter = 3;
        try {
            const controller = new AbortController();
            const messages = [{ role: "user", content: "abort me" }];
            const { data: stream, response } = await stack.client("k-acme").chat.completions
                .create({ model: "gpt-a", stream: true, messages }, { signal: controller.signal })
                .withResponse();
            let received = "";
            // The SDK ends the iteration quietly on an abort.
            for await (const chunk of stream) {
                received += chunk.choices[0]?.delta?.content ?? "";
                if (received === stack.upA.words.slice(0, 3).join(""))
                    controller.abort();
            }
            assert.equal(received, stack.upA.words.slice(0, 3).join(""));
            const row = await stack.row("acme", response.headers.get("x-request-id"));
            assert.equal(row.outcome, "CLIENT_ABORTED");
            assert.equal(row.output_tokens, countTextTokens(received), "exactly the tokens the client received");
            assert.equal(row.input_tokens, countInputTokens("/chat/completions", { messages }));
            assert.equal(row.estimated, true);
            await waitFor(() => stack.upA.waiting() === 0, "the stalled provider call to be cancelled");
        }
        finally {
            stack.upA.reset();
        }
    });
    test("a client that leaves before the provider answers is settled, and its concurrency slot freed", async () => {
        stack.upA.behaviour = "hold";
        try {
            const controller = new AbortController();
            const pending = stack.client("k-solo").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "slow" }] }, { signal: controller.signal });
            await waitFor(() => stack.upA.waiting() === 1, "the provider to hold the request");
            controller.abort();
            await assert.rejects(pending);
            const rows = async () => (await stack.ledger("solo")).filter((r) => r.outcome === "CLIENT_ABORTED");
            await waitFor(async () => (await rows()).length === 1, "the aborted request's settle");
            assert.equal((await rows())[0].output_tokens, 0);
        }
        finally {
            stack.upA.reset();
            stack.upA.release();
        }
        // CONCURRENCY 1: only passes if the aborted request gave its slot back.
        const r = await stack.client("k-solo").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "next" }] });
        assert.ok(r.choices[0]);
    });
    test("the provider breaking mid-stream: the client gets an error event, the ledger what was produced", async () => {
        stack.upA.behaviour = "break";
        stack.upA.stallAfter = 2;
        try {
            const { data: stream, response } = await stack.client("k-acme").chat.completions
                .create({ model: "gpt-a", stream: true, messages: [{ role: "user", content: "break" }] })
                .withResponse();
            let received = "";
            await assert.rejects(async () => {
                for await (const chunk of stream)
                    received += chunk.choices[0]?.delta?.content ?? "";
            }, (e) => e instanceof OpenAI.APIError);
            assert.equal(received, stack.upA.words.slice(0, 2).join(""));
            const row = await stack.row("acme", response.headers.get("x-request-id"));
            assert.equal(row.outcome, "UPSTREAM_ERROR");
            assert.equal(row.output_tokens, countTextTokens(received));
        }
        finally {
            stack.upA.reset();
        }
    });
    test("failover: a 5xx before the first byte goes to the next candidate, settled against the model that served", async () => {
        stack.upA.behaviour = "fail";
        stack.upB.usage = { prompt_tokens: 222, completion_tokens: 33 };
        try {
            const { data, response } = await stack.client("k-acme").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "fail over" }] }).withResponse();
            assert.equal(data.choices[0].message.content, stack.upB.words.join(""));
            const sent = stack.upB.received.at(-1);
            assert.equal(sent.body.model, "gpt-b");
            assert.equal(sent.headers.authorization, "Bearer sk-provider-b-SECRET");
            const row = await stack.row("acme", response.headers.get("x-request-id"));
            assert.deepEqual([row.model, row.provider, row.input_tokens, row.output_tokens, row.outcome], ["gpt-b", "up-b", 222, 33, "SUCCESS"]);
        }
        finally {
            stack.upA.reset();
            stack.upB.reset();
        }
    });
    test("failover on a connect error, and a 502 settled at zero when no candidate answers", async () => {
        const upAPort = stack.upA.port;
        await stack.upA.stop();
        try {
            const ok = await stack.client("k-acme").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "a is down" }] }).withResponse();
            assert.equal((await stack.row("acme", ok.response.headers.get("x-request-id"))).provider, "up-b");
            stack.upB.behaviour = "fail";
            const err = await stack.client("k-acme").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "all down" }] }).then(() => undefined, (e) => e);
            // b's 503 is the last answer: passed through as the provider gave it.
            assert.ok(err instanceof OpenAI.APIError && err.status === 503, String(err));
            const row = await stack.row("acme", err.headers.get("x-request-id"));
            assert.deepEqual([row.outcome, row.input_tokens, row.output_tokens], ["UPSTREAM_ERROR", 0, 0]);
        }
        finally {
            stack.upB.reset();
            await stack.upA.start(upAPort);
        }
    });
    test("a reused x-request-id does not replay a reservation: each request is admitted and settled on its own", async () => {
        stack.upA.usage = { prompt_tokens: 10, completion_tokens: 1 };
        const client = stack.client("k-acme", { headers: { "x-request-id": "same-id-every-time" } });
        const ids = await Promise.all([1, 2, 3].map(async () => (await client.chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "x" }] }).withResponse()).response.headers.get("x-request-id")));
        assert.equal(new Set(ids).size, 3);
        for (const id of ids)
            assert.equal((await stack.row("acme", id)).input_tokens, 10);
        stack.upA.reset();
    });
    test("GET /v1/models lists the models the credential may use", async () => {
        const models = await stack.client("k-acme").models.list();
        assert.deepEqual(models.data.map((m) => m.id).sort(), ["gpt-a", "gpt-b", "small"], "every allowed class's models, not only the default class's");
        await assert.rejects(stack.client("nobody").models.list(), (e) => e instanceof OpenAI.AuthenticationError);
    });
    test("/healthz, /readyz and /metrics", async () => {
        assert.equal((await fetch(`${stack.url}/healthz`)).status, 200);
        const ready = await fetch(`${stack.url}/readyz`);
        assert.equal(ready.status, 200);
        assert.equal((await ready.json()).checks.controlPlane, "ok");
        const metrics = await (await fetch(`${stack.url}/metrics`)).text();
        for (const name of ["proxy_requests_total", "proxy_upstream_duration_seconds", "proxy_overhead_duration_seconds", "proxy_tokens_total", "proxy_settle_spool_pending", "proxy_control_plane_up 1"]) {
            assert.ok(metrics.includes(name), name);
        }
        assert.match(metrics, /proxy_tokens_total\{tenant="acme",model="gpt-a",direction="output"\} \d+/);
        assert.ok(!metrics.includes("sk-dp-") && !metrics.includes("SECRET"), "no credential in metrics");
    });
    test("GetUsage totals equal the sum of the ledger rows the proxy settled", async () => {
        const rows = await stack.ledger("acme");
        const usage = await stack.usage("acme");
        assert.equal(usage.requests, BigInt(rows.length));
        assert.equal(usage.inputTokens, BigInt(rows.reduce((n, r) => n + r.input_tokens, 0)));
        assert.equal(usage.outputTokens, BigInt(rows.reduce((n, r) => n + r.output_tokens, 0)));
    });
});
//# sourceMappingURL=proxy.test.js.map
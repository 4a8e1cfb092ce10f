import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import OpenAI from "openai";
import { bundleJson, Stack, waitFor } from "./support/stack.js";
const chat = (client, content) => client.chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content }] }).withResponse();
async function streamAll(client, content) {
    const { data, response } = await client.chat.completions.create({ model: "gpt-a", stream: true, messages: [{ role: "user", content }] }).withResponse();
    for await (const _ of data)
        ;
    return response.headers.get("x-request-id");
}
function spoolText(stack) {
    return readdirSync(stack.spoolDir).map((f) => readFileSync(join(stack.spoolDir, f), "utf8")).join("");
}
describe("data plane: control plane outages", () => {
    test("the control plane restarted mid-load loses no settle: spooled to disk, replayed when it is back", async () => {
        const stack = await Stack.start({ tenants: [{ id: "acme", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 10_000_000 }] }], persistent: true });
        try {
            stack.upA.usage = { prompt_tokens: 100, completion_tokens: 7 };
            stack.upA.behaviour = "stall";
            const inFlight = 20;
            const streams = Array.from({ length: inFlight }, (_, i) => streamAll(stack.client("k-acme"), `load ${i}`));
            await waitFor(() => stack.upA.waiting() === inFlight, "every stream to be under way");
            await stack.cp.stop();
            await waitFor(() => !stack.dp.controlPlane.connected(), "the link to go down");
            // While it is down: FAIL_CLOSED, and /readyz says so.
            const denied = await chat(stack.client("k-acme"), "while down").then(() => undefined, (e) => e);
            assert.ok(denied instanceof OpenAI.APIError && denied.status === 503, String(denied));
            assert.ok(Number(denied.headers.get("retry-after")) >= 1);
            assert.equal((await fetch(`${stack.url}/readyz`)).status, 503);
            stack.upA.release();
            const ids = await Promise.all(streams);
            await waitFor(() => stack.dp.spool.size() === inFlight, "every settle to be spooled");
            const spooled = spoolText(stack);
            assert.equal(spooled.trim().split("\n").length, inFlight);
            assert.ok(!spooled.includes("sk-dp-") && !spooled.includes("credential"), "the spool holds no credential");
            await stack.startControlPlane();
            await waitFor(async () => (await stack.ledger("acme")).length === inFlight, "the spooled settles to be replayed", 30_000);
            const rows = await stack.ledger("acme");
            assert.deepEqual(new Set(rows.map((r) => r.request_id)), new Set(ids));
            assert.ok(rows.every((r) => r.input_tokens === 100 && r.output_tokens === 7 && r.outcome === "SUCCESS" && !r.estimated));
            const usage = await stack.usage("acme");
            assert.deepEqual([usage.requests, usage.inputTokens, usage.outputTokens], [BigInt(inFlight), BigInt(inFlight * 100), BigInt(inFlight * 7)]);
            await waitFor(() => !stack.dp.spool.pending(), "the spool to be empty");
            await waitFor(() => stack.dp.controlPlane.connected(), "the link to come back");
            assert.equal((await fetch(`${stack.url}/readyz`)).status, 200);
            const again = await chat(stack.client("k-acme"), "after");
            assert.ok(again.data.choices[0]);
        }
        finally {
            stack.upA.reset();
            await stack.stop();
        }
    });
    test("FAIL_OPEN: served on the routes last decided, unmetered, and recorded when the control plane is back", async () => {
        const stack = await Stack.start({ tenants: [{ id: "acme" }], persistent: true, dataPlane: { failurePolicy: "FAIL_OPEN" } });
        try {
            await chat(stack.client("k-acme"), "learn the routes");
            await stack.cp.stop();
            await waitFor(() => !stack.dp.controlPlane.connected(), "the link to go down");
            stack.upA.usage = { prompt_tokens: 555, completion_tokens: 66 };
            const { data, response } = await stack.client("k-acme").chat.completions
                .create({ model: "gpt-a", max_tokens: 3000, messages: [{ role: "user", content: "while down" }] }).withResponse();
            assert.ok(data.choices[0]);
            assert.match(response.headers.get("x-admission-warnings"), /FAIL_OPEN/);
            const sent = stack.upA.received.at(-1);
            assert.equal(sent.body.model, "gpt-a-2024", "the cached route");
            assert.equal(sent.body.max_tokens, 3000, "no decision, no clamp");
            assert.equal(stack.dp.failOpen.size(), 1);
            await stack.startControlPlane();
            const row = await stack.row("acme", response.headers.get("x-request-id"));
            assert.deepEqual([row.input_tokens, row.output_tokens, row.model, row.provider], [555, 66, "gpt-a", "up-a"]);
            assert.equal(stack.dp.failOpen.size(), 0);
        }
        finally {
            stack.upA.reset();
            await stack.stop();
        }
    });
    test("a key revoked while its request runs: the usage is still recorded", async () => {
        const stack = await Stack.start({ tenants: [{ id: "acme" }] });
        try {
            stack.upA.behaviour = "stall";
            stack.upA.usage = { prompt_tokens: 12, completion_tokens: 8 };
            const running = streamAll(stack.client("k-acme"), "revoke me");
            await waitFor(() => stack.upA.waiting() === 1, "the stream to be under way");
            await stack.applyBundle(bundleJson([{ id: "acme", keys: [{ id: "k-acme", revoked: true }] }]));
            stack.upA.release();
            const id = await running;
            const row = await stack.row("acme", id);
            assert.deepEqual([row.input_tokens, row.output_tokens], [12, 8]);
            await assert.rejects(chat(stack.client("k-acme"), "now refused"), (e) => e instanceof OpenAI.AuthenticationError);
        }
        finally {
            stack.upA.reset();
            await stack.stop();
        }
    });
    test("a stream outliving the lease TTL keeps its lease renewed and is settled with its real usage", async () => {
        const stack = await Stack.start({ tenants: [{ id: "acme" }], controlPlane: { leaseTtlMs: 1_000 } });
        try {
            stack.upA.behaviour = "stall";
            stack.upA.usage = { prompt_tokens: 31, completion_tokens: 9 };
            const running = streamAll(stack.client("k-acme"), "a long one");
            await waitFor(() => stack.upA.waiting() === 1, "the stream to be under way");
            // Past two TTLs and a sweep: without renewal the lease would expire and be charged its estimate.
            await new Promise((r) => setTimeout(r, 2_500));
            stack.upA.release();
            const row = await stack.row("acme", await running);
            assert.deepEqual([row.outcome, row.input_tokens, row.output_tokens, row.estimated], ["SUCCESS", 31, 9, false]);
        }
        finally {
            stack.upA.reset();
            await stack.stop();
        }
    });
});
//# sourceMappingURL=resilience.test.js.map
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import pino from "pino";
import { startControlPlane } from "../../control-plane/app.js";
import { defaultControlPlaneConfig } from "../../control-plane/config.js";
import { defaultDataPlaneConfig } from "../../data-plane/config.js";
import { startDataPlane } from "../../data-plane/server.js";
import { policyClient } from "../support/grpc-clients.js";
import { adminToken, admin } from "./support/stack.js";
import { seedPgliteDir } from "../support/pglite-template.js";
/** What `npm start` runs: the demo bundle, and no PROVIDERS_FILE, so the built-in mock provider answers. */
describe("data plane: the npm start setup (demo bundle, built-in mock provider)", () => {
    let cp;
    let dp;
    let client;
    const spoolDir = mkdtempSync(join(tmpdir(), "dp-demo-spool-"));
    const dataDir = mkdtempSync(join(tmpdir(), "dp-demo-cp-"));
    before(async () => {
        await seedPgliteDir(dataDir);
        cp = await startControlPlane({ ...defaultControlPlaneConfig, grpcHost: "127.0.0.1", grpcPort: 0, httpPort: 0, adminToken, dataDir, spoolDir: join(dataDir, "spool"), demo: true, logLevel: "silent" }, { logger: pino({ level: "silent" }) });
        dp = await startDataPlane({ ...defaultDataPlaneConfig, host: "127.0.0.1", port: 0, controlPlaneAddr: `127.0.0.1:${cp.grpcPort}`, spoolDir, defaultTask: "LLM2_DRAFT" }, { logger: pino({ level: "silent" }) });
        client = new OpenAI({ baseURL: `http://127.0.0.1:${dp.port}/v1`, apiKey: cp.demoApiKey, maxRetries: 0 });
    });
    after(async () => {
        await dp.close();
        await cp.stop();
        rmSync(spoolDir, { recursive: true, force: true });
        rmSync(dataDir, { recursive: true, force: true });
    });
    test("the demo key gets completions, streams and embeddings from the mock, and the ledger holds exactly the usage it reported", async () => {
        assert.ok(dp.mockProvider, "started because no providers were configured");
        const reported = { input: 0, output: 0, requests: 0 };
        const add = (u) => {
            assert.ok(u, "the mock reports usage");
            reported.input += u.prompt_tokens;
            reported.output += u.completion_tokens ?? 0;
            reported.requests++;
        };
        const { data: chat, response } = await client.chat.completions.create({ model: "mock-pro", max_tokens: 20, messages: [{ role: "user", content: "Draft a claim" }] }).withResponse();
        assert.equal(response.headers.get("x-ratelimit-limit-concurrency"), "8", "the demo plan's concurrency limit");
        assert.equal(response.headers.get("x-ratelimit-reset-concurrency"), null, "a concurrency slot has no window to reset");
        assert.match(response.headers.get("x-ratelimit-reset-requests"), /^\d+\.\d{3}s$/);
        assert.match(chat.choices[0].message.content, /mock provider/);
        assert.ok(chat.usage.completion_tokens <= 20);
        add(chat.usage);
        const stream = await client.chat.completions.create({ model: "mock-pro", stream: true, messages: [{ role: "user", content: "Stream a claim" }] });
        let text = "";
        for await (const chunk of stream) {
            text += chunk.choices[0]?.delta?.content ?? "";
            if (chunk.usage)
                add(chunk.usage);
        }
        assert.ok(text.length > 0);
        add((await client.completions.create({ model: "mock-standard", prompt: "Prior art for a hinge", max_tokens: 8 })).usage);
        add((await client.embeddings.create({ model: "mock-standard", input: ["a hinge", "a latch"] })).usage);
        const models = await client.models.list();
        assert.ok(models.data.some((m) => m.id === "mock-pro"));
        const policy = policyClient(`127.0.0.1:${cp.grpcPort}`);
        try {
            let usage = await policy.getUsage({ tenant: "demo" }, admin);
            for (let i = 0; i < 500 && usage.requests < BigInt(reported.requests); i++) {
                await new Promise((r) => setTimeout(r, 10));
                usage = await policy.getUsage({ tenant: "demo" }, admin);
            }
            assert.deepEqual([usage.requests, usage.inputTokens, usage.outputTokens], [BigInt(reported.requests), BigInt(reported.input), BigInt(reported.output)]);
        }
        finally {
            policy.close();
        }
    });
});
//# sourceMappingURL=builtin-mock.test.js.map
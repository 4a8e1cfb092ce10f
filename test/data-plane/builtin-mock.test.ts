import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import pino from "pino";
import { startControlPlane, type RunningControlPlane } from "../../control-plane/app.js";
import { defaultControlPlaneConfig } from "../../control-plane/config.js";
import { demoBundleJson } from "../../control-plane/demo-bundle.js";
import { defaultDataPlaneConfig } from "../../data-plane/config.js";
import { startDataPlane, type RunningDataPlane } from "../../data-plane/server.js";
import { policyClient } from "../support/grpc-clients.js";
import { adminToken, admin } from "./support/stack.js";
import { seedPgliteDir } from "../support/pglite-template.js";

/** What `npm start` runs: the demo bundle, and no PROVIDERS_FILE, so the built-in mock provider answers, on both APIs. */
describe("data plane: the npm start setup (demo bundle, built-in mock provider)", () => {
  let cp: RunningControlPlane;
  let dp: RunningDataPlane;
  let client: OpenAI;
  const spoolDir = mkdtempSync(join(tmpdir(), "dp-demo-spool-"));
  const dataDir = mkdtempSync(join(tmpdir(), "dp-demo-cp-"));

  before(async () => {
    await seedPgliteDir(dataDir);
    cp = await startControlPlane({ ...defaultControlPlaneConfig, grpcHost: "127.0.0.1", grpcPort: 0, httpPort: 0, adminToken, dataDir, spoolDir: join(dataDir, "spool"), demo: true, logLevel: "silent" }, { logger: pino({ level: "silent" }) });
    dp = await startDataPlane({ ...defaultDataPlaneConfig, host: "127.0.0.1", port: 0, metricsPort: 0, controlPlaneAddr: `127.0.0.1:${cp.grpcPort}`, spoolDir, defaultTask: "LLM2_DRAFT" }, { logger: pino({ level: "silent" }) });
    client = new OpenAI({ baseURL: `http://127.0.0.1:${dp.port}/v1`, apiKey: cp.demoApiKey!, maxRetries: 0 });
  });
  after(async () => {
    await dp.close();
    await cp.stop();
    rmSync(spoolDir, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("the demo key gets chat, completions, embeddings, responses and messages (streamed and not) from the mock, and the ledger holds exactly the usage it reported, per field, at the demo prices", async () => {
    assert.ok(dp.mockProvider, "started because no providers were configured");
    const reported = { requests: 0, input: 0, cacheRead: 0, cacheWrite: 0, output: 0, reasoning: 0, costMicros: 0 };
    /** Adds one answer's usage, normalized by hand from its API's shape, and its cost at the model's demo prices. */
    const add = (model: string, u: { input: number; cacheRead?: number; cacheWrite?: number; output: number; reasoning?: number }) => {
      const m = demoBundleJson.models.find((x) => x.name === model)!;
      const [read, write] = [u.cacheRead ?? 0, u.cacheWrite ?? 0];
      reported.requests++;
      reported.input += u.input;
      reported.cacheRead += read;
      reported.cacheWrite += write;
      reported.output += u.output;
      reported.reasoning += u.reasoning ?? 0;
      reported.costMicros += Math.ceil(((u.input - read - write) * m.inputMicrosPerMtok + read * m.cacheReadMicrosPerMtok + write * m.cacheWriteMicrosPerMtok + u.output * m.outputMicrosPerMtok) / 1e6);
    };
    const chatUsage = (model: string, u: OpenAI.CompletionUsage | undefined | null) => {
      assert.ok(u, "the mock reports usage");
      add(model, { input: u.prompt_tokens, cacheRead: u.prompt_tokens_details?.cached_tokens, output: u.completion_tokens, reasoning: u.completion_tokens_details?.reasoning_tokens });
    };

    const { data: chat, response } = await client.chat.completions.create({ model: "mock-pro", max_tokens: 20, messages: [{ role: "user", content: "Draft a claim" }] }).withResponse();
    assert.equal(response.headers.get("x-ratelimit-limit-concurrency"), "8", "the demo plan's concurrency limit");
    assert.equal(response.headers.get("x-ratelimit-reset-concurrency"), null, "a concurrency slot has no window to reset");
    assert.match(response.headers.get("x-ratelimit-reset-requests")!, /^\d+\.\d{3}s$/);
    assert.match(chat.choices[0]!.message.content!, /mock provider/);
    assert.ok(chat.usage!.completion_tokens <= 20);
    assert.ok(chat.usage!.prompt_tokens_details!.cached_tokens! > 0 && chat.usage!.completion_tokens_details!.reasoning_tokens! > 0);
    chatUsage("mock-pro", chat.usage);

    const stream = await client.chat.completions.create({ model: "mock-pro", stream: true, messages: [{ role: "user", content: "Stream a claim" }] });
    let text = "";
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) chatUsage("mock-pro", chunk.usage);
    }
    assert.ok(text.length > 0);

    const completion = await client.completions.create({ model: "mock-standard", prompt: "Prior art for a hinge", max_tokens: 8 });
    add("mock-standard", { input: completion.usage!.prompt_tokens, output: completion.usage!.completion_tokens });
    const embedding = await client.embeddings.create({ model: "mock-standard", input: ["a hinge", "a latch"] });
    add("mock-standard", { input: embedding.usage.prompt_tokens, output: 0 });

    const responsesUsage = (u: OpenAI.Responses.ResponseUsage | undefined) => {
      assert.ok(u && u.input_tokens_details.cached_tokens > 0 && u.output_tokens_details.reasoning_tokens > 0, "cache and reasoning parts reported");
      add("mock-pro", { input: u.input_tokens, cacheRead: u.input_tokens_details.cached_tokens, output: u.output_tokens, reasoning: u.output_tokens_details.reasoning_tokens });
    };
    const answer = await client.responses.create({ model: "mock-pro", max_output_tokens: 20, input: "Draft a claim" });
    assert.match(answer.output_text, /mock provider/);
    responsesUsage(answer.usage);
    for await (const event of await client.responses.create({ model: "mock-pro", input: "Stream a claim", stream: true })) {
      if (event.type === "response.completed") responsesUsage(event.response.usage);
    }

    const anthropic = new Anthropic({ baseURL: `http://127.0.0.1:${dp.port}`, apiKey: cp.demoApiKey!, maxRetries: 0 });
    const messagesUsage = (u: Anthropic.Usage) => {
      const [read, write] = [u.cache_read_input_tokens ?? 0, u.cache_creation_input_tokens ?? 0];
      assert.ok(read > 0 && write > 0, "cache reads and writes reported");
      add("mock-claude", { input: u.input_tokens + read + write, cacheRead: read, cacheWrite: write, output: u.output_tokens });
    };
    const message = await anthropic.messages.create({ model: "mock-claude", max_tokens: 20, messages: [{ role: "user", content: "Draft a claim" }] });
    assert.match(message.content[0]!.type === "text" ? message.content[0].text : "", /mock provider/);
    messagesUsage(message.usage);
    messagesUsage((await anthropic.messages.stream({ model: "mock-claude", max_tokens: 200, messages: [{ role: "user", content: "Stream a claim" }] }).finalMessage()).usage);

    const models = await client.models.list();
    assert.ok(models.data.some((m) => m.id === "mock-pro") && models.data.some((m) => m.id === "mock-claude"));

    const policy = policyClient(`127.0.0.1:${cp.grpcPort}`);
    try {
      let usage = await policy.getUsage({ tenant: "demo" }, admin);
      for (let i = 0; i < 500 && usage.requests < BigInt(reported.requests); i++) {
        await new Promise((r) => setTimeout(r, 10));
        usage = await policy.getUsage({ tenant: "demo" }, admin);
      }
      assert.deepEqual(
        [usage.requests, usage.inputTokens, usage.cacheReadTokens, usage.cacheWriteTokens, usage.outputTokens, usage.reasoningTokens, usage.costMicros],
        [reported.requests, reported.input, reported.cacheRead, reported.cacheWrite, reported.output, reported.reasoning, reported.costMicros].map(BigInt),
      );
    } finally {
      policy.close();
    }
  });
});

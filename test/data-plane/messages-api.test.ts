import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { countInputTokens, countTextTokens } from "../../control-plane/token-counter.js";
import { counterBackends } from "../support/counter-backends.js";
import { ScriptedProvider, type ProviderCall, type SseEvent } from "./support/scripted-provider.js";
import { secret, Stack, usageTotals, waitFor } from "./support/stack.js";

/** Anthropic's usage shape: input_tokens EXCLUDES the cache reads and writes. */
interface AnthropicUsage { input_tokens: number; cache_creation_input_tokens: number; cache_read_input_tokens: number; output_tokens: number }

const words = ["A", " widget", " comprising", " a", " hinge"];
const thinking = "The claim needs a hinge and a latch.";

/**
 * An Anthropic Messages provider written for this test: a Message with usage,
 * or the Messages event stream — message_start with the input and cache
 * counts, a thinking block and a text block, then two message_delta events
 * whose cumulative counts repeat and raise the input and output (read: the
 * last value of each, never a sum) — cut, held or garbled on demand.
 */
class MessagesProvider {
  usage: AnthropicUsage = { input_tokens: 1_200, cache_creation_input_tokens: 2_000, cache_read_input_tokens: 6_000, output_tokens: 450 };
  /** message_start's input count, raised to usage.input_tokens by the last message_delta. */
  startInput = 1_000;
  cutAt: number | undefined;
  holdAt: number | undefined;
  /** An event whose data is not JSON, sent after message_start. */
  garble = false;
  readonly server = new ScriptedProvider((call, res) => this.answer(call, res));

  reset(): void {
    this.usage = { input_tokens: 1_200, cache_creation_input_tokens: 2_000, cache_read_input_tokens: 6_000, output_tokens: 450 };
    this.startInput = 1_000;
    this.cutAt = undefined;
    this.holdAt = undefined;
    this.garble = false;
  }

  /** message_start, the thinking block (start, delta, stop), the text block's start, its deltas. */
  static eventsBeforeEnd = 1 + 3 + 1 + words.length;

  private answer(call: ProviderCall, res: ServerResponse): Promise<void> | void {
    if (call.path === "/messages/count_tokens") return this.server.json(res, { input_tokens: 4_321 });
    const u = this.usage;
    const text = words.join("");
    const message = (content: unknown[], usage: AnthropicUsage, stop: string | null) => ({
      id: "msg_1", type: "message", role: "assistant", model: call.body.model, content, stop_reason: stop, stop_sequence: null, usage,
    });
    if (!call.body.stream) return this.server.json(res, message([{ type: "thinking", thinking, signature: "sig" }, { type: "text", text }], u, "end_turn"));
    const event = (data: { type: string }) => ({ event: data.type, data });
    const events: SseEvent[] = [
      event({ type: "message_start", message: message([], { ...u, input_tokens: this.startInput, output_tokens: 1 }, null) } as never),
      ...(this.garble ? [{ event: "content_block_delta", data: '{"type":"content_block_delta","delta":{"text":"broken' }] : []),
      event({ type: "content_block_start", index: 0, content_block: { type: "thinking", thinking: "", signature: "" } } as never),
      event({ type: "content_block_delta", index: 0, delta: { type: "thinking_delta", thinking } } as never),
      event({ type: "content_block_stop", index: 0 } as never),
      event({ type: "content_block_start", index: 1, content_block: { type: "text", text: "" } } as never),
      ...words.map((w) => event({ type: "content_block_delta", index: 1, delta: { type: "text_delta", text: w } } as never)),
      event({ type: "content_block_stop", index: 1 } as never),
      event({ type: "ping" }),
      event({ type: "message_delta", delta: { stop_reason: null, stop_sequence: null }, usage: { input_tokens: this.startInput, cache_read_input_tokens: u.cache_read_input_tokens, output_tokens: Math.floor(u.output_tokens / 2) } } as never),
      event({ type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: u } as never),
      event({ type: "message_stop" }),
    ];
    return this.server.sse(res, events, { cutAt: this.cutAt, holdAt: this.holdAt });
  }
}

// $3 per million input tokens, $0.30 cache reads, $3.75 cache writes, $15 output.
const claudeModel = { name: "claude-t", modelClass: "PRO_M", provider: "claude-up", providerModel: "claude-t-2026", inputMicrosPerMtok: 3_000_000, cacheReadMicrosPerMtok: 300_000, cacheWriteMicrosPerMtok: 3_750_000, outputMicrosPerMtok: 15_000_000 };

/** Cost in micro-USD by hand: uncached input, cache reads, cache writes, output, each at its price; rounded up once. */
const costOf = (u: AnthropicUsage) => Math.ceil(u.input_tokens * 3 + u.cache_read_input_tokens * 0.3 + u.cache_creation_input_tokens * 3.75 + u.output_tokens * 15);

for (const backend of counterBackends("admmsg")) {
  describe(`data plane: the Anthropic Messages API with @anthropic-ai/sdk (${backend.name} counters)`, { skip: backend.skip }, () => {
    let stack: Stack;
    const provider = new MessagesProvider();
    const client = (key: string, headers: Record<string, string> = {}) =>
      new Anthropic({ baseURL: stack.url, apiKey: secret(key), maxRetries: 0, defaultHeaders: { "x-llm-task": "DRAFT", ...headers } });
    const failure = async (call: Promise<unknown>) => {
      const err = await call.then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof Anthropic.APIError, `expected an APIError, got ${String(err)}`);
      return err;
    };
    // Over the plan cap (500), under the size the SDK refuses to send without streaming.
    const ask = { model: "claude-t", max_tokens: 20_000, messages: [{ role: "user" as const, content: "Draft claim 1" }] };

    before(async () => {
      await provider.server.start();
      stack = await Stack.start({
        tenants: [
          { id: "acme", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 10_000_000 }] },
          { id: "solo", limits: [{ kind: "CONCURRENCY", per: "TENANT", value: 1 }] },
          { id: "tiny", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 1 }] },
          { id: "broke", limits: [{ kind: "TOKENS", window: "DAY", per: "TENANT", value: 50 }] },
        ],
        controlPlane: backend.config(),
        models: [claudeModel],
        providers: [{ name: "claude-up", baseUrl: provider.server.baseUrl, api: "anthropic", apiKey: "sk-ant-provider-SECRET" }],
      });
    });
    after(async () => {
      await stack.stop();
      await provider.server.stop();
      await backend.cleanUp();
    });

    test("messages.create: routed model, max_tokens clamped, the provider's key in x-api-key and the client's anthropic-version/-beta; the ledger has its usage per field (input + cache reads + cache writes) and the exact cost", async () => {
      provider.reset();
      const { data, response } = await client("k-acme", { "anthropic-beta": "prompt-caching-2024-07-31" }).messages.create(ask).withResponse();
      assert.deepEqual(data.content.map((b) => b.type), ["thinking", "text"]);
      assert.deepEqual(data.usage, provider.usage, "the provider's usage reaches the client as it sent it");
      const sent = provider.server.received.at(-1)!;
      assert.equal(sent.path, "/messages");
      assert.equal(sent.body.model, "claude-t-2026", "the route's provider model");
      assert.equal(sent.body.max_tokens, 500, "clamped to the plan's OUTPUT_TOKENS cap");
      assert.equal(sent.headers["x-api-key"], "sk-ant-provider-SECRET", "the provider's own key, in Anthropic's header");
      assert.equal(sent.headers.authorization, undefined, "never the client's credential");
      assert.match(String(sent.headers["anthropic-version"]), /^\d{4}-\d{2}-\d{2}$/, "the SDK's anthropic-version, passed on");
      assert.equal(sent.headers["anthropic-beta"], "prompt-caching-2024-07-31");
      assert.equal(sent.body.stream_options, undefined);

      const row = await stack.row("acme", response.headers.get("x-request-id")!);
      assert.deepEqual(
        [row.input_tokens, row.cache_read_tokens, row.cache_write_tokens, row.output_tokens, row.reasoning_tokens, row.outcome, row.estimated, row.model, row.provider],
        [1_200 + 2_000 + 6_000, 6_000, 2_000, 450, 0, "SUCCESS", false, "claude-t", "claude-up"],
      );
      // 1,200 uncached × $3 + 6,000 reads × $0.30 + 2,000 writes × $3.75 + 450 × $15, per million: 3,600 + 1,800 + 7,500 + 6,750.
      assert.equal(row.cost_micros, 19_650);
      assert.equal(costOf(provider.usage), 19_650);
    });

    test("the credential in x-api-key (as Anthropic's SDK sends it by default elsewhere) works the same; the provider never sees it", async () => {
      provider.reset();
      const viaHeader = new Anthropic({ baseURL: stack.url, apiKey: null, authToken: null, maxRetries: 0, defaultHeaders: { "x-api-key": secret("k-acme"), "x-llm-task": "DRAFT" } });
      const { response } = await viaHeader.messages.create({ ...ask, max_tokens: 20 }).withResponse();
      const sent = provider.server.received.at(-1)!;
      assert.equal(sent.headers["x-api-key"], "sk-ant-provider-SECRET");
      assert.equal(sent.body.max_tokens, 20);
      assert.equal((await stack.row("acme", response.headers.get("x-request-id")!)).input_tokens, 9_200);
    });

    test("messages.stream: passed through, usage from message_start and the last message_delta — the last value of each field, never a sum", async () => {
      provider.reset();
      provider.usage = { input_tokens: 300, cache_creation_input_tokens: 0, cache_read_input_tokens: 4_000, output_tokens: 77 };
      provider.startInput = 250;
      const stream = client("k-acme").messages.stream({ ...ask, max_tokens: 64 });
      const final = await stream.finalMessage();
      assert.equal(final.content.find((b): b is Anthropic.TextBlock => b.type === "text")?.text, words.join(""));
      const requestId = (await stream.withResponse()).response.headers.get("x-request-id")!;
      assert.equal(provider.server.received.at(-1)!.body.max_tokens, 64);
      const row = await stack.row("acme", requestId);
      assert.deepEqual([row.input_tokens, row.cache_read_tokens, row.cache_write_tokens, row.output_tokens, row.estimated], [4_300, 4_000, 0, 77, false]);
      assert.equal(row.cost_micros, costOf(provider.usage));
    });

    test("GetUsage answers each field's total, equal to the ledger rows", async () => {
      const usage = await stack.usage("acme");
      assert.deepEqual(usageTotals(usage), await stack.ledgerTotals("acme"));
      assert.ok(usage.cacheReadTokens > 0n && usage.cacheWriteTokens > 0n);
    });

    test("a client that aborts mid-stream is settled estimated: the input and cache counts message_start reported, the output produced (thinking as reasoning)", async () => {
      provider.reset();
      provider.holdAt = MessagesProvider.eventsBeforeEnd;
      const stream = client("k-acme").messages.stream({ ...ask, max_tokens: 300 });
      let texts = 0;
      for await (const event of stream) {
        if (event.type === "content_block_delta" && event.delta.type === "text_delta" && ++texts === words.length) break; // the provider holds after this one
      }
      const requestId = (await stream.withResponse()).response.headers.get("x-request-id")!;
      const row = await stack.row("acme", requestId);
      const reasoning = countTextTokens(thinking);
      assert.deepEqual(
        [row.outcome, row.estimated, row.input_tokens, row.cache_read_tokens, row.cache_write_tokens, row.output_tokens, row.reasoning_tokens],
        ["CLIENT_ABORTED", true, 1_000 + 2_000 + 6_000, 6_000, 2_000, countTextTokens(words.join("")) + reasoning, reasoning],
      );
      await waitFor(() => provider.server.holding === 0, "the provider call to be cut");
    });

    test("the provider cut mid-stream: the SDK gets Anthropic's error event; the ledger the reported input and the output produced", async () => {
      provider.reset();
      provider.cutAt = 1 + 3 + 1 + 2;
      const stream = client("k-acme").messages.stream(ask);
      const err = await stream.finalMessage().then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof Anthropic.APIError, String(err));
      assert.deepEqual((err.error as { type: string; error: { type: string } }).error.type, "api_error");
      const requestId = (await stream.withResponse()).response.headers.get("x-request-id")!;
      const row = await stack.row("acme", requestId);
      assert.deepEqual([row.outcome, row.estimated, row.input_tokens, row.output_tokens], ["UPSTREAM_ERROR", true, 9_000, countTextTokens(thinking) + countTextTokens(words.slice(0, 2).join(""))]);
    });

    test("an SSE stream with a malformed event reaches the client unchanged and is settled from what could be read", async () => {
      provider.reset();
      provider.garble = true;
      const res = await fetch(`${stack.url}/v1/messages`, {
        method: "POST", headers: { "x-api-key": secret("k-acme"), "x-llm-task": "DRAFT", "anthropic-version": "2023-06-01", "content-type": "application/json" },
        body: JSON.stringify({ ...ask, stream: true }),
      });
      const text = await res.text();
      assert.equal(res.status, 200);
      assert.match(text, /data: \{"type":"content_block_delta","delta":\{"text":"broken\n\n/, "the malformed event as the provider sent it");
      assert.match(text, /event: message_stop\ndata: \{"type":"message_stop"\}\n\n$/);
      const row = await stack.row("acme", res.headers.get("x-request-id")!);
      assert.deepEqual([row.input_tokens, row.output_tokens, row.estimated], [9_200, 450, false]);
    });

    test("denials as the SDK's typed errors in Anthropic's shape, with the design's status, Retry-After and x-ratelimit-*", async () => {
      const bad = await failure(client("nobody").messages.create(ask));
      assert.ok(bad instanceof Anthropic.AuthenticationError);
      assert.equal(bad.status, 401);
      assert.equal(bad.type, "authentication_error");
      const notAllowed = await failure(client("k-acme").messages.create({ ...ask, model: "huge" }));
      assert.ok(notAllowed instanceof Anthropic.PermissionDeniedError);
      assert.equal(notAllowed.type, "permission_error");
      assert.equal((notAllowed.error as { error: { code: string } }).error.code, "model_not_allowed");
      await client("k-tiny").messages.create(ask);
      const limited = await failure(client("k-tiny").messages.create(ask));
      assert.ok(limited instanceof Anthropic.RateLimitError);
      assert.equal(limited.type, "rate_limit_error");
      assert.ok(Number(limited.headers!.get("retry-after")) >= 1);
      assert.equal(limited.headers!.get("x-ratelimit-limit-requests"), "1");
      const body = limited.error as { type: string; error: { reason: string; limit_kind: string; retry_after_ms: number } };
      assert.deepEqual([body.type, body.error.reason, body.error.limit_kind], ["error", "RATE_LIMITED", "REQUESTS"]);
      assert.ok(body.error.retry_after_ms > 0);
      const quota = await failure(client("k-broke").messages.create(ask));
      assert.ok(quota instanceof Anthropic.PaymentRequiredError);
      assert.equal(quota.type, "billing_error");
    });

    test("a body that is not Anthropic's shape is a 400 BadRequestError naming the field, and reaches no provider", async () => {
      const received = provider.server.received.length;
      const cases: Array<[Record<string, unknown>, RegExp]> = [
        [{ messages: "hello" }, /messages must be a non-empty array/],
        [{ messages: [] }, /messages must be a non-empty array/],
        [{ messages: [{ role: "user" }] }, /messages\.0 must be an object with a role and a content/],
        [{ max_tokens: -1 }, /max_tokens must be a non-negative integer/],
        [{ max_tokens: 1.5 }, /max_tokens must be a non-negative integer/],
        [{ model: undefined }, /model is required by the Anthropic Messages API/],
        [{ system: 5 }, /system must be a string or an array of blocks/],
      ];
      for (const [change, message] of cases) {
        const err = await failure(client("k-acme").messages.create({ ...ask, ...change } as never));
        assert.ok(err instanceof Anthropic.BadRequestError, JSON.stringify(change));
        assert.equal(err.type, "invalid_request_error");
        assert.equal((err.error as { type: string }).type, "error", "Anthropic's error shape");
        assert.match(String(err.apiMessage), message);
      }
      assert.equal(provider.server.received.length, received);
    });

    test("/v1/messages for a model served on OpenAI's API is refused naming the mismatch; its reservation is released at once", async () => {
      const received = stack.upA.received.length;
      const err = await failure(client("k-solo").messages.create({ ...ask, model: "gpt-a" }));
      assert.ok(err instanceof Anthropic.BadRequestError);
      assert.match(String(err.apiMessage), /model "gpt-a" is served by provider "up-a" \(OpenAI API\), not the Anthropic Messages API/);
      assert.equal(stack.upA.received.length, received, "not sent to the OpenAI-API provider");
      // CONCURRENCY 1: served only if the refused request left nothing open.
      const next = await client("k-solo").messages.create(ask);
      assert.equal(next.type, "message");
      const refused = await stack.row("solo", err.headers!.get("x-request-id")!);
      assert.deepEqual([refused.outcome, refused.input_tokens, refused.output_tokens], ["UPSTREAM_ERROR", 0, 0]);
      // Chat for gpt-a (same class as claude-t) is never sent to the Anthropic-API provider.
      const before = provider.server.received.length;
      await stack.client("k-solo").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "hi" }] });
      assert.equal(provider.server.received.length, before);
    });

    test("count_tokens passes through unmetered: the credential checked, the provider's key and model, no ledger row", async () => {
      const rowsBefore = (await stack.ledger("acme")).length;
      const counted = await client("k-acme").messages.countTokens({ model: "claude-t", messages: ask.messages });
      assert.equal(counted.input_tokens, 4_321, "the provider's count");
      const sent = provider.server.received.at(-1)!;
      assert.equal(sent.path, "/messages/count_tokens");
      assert.equal(sent.body.model, "claude-t-2026");
      assert.equal(sent.headers["x-api-key"], "sk-ant-provider-SECRET");
      assert.ok(countInputTokens("/messages/count_tokens", sent.body) > 0);
      const bad = await failure(client("nobody").messages.countTokens({ model: "claude-t", messages: ask.messages }));
      assert.ok(bad instanceof Anthropic.AuthenticationError);
      const mismatch = await failure(client("k-acme").messages.countTokens({ model: "gpt-a", messages: ask.messages }));
      assert.ok(mismatch instanceof Anthropic.BadRequestError);
      const notAllowed = await failure(client("k-acme").messages.countTokens({ model: "huge", messages: ask.messages }));
      assert.ok(notAllowed instanceof Anthropic.PermissionDeniedError);
      assert.equal((await stack.ledger("acme")).length, rowsBefore, "nothing metered");
    });
  });
}

import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { countInputTokens, countTextTokens } from "../../control-plane/token-counter.js";
import { counterBackends } from "../support/counter-backends.js";
import { ScriptedProvider, type ProviderCall, type SseEvent } from "./support/scripted-provider.js";
import { Stack, usageTotals, waitFor } from "./support/stack.js";

/** What the Responses provider reports, in its own shape: cached tokens inside input_tokens, reasoning inside output_tokens. */
interface ResponsesUsage { input_tokens: number; input_tokens_details: { cached_tokens: number }; output_tokens: number; output_tokens_details: { reasoning_tokens: number }; total_tokens: number }
const usageOf = (input: number, cached: number, output: number, reasoning: number): ResponsesUsage => ({
  input_tokens: input, input_tokens_details: { cached_tokens: cached }, output_tokens: output, output_tokens_details: { reasoning_tokens: reasoning }, total_tokens: input + output,
});

const words = ["A", " widget", " comprising", " a", " hinge"];
const reasoningSummary = "The claim needs a hinge and a latch.";

/**
 * An OpenAI Responses provider written for this test: a Response object with
 * usage, or the Responses event stream ending with response.completed (or
 * .incomplete), cut or held on demand.
 */
class ResponsesProvider {
  usage = usageOf(5_000, 4_096, 700, 300);
  terminal: "response.completed" | "response.incomplete" = "response.completed";
  cutAt: number | undefined;
  holdAt: number | undefined;
  readonly server = new ScriptedProvider((call, res) => this.answer(call, res));

  reset(): void {
    this.usage = usageOf(5_000, 4_096, 700, 300);
    this.terminal = "response.completed";
    this.cutAt = undefined;
    this.holdAt = undefined;
  }

  /** The stream's events before its terminal event: created, text deltas, a reasoning summary delta. */
  static eventsBeforeTerminal = 2 + words.length + 1;

  private answer(call: ProviderCall, res: ServerResponse): Promise<void> | void {
    const text = words.join("");
    const item = { id: "msg_1", type: "message", status: "completed", role: "assistant", content: [{ type: "output_text", text, annotations: [] }] };
    const response = (status: string, usage: unknown) => ({ id: "resp_1", object: "response", created_at: 1, status, model: call.body.model, output: status === "in_progress" ? [] : [item], usage });
    if (!call.body.stream) return this.server.json(res, response("completed", this.usage));
    const at = { item_id: "msg_1", output_index: 0, content_index: 0 };
    const events: SseEvent[] = [
      { event: "response.created", data: { type: "response.created", response: response("in_progress", null) } },
      { event: "response.output_item.added", data: { type: "response.output_item.added", output_index: 0, item: { ...item, status: "in_progress", content: [] } } },
      ...words.map((delta) => ({ event: "response.output_text.delta", data: { type: "response.output_text.delta", ...at, delta } })),
      { event: "response.reasoning_summary_text.delta", data: { type: "response.reasoning_summary_text.delta", item_id: "rs_1", output_index: 1, summary_index: 0, delta: reasoningSummary } },
      { event: this.terminal, data: { type: this.terminal, response: response(this.terminal === "response.completed" ? "completed" : "incomplete", this.usage) } },
    ];
    return this.server.sse(res, events.map((e, i) => ({ ...e, data: { ...(e.data as object), sequence_number: i } })), { cutAt: this.cutAt, holdAt: this.holdAt });
  }
}

// $2.50 per million input tokens, $0.25 cache reads, $10 output (reasoning is output).
const respModel = { name: "resp-model", modelClass: "PRO_M", provider: "resp-up", providerModel: "resp-model-2025", inputMicrosPerMtok: 2_500_000, cacheReadMicrosPerMtok: 250_000, outputMicrosPerMtok: 10_000_000 };
/** Served on Anthropic's API, in the same class: chat and responses must never go to it. */
const claudeModel = { name: "claude-r", modelClass: "PRO_M", provider: "claude-r-up", inputMicrosPerMtok: 3_000_000, outputMicrosPerMtok: 15_000_000 };

/** Cost in micro-USD as the issue states it, by hand: uncached input, cache reads, output, each at its price; rounded up once. */
const costOf = (u: ResponsesUsage) => Math.ceil(((u.input_tokens - u.input_tokens_details.cached_tokens) * 2.5 + u.input_tokens_details.cached_tokens * 0.25 + u.output_tokens * 10));

for (const backend of counterBackends("admresp")) {
  describe(`data plane: the OpenAI Responses API with the openai SDK (${backend.name} counters)`, { skip: backend.skip }, () => {
    let stack: Stack;
    const provider = new ResponsesProvider();
    const unused = new ScriptedProvider((_call, res) => void res.writeHead(500).end());

    before(async () => {
      await provider.server.start();
      await unused.start();
      stack = await Stack.start({
        tenants: [
          { id: "acme", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 10_000_000 }] },
          { id: "solo", limits: [{ kind: "CONCURRENCY", per: "TENANT", value: 1 }] },
          { id: "tiny", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 1 }] },
        ],
        controlPlane: backend.config(),
        models: [respModel, claudeModel],
        providers: [
          { name: "resp-up", baseUrl: provider.server.baseUrl, apiKey: "sk-resp-SECRET" },
          { name: "claude-r-up", baseUrl: unused.baseUrl, api: "anthropic", apiKey: "sk-claude-SECRET" },
        ],
      });
    });
    after(async () => {
      await stack.stop();
      await provider.server.stop();
      await unused.stop();
      await backend.cleanUp();
    });

    test("responses.create: routed model, max_output_tokens clamped (and set when absent), the provider's own key only; the ledger has its usage per field and the exact cost", async () => {
      provider.reset();
      const { data, response } = await stack.client("k-acme", { headers: { "x-api-key": "client-junk" } }).responses
        .create({ model: "resp-model", instructions: "You draft claims.", input: "Draft claim 1", max_output_tokens: 100_000 })
        .withResponse();
      assert.equal(data.output_text, words.join(""));
      assert.deepEqual(data.usage, provider.usage, "the provider's usage reaches the client as it sent it");
      const sent = provider.server.received.at(-1)!;
      assert.equal(sent.path, "/responses");
      assert.equal(sent.body.model, "resp-model-2025", "the route's provider model");
      assert.equal(sent.body.max_output_tokens, 500, "clamped to the plan's OUTPUT_TOKENS cap");
      assert.equal(sent.body.stream_options, undefined);
      assert.equal(sent.headers.authorization, "Bearer sk-resp-SECRET", "the provider's key, in OpenAI's header");
      assert.equal(sent.headers["x-api-key"], undefined, "never the client's credential headers");

      const row = await stack.row("acme", response.headers.get("x-request-id")!);
      assert.deepEqual(
        [row.input_tokens, row.cache_read_tokens, row.cache_write_tokens, row.output_tokens, row.reasoning_tokens, row.outcome, row.estimated, row.model, row.provider],
        [5_000, 4_096, 0, 700, 300, "SUCCESS", false, "resp-model", "resp-up"],
      );
      // 904 uncached × $2.50 + 4,096 cached × $0.25 + 700 × $10, per million: 2,260 + 1,024 + 7,000.
      assert.equal(row.cost_micros, 10_284);
      assert.equal(costOf(provider.usage), 10_284);

      await stack.client("k-acme").responses.create({ model: "resp-model", input: [{ role: "user", content: [{ type: "input_text", text: "Draft claim 2" }] }] });
      assert.equal(provider.server.received.at(-1)!.body.max_output_tokens, 500, "no cap asked: the plan's cap is set");
    });

    test("responses.create streamed: passed through event by event, usage from response.completed (or response.incomplete), nothing added to the body", async () => {
      for (const terminal of ["response.completed", "response.incomplete"] as const) {
        provider.reset();
        provider.terminal = terminal;
        provider.usage = usageOf(2_048, 1_024, 96, 64);
        const { data: stream, response } = await stack.client("k-acme").responses.create({ model: "resp-model", input: "Stream claim 1", stream: true }).withResponse();
        const types: string[] = [];
        let text = "";
        for await (const event of stream) {
          types.push(event.type);
          if (event.type === "response.output_text.delta") text += event.delta;
        }
        assert.equal(text, words.join(""));
        assert.equal(types.at(-1), terminal);
        const sent = provider.server.received.at(-1)!.body;
        assert.equal(sent.stream, true);
        assert.equal(sent.stream_options, undefined, "Responses streams report usage unasked");
        const row = await stack.row("acme", response.headers.get("x-request-id")!);
        assert.deepEqual([row.input_tokens, row.cache_read_tokens, row.output_tokens, row.reasoning_tokens, row.estimated], [2_048, 1_024, 96, 64, false], terminal);
        assert.equal(row.cost_micros, costOf(provider.usage), terminal);
      }
    });

    test("GetUsage answers each field's total, equal to the ledger rows", async () => {
      const usage = await stack.usage("acme");
      assert.deepEqual(usageTotals(usage), await stack.ledgerTotals("acme"));
      assert.ok(usage.cacheReadTokens > 0n && usage.reasoningTokens > 0n);
    });

    test("a client that aborts mid-stream is settled with what was produced (text and reasoning, estimated), the counted input", async () => {
      provider.reset();
      provider.holdAt = ResponsesProvider.eventsBeforeTerminal;
      const body = { model: "resp-model", input: "Stream a claim, then leave", stream: true as const };
      const { data: stream, response } = await stack.client("k-acme").responses.create(body).withResponse();
      let seen = 0;
      for await (const event of stream) {
        if (event.type === "response.reasoning_summary_text.delta") break; // the last event before the provider holds
        seen++;
      }
      assert.equal(seen, 2 + words.length);
      const row = await stack.row("acme", response.headers.get("x-request-id")!);
      const reasoning = countTextTokens(reasoningSummary);
      assert.deepEqual(
        [row.outcome, row.estimated, row.input_tokens, row.cache_read_tokens, row.output_tokens, row.reasoning_tokens],
        ["CLIENT_ABORTED", true, countInputTokens("/responses", body), 0, countTextTokens(words.join("")) + reasoning, reasoning],
      );
      await waitFor(() => provider.server.holding === 0, "the provider call to be cut");
    });

    test("the provider cut mid-stream: the client gets a Responses error event, the ledger what was produced", async () => {
      provider.reset();
      provider.cutAt = 2 + 2;
      const { data: stream, response } = await stack.client("k-acme").responses.create({ model: "resp-model", input: "Stream, then break", stream: true }).withResponse();
      const events: Array<{ type: string; code?: unknown }> = [];
      for await (const event of stream) events.push(event as never);
      assert.deepEqual(events.at(-1), { type: "error", code: "upstream_error", message: "the provider stopped mid-stream", param: null });
      const row = await stack.row("acme", response.headers.get("x-request-id")!);
      assert.deepEqual([row.outcome, row.estimated, row.output_tokens], ["UPSTREAM_ERROR", true, countTextTokens(words.slice(0, 2).join(""))]);
    });

    test("denials and bad input as the SDK's typed errors; a body of the wrong shape reaches no provider", async () => {
      const failure = async (call: Promise<unknown>) => {
        const err = await call.then(() => undefined, (e: unknown) => e);
        assert.ok(err instanceof OpenAI.APIError, `expected an APIError, got ${String(err)}`);
        return err;
      };
      const create = (key: string, body: Record<string, unknown>) => stack.client(key).responses.create({ model: "resp-model", input: "hi", ...body } as never);
      assert.ok(await failure(create("nobody", {})) instanceof OpenAI.AuthenticationError);
      const notAllowed = await failure(create("k-acme", { model: "huge" }));
      assert.ok(notAllowed instanceof OpenAI.PermissionDeniedError);
      assert.equal(notAllowed.code, "model_not_allowed");
      await create("k-tiny", {});
      const limited = await failure(create("k-tiny", {}));
      assert.ok(limited instanceof OpenAI.RateLimitError);
      assert.ok(Number(limited.headers!.get("retry-after")) >= 1);
      assert.equal(limited.headers!.get("x-ratelimit-remaining-requests"), "0");

      const received = provider.server.received.length;
      for (const [body, param] of [[{ input: 42 }, "input"], [{ input: [1, 2] }, "input"], [{ model: undefined }, "model"], [{ max_output_tokens: -1 }, "max_output_tokens"], [{ max_output_tokens: 2.5 }, "max_output_tokens"], [{ instructions: 7 }, "instructions"]] as const) {
        const err = await failure(create("k-acme", body));
        assert.ok(err instanceof OpenAI.BadRequestError, JSON.stringify(body));
        assert.equal(err.param, param);
      }
      assert.equal(provider.server.received.length, received, "no provider was called");
    });

    test("a model served on Anthropic's API is refused naming the mismatch; its reservation is released at once", async () => {
      const client = stack.client("k-solo");
      const err = await client.responses.create({ model: "claude-r", input: "hi" }).then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof OpenAI.BadRequestError);
      assert.equal(err.code, "model_api_mismatch");
      assert.match(err.message, /model "claude-r" is served by provider "claude-r-up" \(Anthropic API\), not the OpenAI Responses API/);
      assert.equal(unused.received.length, 0);
      // CONCURRENCY 1: served only if the refused request left nothing open.
      const next = await client.responses.create({ model: "resp-model", input: "again" });
      assert.equal(next.output_text, words.join(""));
      const refused = await stack.row("solo", err.headers!.get("x-request-id")!);
      assert.deepEqual([refused.outcome, refused.input_tokens, refused.output_tokens, refused.cost_micros], ["UPSTREAM_ERROR", 0, 0, 0]);
      // Chat to a model of the same class never falls back onto the Anthropic-API candidate.
      const chat = await client.chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "hi" }] });
      assert.ok(chat.choices.length > 0);
    });

    test("GET /v1/responses/{id} and the other stored-response routes are refused clearly", async () => {
      for (const [method, path] of [["GET", "/v1/responses/resp_1"], ["DELETE", "/v1/responses/resp_1"], ["POST", "/v1/responses/resp_1/cancel"], ["GET", "/v1/responses/resp_1/input_items"]]) {
        const res = await fetch(`${stack.url}${path}`, { method, headers: { authorization: "Bearer x" } });
        assert.equal(res.status, 404, path);
        const body = (await res.json()) as { error: { code: string; message: string } };
        assert.equal(body.error.code, "unsupported_route");
        assert.match(body.error.message, /only POST \/v1\/responses is/);
      }
    });
  });
}

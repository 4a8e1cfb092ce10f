import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import type { UsageRecord } from "../../data-plane/provider-usage.js";
import { settledUsage, UsageFeed, UsageReader } from "../../data-plane/usage-reader.js";
import type { LlmFamily } from "../../control-plane/llm-request.js";
import { countTextTokens } from "../../control-plane/token-counter.js";

const event = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
const delta = (content: string) => ({ choices: [{ index: 0, delta: { content } }] });

/** A usage record with the given counts (parts 0 unless given). */
const usage = (inputTokens: number, outputTokens: number, parts: Partial<UsageRecord> = {}): UsageRecord => ({
  inputTokens, outputTokens, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, ...parts,
});

/** The usage a reader holds as complete (undefined when it has none, or only part of it). */
const complete = (r: UsageReader): UsageRecord | undefined => {
  const reported = r.reported();
  return reported?.complete ? reported.usage : undefined;
};

/** Feeds the text in every split, byte by byte, to catch events cut across chunks. */
function readSplit(text: string, sse: boolean, size: number, family: LlmFamily = "chat"): UsageReader {
  const reader = new UsageReader(family, sse);
  const bytes = Buffer.from(text);
  for (let i = 0; i < bytes.length; i += size) reader.push(bytes.subarray(i, i + size));
  reader.finish();
  return reader;
}

describe("data plane: reading usage from provider answers", () => {
  test("SSE: the final usage, whatever the chunking (multi-byte characters, CRLF, events cut anywhere)", () => {
    const text = event(delta("héllo ")) + event(delta("wörld")).replace(/\n/g, "\r\n") + event({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 3 } }) + "data: [DONE]\n\n";
    for (const size of [1, 2, 3, 7, 1000]) {
      const r = readSplit(text, true, size);
      assert.deepEqual(complete(r), usage(12, 3), `chunks of ${size}`);
      assert.equal(r.generatedText(), "héllo wörld");
    }
  });

  test("SSE: usage in a chunk that also carries choices, and text of tool calls", () => {
    const text = event({ choices: [{ index: 0, delta: { tool_calls: [{ function: { name: "lookup", arguments: '{"q":1}' } }] } }] })
      + event({ choices: [{ index: 0, delta: { content: "done" }, finish_reason: "stop" }], usage: { prompt_tokens: 5, completion_tokens: 9 } });
    const r = readSplit(text, true, 5);
    assert.deepEqual(complete(r), usage(5, 9));
    assert.equal(r.generatedText(), 'lookup{"q":1}done');
  });

  test("SSE: `\"usage\": null` in every chunk (OpenAI with include_usage) and the usage chunk last", () => {
    const text = event({ ...delta("one"), usage: null }) + event({ ...delta(" two"), usage: null }) + event({ choices: [], usage: { prompt_tokens: 4, completion_tokens: 2 } }) + "data: [DONE]\n\n";
    const r = readSplit(text, true, 9);
    assert.deepEqual(complete(r), usage(4, 2));
    assert.equal(r.generatedText(), "one two");
  });

  test("SSE: a usage key the quick check does not recognise is still read once the events are", () => {
    const escaped = `data: {"choices":[],"\\u0075sage":{"prompt_tokens":6,"completion_tokens":1}}\n\n`;
    const r = readSplit(event(delta("hi")) + escaped, true, 1000);
    assert.deepEqual(complete(r), usage(6, 1));
    assert.equal(r.generatedText(), "hi");
  });

  test("SSE: a long stream (more unread events than are held) keeps all its text and its last usage", () => {
    const piece = "lorem ipsum ".repeat(20);
    const pieces = 2_000;
    const text = Array.from({ length: pieces }, () => event(delta(piece))).join("") + event({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 2 } })
      + event({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 4 } });
    const r = readSplit(text, true, 4096);
    assert.deepEqual(complete(r), usage(3, 4), "the last usage reported");
    assert.equal(r.generatedText(), piece.repeat(pieces));
  });

  test("no usage: output estimated with the tokenizer from the streamed text", () => {
    const r = readSplit(event(delta("one two three")) + event({ choices: [{ index: 0, text: " four" }] }), true, 4);
    assert.equal(r.reported(), undefined);
    assert.equal(r.estimatedOutput().outputTokens, countTextTokens("one two three four"));
  });

  test("JSON: usage from the body; a body that is not JSON counts as generated text", () => {
    const json = readSplit(JSON.stringify({ choices: [{ message: { content: "hi" } }], usage: { prompt_tokens: 3, completion_tokens: 1 } }), false, 3);
    assert.deepEqual(complete(json), usage(3, 1));
    assert.equal(json.unreadable(), false);
    const garbage = readSplit("<html>502 Bad Gateway</html>", false, 4);
    assert.equal(garbage.reported(), undefined);
    assert.equal(garbage.unreadable(), true);
    assert.ok(garbage.estimatedOutput().outputTokens > 0);
  });

  test("a compressed answer is decompressed for reading only", async () => {
    const reader = new UsageReader("chat", false);
    const feed = new UsageFeed(reader, "gzip");
    const zipped = gzipSync(JSON.stringify({ usage: { prompt_tokens: 8, completion_tokens: 2 } }));
    for (let i = 0; i < zipped.length; i += 5) feed.push(zipped.subarray(i, i + 5));
    await feed.finish();
    assert.deepEqual(complete(reader), usage(8, 2));
  });

  test("Chat: cached and reasoning tokens are the parts of prompt_tokens and completion_tokens they are", () => {
    const body = { choices: [{ message: { content: "hi" } }], usage: { prompt_tokens: 2_000, completion_tokens: 300, prompt_tokens_details: { cached_tokens: 1_536 }, completion_tokens_details: { reasoning_tokens: 256 } } };
    assert.deepEqual(complete(readSplit(JSON.stringify(body), false, 7)), usage(2_000, 300, { cacheReadTokens: 1_536, reasoningTokens: 256 }));
    const stream = event(delta("hi")) + event({ choices: [], usage: body.usage }) + "data: [DONE]\n\n";
    assert.deepEqual(complete(readSplit(stream, true, 5)), usage(2_000, 300, { cacheReadTokens: 1_536, reasoningTokens: 256 }));
  });

  test("a provider's inconsistent parts never exceed their whole (the Settle would be refused)", () => {
    const body = { usage: { prompt_tokens: 10, completion_tokens: 5, prompt_tokens_details: { cached_tokens: 99 }, completion_tokens_details: { reasoning_tokens: 50 } } };
    assert.deepEqual(complete(readSplit(JSON.stringify(body), false, 100)), usage(10, 5, { cacheReadTokens: 10, reasoningTokens: 5 }));
  });

  test("Responses: usage from the Response object, and on streams from response.completed's response; text from the deltas only", () => {
    const u = { input_tokens: 900, input_tokens_details: { cached_tokens: 512 }, output_tokens: 70, output_tokens_details: { reasoning_tokens: 20 }, total_tokens: 970 };
    const json = { object: "response", output: [{ type: "reasoning", summary: [{ type: "summary_text", text: "why" }] }, { type: "message", content: [{ type: "output_text", text: "hello" }] }, { type: "function_call", name: "f", arguments: "{}" }], usage: u };
    const r = readSplit(JSON.stringify(json), false, 11, "responses");
    assert.deepEqual(complete(r), usage(900, 70, { cacheReadTokens: 512, reasoningTokens: 20 }));
    assert.deepEqual([r.generatedText(), r.reasoningText()], ["hellof{}", "why"]);
    const typed = (o: { type: string }) => `event: ${o.type}\n${event(o)}`;
    const stream = typed({ type: "response.created", response: { usage: null } } as never)
      + typed({ type: "response.output_text.delta", delta: "hel" } as never) + typed({ type: "response.output_text.delta", delta: "lo" } as never)
      + typed({ type: "response.function_call_arguments.delta", delta: "{\"q\":1}" } as never)
      + typed({ type: "response.reasoning_summary_text.delta", delta: "why" } as never)
      + typed({ type: "response.completed", response: { ...json, output: [{ type: "message", content: [{ type: "output_text", text: "hello" }] }] } } as never);
    for (const size of [1, 4, 64, 10_000]) {
      const s = readSplit(stream, true, size, "responses");
      assert.deepEqual(complete(s), usage(900, 70, { cacheReadTokens: 512, reasoningTokens: 20 }), `chunks of ${size}`);
      assert.deepEqual([s.generatedText(), s.reasoningText()], ['hello{"q":1}', "why"], "the completed response's output is not counted twice");
    }
    const cut = readSplit(stream.slice(0, stream.indexOf("event: response.completed")), true, 16, "responses");
    assert.equal(cut.reported(), undefined, "no usage before the terminal event");
    assert.deepEqual(cut.estimatedOutput(), { outputTokens: countTextTokens('hello{"q":1}') + countTextTokens("why"), reasoningTokens: countTextTokens("why") });
  });

  test("Messages: input, cache reads and cache writes summed into the input; on streams the last value of each field, complete only once message_delta reports the output", () => {
    const json = { type: "message", content: [{ type: "thinking", thinking: "hmm" }, { type: "text", text: "hi" }, { type: "tool_use", name: "lookup", input: { q: 1 } }], usage: { input_tokens: 10, cache_creation_input_tokens: 200, cache_read_input_tokens: 3_000, output_tokens: 40 } };
    const r = readSplit(JSON.stringify(json), false, 9, "messages");
    assert.deepEqual(complete(r), usage(3_210, 40, { cacheReadTokens: 3_000, cacheWriteTokens: 200 }));
    assert.deepEqual([r.generatedText(), r.reasoningText()], ['hilookup{"q":1}', "hmm"]);
    const typed = (o: { type: string }) => `event: ${o.type}\n${event(o)}`;
    const start = typed({ type: "message_start", message: { usage: { input_tokens: 10, cache_creation_input_tokens: 200, cache_read_input_tokens: 3_000, output_tokens: 1 } } } as never)
      + typed({ type: "content_block_start", index: 0, content_block: { type: "tool_use", name: "lookup", input: {} } } as never)
      + typed({ type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: "{\"q\":" } } as never)
      + typed({ type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: "1}" } } as never)
      + typed({ type: "content_block_delta", index: 1, delta: { type: "thinking_delta", thinking: "hmm" } } as never)
      + typed({ type: "ping" }) + "data: {not json\n\n";
    const end = typed({ type: "message_delta", usage: { output_tokens: 20 } } as never)
      + typed({ type: "message_delta", usage: { input_tokens: 12, cache_read_input_tokens: 3_000, output_tokens: 40 } } as never) + typed({ type: "message_stop" });
    for (const size of [1, 5, 100, 10_000]) {
      const s = readSplit(start + end, true, size, "messages");
      assert.deepEqual(complete(s), usage(3_212, 40, { cacheReadTokens: 3_000, cacheWriteTokens: 200 }), `chunks of ${size}`);
    }
    const cut = readSplit(start, true, 7, "messages");
    assert.deepEqual(cut.reported(), { usage: usage(3_210, 1, { cacheReadTokens: 3_000, cacheWriteTokens: 200 }), complete: false });
    assert.deepEqual([cut.generatedText(), cut.reasoningText()], ['lookup{"q":1}', "hmm"]);
  });

  test("settledUsage: all reported; part reported (the rest estimated); nothing reported (estimated if the provider worked, else nothing)", () => {
    const typed = (o: { type: string }) => `event: ${o.type}\n${event(o)}`;
    const started = readSplit(typed({ type: "message_start", message: { usage: { input_tokens: 5, cache_read_input_tokens: 100, output_tokens: 1 } } } as never)
      + typed({ type: "content_block_delta", delta: { type: "text_delta", text: "one two three" } } as never), true, 8, "messages");
    assert.deepEqual(settledUsage(started, { countedInputTokens: 77, worked: true }), {
      usage: usage(105, countTextTokens("one two three"), { cacheReadTokens: 100 }), estimated: true,
    });
    const silent = readSplit(event(delta("one two")), true, 8);
    assert.deepEqual(settledUsage(silent, { countedInputTokens: 77, worked: true }), { usage: usage(77, countTextTokens("one two")), estimated: true });
    assert.deepEqual(settledUsage(silent, { countedInputTokens: 77, worked: false }), { usage: usage(0, 0), estimated: false });
    assert.deepEqual(settledUsage(undefined, { countedInputTokens: 77, worked: true }), { usage: usage(77, 0), estimated: true });
    const whole = readSplit(JSON.stringify({ usage: { prompt_tokens: 3, completion_tokens: 4 } }), false, 100);
    assert.deepEqual(settledUsage(whole, { countedInputTokens: 77, worked: false }), { usage: usage(3, 4), estimated: false });
  });
});

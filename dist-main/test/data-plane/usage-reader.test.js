import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { UsageFeed, UsageReader } from "../../data-plane/usage-reader.js";
import { countTextTokens } from "../../control-plane/token-counter.js";
const event = (o) => `data: ${JSON.stringify(o)}\n\n`;
const delta = (content) => ({ choices: [{ index: 0, delta: { content } }] });
/** Feeds the text in every split, byte by byte, to catch events cut across chunks. */
function readSplit(text, sse, size) {
    const reader = new UsageReader(sse);
    const bytes = Buffer.from(text);
    for (let i = 0; i < bytes.length; i += size)
        reader.push(bytes.subarray(i, i + size));
    reader.finish();
    return reader;
}
describe("data plane: reading usage from provider answers", () => {
    test("SSE: the final usage, whatever the chunking (multi-byte characters, CRLF, events cut anywhere)", () => {
        const text = event(delta("héllo ")) + event(delta("wörld")).replace(/\n/g, "\r\n") + event({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 3 } }) + "data: [DONE]\n\n";
        for (const size of [1, 2, 3, 7, 1000]) {
            const r = readSplit(text, true, size);
            assert.deepEqual(r.reported(), { inputTokens: 12, outputTokens: 3 }, `chunks of ${size}`);
            assert.equal(r.generatedText(), "héllo wörld");
        }
    });
    test("SSE: usage in a chunk that also carries choices, and text of tool calls", () => {
        const text = event({ choices: [{ index: 0, delta: { tool_calls: [{ function: { name: "lookup", arguments: '{"q":1}' } }] } }] })
            + event({ choices: [{ index: 0, delta: { content: "done" }, finish_reason: "stop" }], usage: { prompt_tokens: 5, completion_tokens: 9 } });
        const r = readSplit(text, true, 5);
        assert.deepEqual(r.reported(), { inputTokens: 5, outputTokens: 9 });
        assert.equal(r.generatedText(), 'lookup{"q":1}done');
    });
    test("SSE: `\"usage\": null` in every chunk (OpenAI with include_usage) and the usage chunk last", () => {
        const text = event({ ...delta("one"), usage: null }) + event({ ...delta(" two"), usage: null }) + event({ choices: [], usage: { prompt_tokens: 4, completion_tokens: 2 } }) + "data: [DONE]\n\n";
        const r = readSplit(text, true, 9);
        assert.deepEqual(r.reported(), { inputTokens: 4, outputTokens: 2 });
        assert.equal(r.generatedText(), "one two");
    });
    test("SSE: a usage key the quick check does not recognise is still read once the events are", () => {
        const escaped = `data: {"choices":[],"\\u0075sage":{"prompt_tokens":6,"completion_tokens":1}}\n\n`;
        const r = readSplit(event(delta("hi")) + escaped, true, 1000);
        assert.deepEqual(r.reported(), { inputTokens: 6, outputTokens: 1 });
        assert.equal(r.generatedText(), "hi");
    });
    test("SSE: a long stream (more unread events than are held) keeps all its text and its last usage", () => {
        const piece = "lorem ipsum ".repeat(20);
        const pieces = 2_000;
        const text = Array.from({ length: pieces }, () => event(delta(piece))).join("") + event({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 2 } })
            + event({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 4 } });
        const r = readSplit(text, true, 4096);
        assert.deepEqual(r.reported(), { inputTokens: 3, outputTokens: 4 }, "the last usage reported");
        assert.equal(r.generatedText(), piece.repeat(pieces));
    });
    test("no usage: output estimated with the tokenizer from the streamed text", () => {
        const r = readSplit(event(delta("one two three")) + event({ choices: [{ index: 0, text: " four" }] }), true, 4);
        assert.equal(r.reported(), undefined);
        assert.equal(r.estimatedOutputTokens(), countTextTokens("one two three four"));
    });
    test("JSON: usage from the body; a body that is not JSON counts as generated text", () => {
        const json = readSplit(JSON.stringify({ choices: [{ message: { content: "hi" } }], usage: { prompt_tokens: 3, completion_tokens: 1 } }), false, 3);
        assert.deepEqual(json.reported(), { inputTokens: 3, outputTokens: 1 });
        assert.equal(json.unreadable(), false);
        const garbage = readSplit("<html>502 Bad Gateway</html>", false, 4);
        assert.equal(garbage.reported(), undefined);
        assert.equal(garbage.unreadable(), true);
        assert.ok(garbage.estimatedOutputTokens() > 0);
    });
    test("a compressed answer is decompressed for reading only", async () => {
        const reader = new UsageReader(false);
        const feed = new UsageFeed(reader, "gzip");
        const zipped = gzipSync(JSON.stringify({ usage: { prompt_tokens: 8, completion_tokens: 2 } }));
        for (let i = 0; i < zipped.length; i += 5)
            feed.push(zipped.subarray(i, i + 5));
        await feed.finish();
        assert.deepEqual(reader.reported(), { inputTokens: 8, outputTokens: 2 });
    });
});
//# sourceMappingURL=usage-reader.test.js.map
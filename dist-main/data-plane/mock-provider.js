import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { countInputTokens, countTextTokens } from "../control-plane/token-counter.js";
/** What the mock "generates": a reply of 12-40 words of this text, cut by max_tokens. */
const prose = ("This is a reply from the mock provider. A widget comprising a frame, a hinge attached to the frame, and a latch "
    + "that holds the hinge closed until released; the latch is biased by a spring so that the widget closes by itself. "
    + "Claims, prior art and diagrams follow the same pattern, one token at a time.").split(" ");
/**
 * An OpenAI-compatible provider for demos and tests: chat completions
 * (streaming or not), completions, embeddings and models. Deterministic: the
 * reply is the start of a fixed text, its length chosen by a hash of the
 * request and cut at max_tokens; usage is counted with the same tokenizer the
 * proxy uses, and reported (on streams when stream_options.include_usage is set).
 */
export async function startMockProvider(options = {}) {
    const server = createServer((req, res) => void handle(req, res, options).catch(() => res.destroy()));
    const port = await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve(server.address().port));
    });
    return {
        server,
        port,
        baseUrl: `http://127.0.0.1:${port}/v1`,
        close: () => new Promise((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
        }),
    };
}
async function handle(req, res, options) {
    let raw = "";
    for await (const chunk of req)
        raw += chunk;
    const path = (req.url ?? "").split("?")[0];
    if (options.apiKey && req.headers.authorization !== `Bearer ${options.apiKey}`)
        return error(res, 401, "invalid provider API key");
    if (req.method === "GET" && path === "/v1/models") {
        return send(res, { object: "list", data: ["mock-fast", "mock-standard", "mock-pro", "mock-pro-backup", "mock-pro-large", "mock-advanced"].map((id) => ({ id, object: "model", created: 0, owned_by: "mock" })) });
    }
    let body;
    try {
        body = JSON.parse(raw || "{}");
    }
    catch {
        return error(res, 400, "invalid JSON body");
    }
    const model = String(body.model ?? "mock");
    if (path === "/v1/embeddings") {
        const inputs = Array.isArray(body.input) ? body.input : [body.input];
        const promptTokens = countInputTokens("/embeddings", body);
        return send(res, {
            object: "list", model,
            data: inputs.map((input, index) => ({ object: "embedding", index, embedding: vector(JSON.stringify(input)) })),
            usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
        });
    }
    if (path !== "/v1/chat/completions" && path !== "/v1/completions")
        return error(res, 404, `no route ${path}`);
    const chat = path === "/v1/chat/completions";
    const promptTokens = countInputTokens(chat ? "/chat/completions" : "/completions", body);
    const maxTokens = Number(body.max_completion_tokens ?? body.max_tokens ?? Infinity);
    const pieces = reply(raw, Math.max(1, maxTokens));
    const text = pieces.join("");
    const usage = { prompt_tokens: promptTokens, completion_tokens: countTextTokens(text), total_tokens: promptTokens + countTextTokens(text) };
    const id = `mock-${createHash("sha256").update(raw).digest("hex").slice(0, 12)}`;
    const created = Math.floor(Date.now() / 1000);
    if (!body.stream) {
        return send(res, {
            id, object: chat ? "chat.completion" : "text_completion", created, model,
            choices: [chat ? { index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" } : { index: 0, text, finish_reason: "stop" }],
            usage,
        });
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const object = chat ? "chat.completion.chunk" : "text_completion";
    for (const piece of pieces) {
        if (res.destroyed)
            return;
        res.write(`data: ${JSON.stringify({ id, object, created, model, choices: [chat ? { index: 0, delta: { content: piece }, finish_reason: null } : { index: 0, text: piece, finish_reason: null }] })}\n\n`);
        if (options.chunkDelayMs)
            await new Promise((r) => setTimeout(r, options.chunkDelayMs));
    }
    res.write(`data: ${JSON.stringify({ id, object, created, model, choices: [chat ? { index: 0, delta: {}, finish_reason: "stop" } : { index: 0, text: "", finish_reason: "stop" }] })}\n\n`);
    if (body.stream_options?.include_usage)
        res.write(`data: ${JSON.stringify({ id, object, created, model, choices: [], usage })}\n\n`);
    res.end("data: [DONE]\n\n");
}
/** A reply whose length depends on the request only, so the same request always gets the same reply. */
function reply(seed, maxTokens) {
    const words = 12 + (createHash("sha256").update(seed).digest()[0] % 29);
    const pieces = prose.slice(0, words).map((w, i) => (i === 0 ? w : ` ${w}`));
    // Cut at max_tokens, as a model would.
    const out = [];
    let tokens = 0;
    for (const piece of pieces) {
        tokens += countTextTokens(piece);
        if (tokens > maxTokens)
            break;
        out.push(piece);
    }
    return out.length > 0 ? out : [pieces[0]];
}
function vector(seed) {
    const digest = createHash("sha256").update(seed).digest();
    return Array.from({ length: 8 }, (_, i) => Number(((digest[i] - 128) / 128).toFixed(6)));
}
function send(res, body) {
    const json = JSON.stringify(body);
    res.writeHead(200, { "content-type": "application/json", "content-length": String(Buffer.byteLength(json)) });
    res.end(json);
}
function error(res, status, message) {
    const json = JSON.stringify({ error: { message, type: "invalid_request_error", code: null, param: null } });
    res.writeHead(status, { "content-type": "application/json" });
    res.end(json);
}
//# sourceMappingURL=mock-provider.js.map
import { createServer } from "node:http";
import { gzipSync } from "node:zlib";
import { countInputTokens } from "../../../control-plane/token-counter.js";
/**
 * Usage as a provider would report it for a body it received (a `usageOf` for
 * MockUpstream): the input counted with the proxy's tokenizer, and a little less
 * output than the clamp it was sent — so a settled request (actual usage) and an
 * expired one (charged its estimate: input plus the clamp) tell apart.
 */
export function reportedUsage(body, path) {
    const prompt = countInputTokens(path, body);
    if (path === "/embeddings")
        return { prompt_tokens: prompt, completion_tokens: 0 };
    const max = Number(body.max_tokens);
    return { prompt_tokens: prompt, completion_tokens: max - (max % 4) || 1 };
}
/**
 * An OpenAI-compatible provider written for the tests: it reports the usage
 * the test chose (prompt_tokens / completion_tokens), streams fixed words, and
 * can fail, stall, break, omit usage or answer garbage on demand.
 */
export class MockUpstream {
    name;
    server;
    port = 0;
    behaviour = "ok";
    /** Usage to report; completion_tokens is what the test asserts in the ledger. */
    usage = { prompt_tokens: 1000, completion_tokens: 40 };
    /** Streamed pieces; each is one o200k token. */
    words = ["one", " two", " three", " four", " five", " six", " seven", " eight"];
    stallAfter = 3;
    /** How long an answer takes, like a model generating: before a plain answer, spread between a stream's chunks. */
    latencyMs = 0;
    /** Send usage in the chunk carrying the last choice (finish_reason), as some providers do. */
    usageWithChoices = false;
    received = [];
    /** Usage per request: replaces `usage` when set (e.g. derived from the body the provider received). */
    usageOf;
    /** Requests answered to the end, by the data plane's x-request-id: the usage reported (undefined: none). */
    served = new Map();
    held = [];
    constructor(name) {
        this.name = name;
    }
    get baseUrl() {
        return `http://127.0.0.1:${this.port}/v1`;
    }
    async start(port = 0) {
        this.server = createServer((req, res) => void this.handle(req, res).catch(() => res.destroy()));
        await new Promise((resolve, reject) => {
            this.server.once("error", reject);
            this.server.listen(port, "127.0.0.1", () => resolve());
        });
        this.port = this.server.address().port;
    }
    async stop() {
        for (const release of this.held)
            release();
        await new Promise((resolve) => {
            this.server.close(() => resolve());
            this.server.closeAllConnections();
        });
    }
    release() {
        for (const release of this.held.splice(0))
            release();
    }
    /** Requests currently stalled mid-stream or held before answering. */
    waiting() {
        return this.held.length;
    }
    reset() {
        this.behaviour = "ok";
        this.usage = { prompt_tokens: 1000, completion_tokens: 40 };
        this.usageWithChoices = false;
        this.stallAfter = 3;
        this.latencyMs = 0;
    }
    async handle(req, res) {
        let raw = "";
        for await (const chunk of req)
            raw += chunk;
        const body = raw ? JSON.parse(raw) : {};
        const path = (req.url ?? "").replace(/^\/v1/, "");
        this.received.push({ path, body, headers: req.headers });
        const behaviour = this.behaviour;
        if (behaviour === "fail")
            return void res.writeHead(503, { "content-type": "application/json" }).end('{"error":{"message":"overloaded"}}');
        if (behaviour === "garbage")
            return void res.writeHead(200, { "content-type": "application/json" }).end("<<not json>> lorem ipsum dolor sit amet");
        if (behaviour === "hold")
            await new Promise((resolve) => this.held.push(resolve));
        const reported = this.usageOf?.(body, path) ?? this.usage;
        const usage = behaviour === "no-usage" ? undefined : { ...reported, total_tokens: reported.prompt_tokens + reported.completion_tokens };
        const requestId = req.headers["x-request-id"];
        if (typeof requestId === "string") {
            const counted = path === "/embeddings" && usage ? { prompt_tokens: usage.prompt_tokens, completion_tokens: 0 } : usage && { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens };
            res.once("finish", () => this.served.set(requestId, counted));
        }
        const model = body.model;
        // Provider-side headers a client must never see.
        const providerHeaders = { "set-cookie": "provider-session=secret", "x-ratelimit-remaining-requests": "9999", "openai-organization": "provider-org", "x-request-id": `up-${this.received.length}` };
        if (path === "/embeddings") {
            return json(res, { object: "list", model, data: [{ object: "embedding", index: 0, embedding: [0.1, 0.2] }], usage: usage && { prompt_tokens: usage.prompt_tokens, total_tokens: usage.prompt_tokens } }, providerHeaders);
        }
        const chat = path === "/chat/completions";
        const pause = (ms) => (ms > 0 ? new Promise((r) => setTimeout(r, ms)) : new Promise((r) => setImmediate(r)));
        if (!body.stream) {
            await pause(this.latencyMs);
            const text = this.words.join("");
            const answer = {
                id: "cmpl-1", object: chat ? "chat.completion" : "text_completion", created: 1, model,
                choices: [chat ? { index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" } : { index: 0, text, finish_reason: "stop" }],
                ...(usage ? { usage } : {}),
            };
            if (behaviour === "gzip") {
                const zipped = gzipSync(JSON.stringify(answer));
                return void res.writeHead(200, { "content-type": "application/json", "content-encoding": "gzip", "content-length": zipped.length }).end(zipped);
            }
            return json(res, answer, providerHeaders);
        }
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", ...providerHeaders });
        const chunk = (choices, extra = {}) => `data: ${JSON.stringify({ id: "cmpl-1", object: chat ? "chat.completion.chunk" : "text_completion", created: 1, model, choices, ...extra })}\n\n`;
        const piece = (w) => (chat ? { index: 0, delta: { content: w }, finish_reason: null } : { index: 0, text: w, finish_reason: null });
        for (const [i, w] of this.words.entries()) {
            if (behaviour === "stall" && i === this.stallAfter) {
                const released = await new Promise((resolve) => {
                    const release = () => resolve(true);
                    this.held.push(release);
                    res.once("close", () => {
                        this.held = this.held.filter((r) => r !== release);
                        resolve(false);
                    });
                });
                if (!released || res.destroyed)
                    return;
            }
            if (behaviour === "break" && i === this.stallAfter)
                return void res.socket?.destroy();
            res.write(chunk([piece(w)]));
            await pause(this.latencyMs / this.words.length);
        }
        const wantsUsage = body.stream_options?.include_usage === true && usage;
        const last = chat ? { index: 0, delta: {}, finish_reason: "stop" } : { index: 0, text: "", finish_reason: "stop" };
        if (this.usageWithChoices) {
            res.write(chunk([last], wantsUsage ? { usage } : {}));
        }
        else {
            res.write(chunk([last]));
            if (wantsUsage)
                res.write(chunk([], { usage }));
        }
        res.end("data: [DONE]\n\n");
    }
}
function json(res, body, headers) {
    const text = JSON.stringify(body);
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...headers });
    res.end(text);
}
//# sourceMappingURL=mock-upstream.js.map
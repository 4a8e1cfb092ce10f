import { countInputTokens } from "../control-plane/token-counter.js";
export const llmPaths = new Set(["/chat/completions", "/completions", "/embeddings"]);
const maxModelChars = 128;
/** JSON is UTF-8 (RFC 8259): invalid bytes are refused, not silently replaced before they reach a provider. */
const utf8 = new TextDecoder("utf-8", { fatal: true });
/** Deeper bodies are refused before parsing: nothing an LLM API takes nests this far, and re-serializing them would exhaust the stack. */
const maxJsonDepth = 64;
/** Parses and validates a body for a route; a clear message naming the field when it is not acceptable. */
export function parseLlmRequest(path, raw) {
    let text;
    try {
        text = utf8.decode(raw);
    }
    catch {
        return { error: "the body is not valid UTF-8", param: null };
    }
    if (nestsDeeperThan(text, maxJsonDepth))
        return { error: `the body nests deeper than ${maxJsonDepth} levels`, param: null };
    let body;
    try {
        body = JSON.parse(text);
    }
    catch (err) {
        return { error: `the body is not valid JSON: ${err instanceof Error ? err.message.slice(0, 200) : "parse error"}`, param: null };
    }
    if (!body || typeof body !== "object" || Array.isArray(body))
        return { error: "the body must be a JSON object", param: null };
    const b = body;
    const model = b.model ?? "";
    if (typeof model !== "string" || model.length > maxModelChars)
        return { error: `model must be a string of at most ${maxModelChars} characters`, param: "model" };
    if (b.stream !== undefined && b.stream !== null && typeof b.stream !== "boolean")
        return { error: "stream must be a boolean", param: "stream" };
    for (const field of ["max_tokens", "max_completion_tokens"]) {
        const v = b[field];
        if (v !== undefined && v !== null && !(Number.isSafeInteger(v) && v >= 0))
            return { error: `${field} must be a non-negative integer`, param: field };
    }
    const n = b.n ?? 1;
    if (!(Number.isSafeInteger(n) && n >= 1 && n <= 128))
        return { error: "n must be an integer between 1 and 128", param: "n" };
    const missing = requiredField(path, b);
    if (missing)
        return missing;
    return {
        path,
        body: b,
        model,
        stream: path !== "/embeddings" && b.stream === true,
        maxTokens: Number(b.max_completion_tokens ?? b.max_tokens ?? 0),
        choices: n,
        inputTokens: countInputTokens(path, b),
    };
}
function requiredField(path, b) {
    switch (path) {
        case "/chat/completions":
            if (!Array.isArray(b.messages) || b.messages.length === 0)
                return { error: "messages must be a non-empty array", param: "messages" };
            return b.messages.every(isObject) ? undefined : { error: "messages must be an array of objects", param: "messages" };
        case "/completions":
            return typeof b.prompt === "string" || Array.isArray(b.prompt) ? undefined : { error: "prompt must be a string or an array", param: "prompt" };
        case "/embeddings":
            return typeof b.input === "string" || Array.isArray(b.input) ? undefined : { error: "input must be a string or an array", param: "input" };
    }
}
/** The output cap to reserve (Admit's max_output_tokens): all n choices; an embedding produces none, so one rather than the plan's default. */
export function reservedOutputTokens(request) {
    return request.path === "/embeddings" ? 1 : Math.min(request.maxTokens * request.choices, 1_000_000_000);
}
/** The Admit for a parsed request: its model, counted input tokens and reserved output cap. */
export function admitRequestFor(request, who) {
    // Built once per request: a literal with every field, as create() would build it (without its reflection).
    return {
        $typeName: "admission.v1.AdmitRequest",
        requestId: who.requestId,
        credential: who.credential,
        task: who.task,
        model: request.model,
        inputTokens: BigInt(request.inputTokens),
        maxOutputTokens: BigInt(reservedOutputTokens(request)),
        files: 0n,
        agentSteps: 0n,
        apiCalls: 0n,
        attributes: who.attributes,
    };
}
/**
 * The body sent to the provider: the routed model, the clamped output cap
 * (split across n choices), and usage requested on streams.
 */
export function rewriteBody(request, target) {
    const body = { ...request.body, model: target.providerModel };
    if (request.path !== "/embeddings" && target.maxOutputTokens !== undefined && target.maxOutputTokens > 0) {
        const field = request.body.max_completion_tokens !== undefined && request.body.max_completion_tokens !== null ? "max_completion_tokens" : "max_tokens";
        body[field] = Math.max(1, Math.floor(target.maxOutputTokens / request.choices));
    }
    if (request.stream)
        body.stream_options = { ...(isObject(request.body.stream_options) ? request.body.stream_options : {}), include_usage: true };
    return Buffer.from(JSON.stringify(body));
}
/** True when JSON text opens more than `limit` objects/arrays at once (brackets inside strings do not count). */
function nestsDeeperThan(text, limit) {
    let depth = 0;
    let inString = false;
    for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        if (inString) {
            if (c === 0x5c)
                i++; // backslash: skip the escaped character
            else if (c === 0x22)
                inString = false;
        }
        else if (c === 0x22)
            inString = true;
        else if (c === 0x7b || c === 0x5b) {
            if (++depth > limit)
                return true;
        }
        else if (c === 0x7d || c === 0x5d)
            depth--;
    }
    return false;
}
function isObject(v) {
    return typeof v === "object" && v !== null && !Array.isArray(v);
}
//# sourceMappingURL=openai-request.js.map
import { countTokens } from "gpt-tokenizer";
/**
 * Token counts with gpt-tokenizer (o200k_base, the GPT-4o/4.1/o-series
 * encoding). Exact for OpenAI's current models' text; for other providers
 * (Gemini, Grok, Llama via Ollama) it is an estimate within roughly ±15 %.
 * Only reservations and fallbacks use it: the ledger records what the
 * provider reports whenever it reports usage.
 */
// A client's text is text: "<|endoftext|>" in a prompt is counted, never treated as a control token (nor thrown on).
const asPlainText = { disallowedSpecial: new Set() };
/** Per OpenAI's accounting for chat models: each message costs its content plus 3 tokens; the reply is primed with 3. */
const tokensPerMessage = 3;
const replyPriming = 3;
/** An image part, counted as a low-detail image (the provider reports the real figure). */
const tokensPerImage = 85;
export function countTextTokens(text) {
    return text ? countTokens(text, asPlainText) : 0;
}
/** Input tokens of an OpenAI request body for the given path (/chat/completions, /completions, /embeddings). */
export function countInputTokens(path, body) {
    if (path === "/chat/completions")
        return chatTokens(body);
    return inputTokens(path === "/embeddings" ? body.input : body.prompt);
}
function chatTokens(body) {
    let n = replyPriming;
    const messages = Array.isArray(body.messages) ? body.messages : [];
    for (const raw of messages) {
        const m = (raw ?? {});
        n += tokensPerMessage + countTextTokens(typeof m.role === "string" ? m.role : "") + contentTokens(m.content);
        if (typeof m.name === "string")
            n += countTextTokens(m.name) + 1;
        if (m.tool_calls !== undefined)
            n += countTextTokens(JSON.stringify(m.tool_calls));
        if (m.function_call !== undefined)
            n += countTextTokens(JSON.stringify(m.function_call));
    }
    for (const field of ["tools", "functions", "response_format"]) {
        if (body[field] !== undefined)
            n += countTextTokens(JSON.stringify(body[field]));
    }
    return n;
}
function contentTokens(content) {
    if (typeof content === "string")
        return countTextTokens(content);
    if (!Array.isArray(content))
        return 0;
    let n = 0;
    for (const part of content) {
        const p = (part ?? {});
        if (typeof p.text === "string")
            n += countTextTokens(p.text);
        else if (p.type === "image_url" || p.type === "input_image")
            n += tokensPerImage;
    }
    return n;
}
/** A prompt or embedding input: a string, strings, or already tokenized arrays. */
function inputTokens(input) {
    if (typeof input === "string")
        return countTextTokens(input);
    if (!Array.isArray(input))
        return 0;
    let n = 0;
    for (const item of input) {
        if (typeof item === "string")
            n += countTextTokens(item);
        else if (typeof item === "number")
            n += 1;
        else if (Array.isArray(item))
            n += item.length;
    }
    return n;
}
//# sourceMappingURL=token-counter.js.map
import { countTokens } from "gpt-tokenizer";

/**
 * Token counts with gpt-tokenizer (o200k_base, the GPT-4o/4.1/o-series
 * encoding). Exact for OpenAI's current models' text; for other providers
 * (Anthropic, Gemini, Grok, Llama via Ollama) it is an estimate within roughly
 * ±15 %. Only reservations and fallbacks use it: the ledger records what the
 * provider reports whenever it reports usage.
 */

// A client's text is text: "<|endoftext|>" in a prompt is counted, never treated as a control token (nor thrown on).
const asPlainText = { disallowedSpecial: new Set<string>() };

/** Per OpenAI's accounting for chat models: each message costs its content plus 3 tokens; the reply is primed with 3. */
const tokensPerMessage = 3;
const replyPriming = 3;
/** An OpenAI image (or file) part, counted as a low-detail image (the provider reports the real figure). */
const tokensPerImage = 85;
/**
 * An Anthropic image (or binary document) block: what an image costs at most once
 * Anthropic has scaled it to ~1.15 megapixels (width × height / 750).
 */
const tokensPerAnthropicImage = 1_600;

export function countTextTokens(text: string): number {
  return text ? countTokens(text, asPlainText) : 0;
}

/**
 * Input tokens of a request body for its path after /v1: OpenAI Chat
 * Completions, Completions, Embeddings and Responses, Anthropic Messages (and
 * its count_tokens). The body is read as far as it has the expected shape;
 * anything else counts nothing (validation is the caller's).
 */
export function countInputTokens(path: string, body: Record<string, unknown>): number {
  switch (path) {
    case "/chat/completions":
      return chatTokens(body);
    case "/responses":
      return responsesTokens(body);
    case "/messages":
    case "/messages/count_tokens":
      return messagesTokens(body);
    case "/embeddings":
      return promptTokens(body.input);
    default:
      return promptTokens(body.prompt);
  }
}

function chatTokens(body: Record<string, unknown>): number {
  let n = replyPriming;
  for (const raw of Array.isArray(body.messages) ? body.messages : []) {
    const m = record(raw);
    n += tokensPerMessage + text(m.role) + contentTokens(m.content);
    if (typeof m.name === "string") n += countTextTokens(m.name) + 1;
    n += jsonTokens(m.tool_calls) + jsonTokens(m.function_call);
  }
  return n + jsonTokens(body.tools) + jsonTokens(body.functions) + jsonTokens(body.response_format);
}

/** Responses: `instructions`, `input` (a string, or items: messages, function calls and their outputs, reasoning), tools, the text format. */
function responsesTokens(body: Record<string, unknown>): number {
  let n = replyPriming;
  if (typeof body.instructions === "string") n += tokensPerMessage + countTextTokens(body.instructions);
  if (typeof body.input === "string") n += tokensPerMessage + countTextTokens("user") + countTextTokens(body.input);
  else if (Array.isArray(body.input)) for (const item of body.input) n += responsesItemTokens(record(item));
  return n + jsonTokens(body.tools) + jsonTokens(record(body.text).format);
}

function responsesItemTokens(item: Record<string, unknown>): number {
  switch (item.type ?? "message") {
    case "message":
      return tokensPerMessage + text(item.role) + contentTokens(item.content);
    case "function_call":
    case "custom_tool_call":
      return tokensPerMessage + text(item.name) + text(item.arguments) + text(item.input);
    case "function_call_output":
    case "custom_tool_call_output":
      return tokensPerMessage + (typeof item.output === "string" ? countTextTokens(item.output) : contentTokens(item.output));
    case "reasoning":
      return partsText(item.summary) + partsText(item.content);
    case "item_reference":
      return 0; // an item the provider stored: it counts it
    default:
      return tokensPerMessage + jsonTokens(item);
  }
}

/** Anthropic Messages: `system`, `messages` (text, tool use and results, thinking, images and documents as a fixed estimate) and `tools`. */
function messagesTokens(body: Record<string, unknown>): number {
  let n = replyPriming + anthropicContentTokens(body.system);
  for (const raw of Array.isArray(body.messages) ? body.messages : []) {
    const m = record(raw);
    n += tokensPerMessage + text(m.role) + anthropicContentTokens(m.content);
  }
  return n + jsonTokens(body.tools);
}

function anthropicContentTokens(content: unknown): number {
  if (typeof content === "string") return countTextTokens(content);
  if (!Array.isArray(content)) return 0;
  let n = 0;
  for (const raw of content) {
    const block = record(raw);
    switch (block.type) {
      case "text":
        n += text(block.text);
        break;
      case "image":
        n += tokensPerAnthropicImage;
        break;
      case "document": {
        const source = record(block.source);
        n += source.type === "text" ? text(source.data) : source.type === "content" ? anthropicContentTokens(source.content) : tokensPerAnthropicImage;
        break;
      }
      case "tool_use":
      case "server_tool_use":
        n += text(block.name) + jsonTokens(block.input);
        break;
      case "tool_result":
        n += anthropicContentTokens(block.content);
        break;
      case "thinking":
        n += text(block.thinking);
        break;
      case "redacted_thinking":
        break; // encrypted: the provider counts it
      default:
        n += jsonTokens(block);
    }
  }
  return n;
}

/** OpenAI content: a string, or parts (text, input_text, output_text, refusal; images and files as a fixed estimate). */
function contentTokens(content: unknown): number {
  if (typeof content === "string") return countTextTokens(content);
  if (!Array.isArray(content)) return 0;
  let n = 0;
  for (const raw of content) {
    const p = record(raw);
    if (typeof p.text === "string") n += countTextTokens(p.text);
    else if (typeof p.refusal === "string") n += countTextTokens(p.refusal);
    else if (p.type === "image_url" || p.type === "input_image" || p.type === "input_file") n += tokensPerImage;
  }
  return n;
}

/** A prompt or embedding input: a string, strings, or already tokenized arrays. */
function promptTokens(input: unknown): number {
  if (typeof input === "string") return countTextTokens(input);
  if (!Array.isArray(input)) return 0;
  let n = 0;
  for (const item of input) {
    if (typeof item === "string") n += countTextTokens(item);
    else if (typeof item === "number") n += 1;
    else if (Array.isArray(item)) n += item.length;
  }
  return n;
}

/** The `text` of each part of a list (reasoning summaries and contents). */
function partsText(parts: unknown): number {
  let n = 0;
  for (const part of Array.isArray(parts) ? parts : []) n += text(record(part).text);
  return n;
}

function text(value: unknown): number {
  return typeof value === "string" ? countTextTokens(value) : 0;
}

function jsonTokens(value: unknown): number {
  return value === undefined || value === null ? 0 : countTextTokens(JSON.stringify(value));
}

function record(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
}

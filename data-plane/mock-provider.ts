import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { countInputTokens, countTextTokens } from "../control-plane/token-counter.js";

export interface MockProviderOptions {
  readonly port?: number;
  readonly host?: string;
  /** When set, requests must carry it: `Authorization: Bearer <apiKey>` on OpenAI's routes, `x-api-key: <apiKey>` on Anthropic's. */
  readonly apiKey?: string;
  /** Pause between streamed chunks, to look like a model generating. */
  readonly chunkDelayMs?: number;
}

export interface RunningMockProvider {
  readonly server: Server;
  readonly port: number;
  /** e.g. http://127.0.0.1:41234/v1 */
  readonly baseUrl: string;
  close(): Promise<void>;
}

/** The models it answers for, on either API. */
export const mockModels = ["mock-fast", "mock-standard", "mock-pro", "mock-pro-backup", "mock-pro-large", "mock-advanced", "mock-claude"];

/** What the mock "generates": a reply of 12-40 words of this text, cut by the output cap. */
const prose = ("This is a reply from the mock provider. A widget comprising a frame, a hinge attached to the frame, and a latch "
  + "that holds the hinge closed until released; the latch is biased by a spring so that the widget closes by itself. "
  + "Claims, prior art and diagrams follow the same pattern, one token at a time.").split(" ");
/** Reasoning tokens reported by Chat and Responses answers (at most a quarter of the cap): part of the output, not in the text. */
const reasoningTokens = 8;

/**
 * A provider for demos and tests speaking both APIs: OpenAI's chat
 * completions, completions, embeddings, responses and models, and Anthropic's
 * messages and count_tokens, streaming or not. Deterministic: the reply is the
 * start of a fixed text, its length chosen by a hash of the request and cut at
 * the output cap; usage is counted with the same tokenizer the proxy uses and
 * reported in each API's own shape, with prompt-cache and reasoning parts:
 * half the input read from the cache (Anthropic: a quarter more written to
 * it), reasoning tokens on Chat and Responses (Chat streams report usage when
 * stream_options.include_usage is set; Responses and Messages streams always).
 */
export async function startMockProvider(options: MockProviderOptions = {}): Promise<RunningMockProvider> {
  const server = createServer((req, res) => void handle(req, res, options).catch(() => res.destroy()));
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => resolve((server.address() as { port: number }).port));
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

/** One answer being built: the request, what it generates and how it is sent. */
interface Turn {
  readonly res: ServerResponse;
  readonly body: Record<string, any>;
  readonly model: string;
  readonly id: string;
  readonly promptTokens: number;
  readonly pieces: string[];
  readonly textTokens: number;
  readonly reasoning: number;
  readonly delayMs: number;
}

async function handle(req: IncomingMessage, res: ServerResponse, options: MockProviderOptions): Promise<void> {
  let raw = "";
  for await (const chunk of req) raw += chunk;
  const path = (req.url ?? "").split("?")[0]!.replace(/^\/v1/, "");
  const anthropic = path === "/messages" || path === "/messages/count_tokens";
  if (options.apiKey && (anthropic ? req.headers["x-api-key"] !== options.apiKey : req.headers.authorization !== `Bearer ${options.apiKey}`)) {
    return error(res, 401, "invalid provider API key", anthropic);
  }
  if (req.method === "GET" && path === "/models") {
    return send(res, { object: "list", data: mockModels.map((id) => ({ id, object: "model", created: 0, owned_by: "mock" })) });
  }
  let body: Record<string, any>;
  try {
    body = JSON.parse(raw || "{}");
  } catch {
    return error(res, 400, "invalid JSON body", anthropic);
  }
  const model = String(body.model ?? "mock");
  const promptTokens = countInputTokens(path, body);
  if (path === "/embeddings") {
    const inputs: unknown[] = Array.isArray(body.input) ? body.input : [body.input];
    return send(res, {
      object: "list", model,
      data: inputs.map((input, index) => ({ object: "embedding", index, embedding: vector(JSON.stringify(input)) })),
      usage: { prompt_tokens: promptTokens, total_tokens: promptTokens },
    });
  }
  if (path === "/messages/count_tokens") return send(res, { input_tokens: promptTokens });
  const answer = { "/chat/completions": chat, "/completions": chat, "/responses": responses, "/messages": messages }[path];
  if (!answer) return error(res, 404, `no route ${path}`, anthropic);
  const cap = Number(body.max_completion_tokens ?? body.max_output_tokens ?? body.max_tokens ?? Infinity);
  const reasoning = path === "/chat/completions" || path === "/responses" ? Math.min(reasoningTokens, Math.floor(cap / 4)) : 0;
  const pieces = reply(raw, Math.max(1, cap - reasoning));
  await answer({
    res, body, model, id: `mock-${createHash("sha256").update(raw).digest("hex").slice(0, 12)}`, promptTokens, pieces,
    textTokens: countTextTokens(pieces.join("")), reasoning, delayMs: options.chunkDelayMs ?? 0,
  }, path);
}

/** OpenAI Chat Completions and Completions: `prompt_tokens` includes the cached tokens, `completion_tokens` the reasoning ones. */
async function chat(t: Turn, path: string): Promise<void> {
  const isChat = path === "/chat/completions";
  const cached = isChat ? Math.floor(t.promptTokens / 2) : 0;
  const usage = {
    prompt_tokens: t.promptTokens, completion_tokens: t.textTokens + t.reasoning, total_tokens: t.promptTokens + t.textTokens + t.reasoning,
    ...(isChat ? { prompt_tokens_details: { cached_tokens: cached }, completion_tokens_details: { reasoning_tokens: t.reasoning } } : {}),
  };
  const created = Math.floor(Date.now() / 1000);
  const text = t.pieces.join("");
  if (!t.body.stream) {
    return send(t.res, {
      id: t.id, object: isChat ? "chat.completion" : "text_completion", created, model: t.model,
      choices: [isChat ? { index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" } : { index: 0, text, finish_reason: "stop" }],
      usage,
    });
  }
  const object = isChat ? "chat.completion.chunk" : "text_completion";
  const chunk = (choice: unknown) => ({ id: t.id, object, created, model: t.model, choices: [choice] });
  const events = t.pieces.map((piece) => chunk(isChat ? { index: 0, delta: { content: piece }, finish_reason: null } : { index: 0, text: piece, finish_reason: null }));
  events.push(chunk(isChat ? { index: 0, delta: {}, finish_reason: "stop" } : { index: 0, text: "", finish_reason: "stop" }));
  if (t.body.stream_options?.include_usage) events.push({ id: t.id, object, created, model: t.model, choices: [], usage } as never);
  await stream(t, events.map((e) => ({ data: e })), "data: [DONE]\n\n");
}

/** OpenAI Responses: `input_tokens` includes `input_tokens_details.cached_tokens`, `output_tokens` the reasoning tokens; streams end with response.completed. */
async function responses(t: Turn): Promise<void> {
  const text = t.pieces.join("");
  const usage = {
    input_tokens: t.promptTokens, input_tokens_details: { cached_tokens: Math.floor(t.promptTokens / 2) },
    output_tokens: t.textTokens + t.reasoning, output_tokens_details: { reasoning_tokens: t.reasoning }, total_tokens: t.promptTokens + t.textTokens + t.reasoning,
  };
  const itemId = `msg_${t.id}`;
  const part = (partText: string) => ({ type: "output_text", text: partText, annotations: [] });
  const item = (status: string, content: unknown[]) => ({ id: itemId, type: "message", status, role: "assistant", content });
  const response = (status: string, output: unknown[], reported: unknown) => ({
    id: `resp_${t.id}`, object: "response", created_at: Math.floor(Date.now() / 1000), status, model: t.model, output, usage: reported,
  });
  if (!t.body.stream) return send(t.res, response("completed", [item("completed", [part(text)])], usage));
  const at = { item_id: itemId, output_index: 0, content_index: 0 };
  const events: Array<Record<string, unknown>> = [
    { type: "response.created", response: response("in_progress", [], null) },
    { type: "response.output_item.added", output_index: 0, item: item("in_progress", []) },
    { type: "response.content_part.added", ...at, part: part("") },
    ...t.pieces.map((delta) => ({ type: "response.output_text.delta", ...at, delta })),
    { type: "response.output_text.done", ...at, text },
    { type: "response.content_part.done", ...at, part: part(text) },
    { type: "response.output_item.done", output_index: 0, item: item("completed", [part(text)]) },
    { type: "response.completed", response: response("completed", [item("completed", [part(text)])], usage) },
  ];
  await stream(t, events.map((e, i) => ({ event: e.type as string, data: { ...e, sequence_number: i } })));
}

/**
 * Anthropic Messages: `input_tokens` excludes `cache_read_input_tokens` and
 * `cache_creation_input_tokens`; streams give the input and cache counts in
 * message_start and the cumulative output in message_delta.
 */
async function messages(t: Turn): Promise<void> {
  const read = Math.floor(t.promptTokens / 2);
  const written = Math.floor(t.promptTokens / 4);
  const input = { input_tokens: t.promptTokens - read - written, cache_creation_input_tokens: written, cache_read_input_tokens: read };
  const text = t.pieces.join("");
  const message = (content: unknown[], stop: string | null, outputTokens: number) => ({
    id: `msg_${t.id}`, type: "message", role: "assistant", model: t.model, content, stop_reason: stop, stop_sequence: null, usage: { ...input, output_tokens: outputTokens },
  });
  if (!t.body.stream) return send(t.res, message([{ type: "text", text }], "end_turn", t.textTokens));
  const events: Array<Record<string, unknown>> = [
    { type: "message_start", message: message([], null, 1) },
    { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
    { type: "ping" },
    ...t.pieces.map((piece) => ({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: piece } })),
    { type: "content_block_stop", index: 0 },
    { type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: t.textTokens } },
    { type: "message_stop" },
  ];
  await stream(t, events.map((e) => ({ event: e.type as string, data: e })));
}

/** SSE, one event per chunk, `delayMs` apart; stops when the client leaves. */
async function stream(t: Turn, events: Array<{ event?: string; data: unknown }>, end = ""): Promise<void> {
  t.res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  for (const e of events) {
    if (t.res.destroyed) return;
    t.res.write(`${e.event ? `event: ${e.event}\n` : ""}data: ${JSON.stringify(e.data)}\n\n`);
    if (t.delayMs) await new Promise((r) => setTimeout(r, t.delayMs));
  }
  t.res.end(end);
}

/** A reply whose length depends on the request only, so the same request always gets the same reply. */
function reply(seed: string, maxTokens: number): string[] {
  const words = 12 + (createHash("sha256").update(seed).digest()[0]! % 29);
  const pieces = prose.slice(0, words).map((w, i) => (i === 0 ? w : ` ${w}`));
  // Cut at max_tokens, as a model would.
  const out: string[] = [];
  let tokens = 0;
  for (const piece of pieces) {
    tokens += countTextTokens(piece);
    if (tokens > maxTokens) break;
    out.push(piece);
  }
  return out.length > 0 ? out : [pieces[0]!];
}

function vector(seed: string): number[] {
  const digest = createHash("sha256").update(seed).digest();
  return Array.from({ length: 8 }, (_, i) => Number(((digest[i]! - 128) / 128).toFixed(6)));
}

function send(res: ServerResponse, body: unknown): void {
  const json = JSON.stringify(body);
  res.writeHead(200, { "content-type": "application/json", "content-length": String(Buffer.byteLength(json)) });
  res.end(json);
}

function error(res: ServerResponse, status: number, message: string, anthropic: boolean): void {
  const json = JSON.stringify(anthropic
    ? { type: "error", error: { type: status === 401 ? "authentication_error" : status === 404 ? "not_found_error" : "invalid_request_error", message } }
    : { error: { message, type: "invalid_request_error", code: null, param: null } });
  res.writeHead(status, { "content-type": "application/json" });
  res.end(json);
}

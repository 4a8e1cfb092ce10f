import type { AdmitRequest } from "../gen/admission/v1/admission_pb.js";
import { countInputTokens } from "./token-counter.js";

/** The API a provider speaks: OpenAI's (Chat Completions, Completions, Embeddings, Responses) or Anthropic's (Messages). */
export type ProviderApi = "openai" | "anthropic";

export const providerApiNames: Readonly<Record<ProviderApi, string>> = { openai: "OpenAI API", anthropic: "Anthropic API" };

/**
 * The three shapes of request and answer: OpenAI Chat Completions (and
 * Completions and Embeddings, which report usage the same way), OpenAI
 * Responses, Anthropic Messages.
 */
export type LlmFamily = "chat" | "responses" | "messages";

/** The metered routes, as paths after `/v1`. */
export type LlmPath = "/chat/completions" | "/completions" | "/embeddings" | "/responses" | "/messages";

/** What a metered route is: its shapes, the API its providers must speak, and where its body states the output cap. */
export interface LlmRoute {
  readonly path: LlmPath;
  readonly family: LlmFamily;
  readonly api: ProviderApi;
  /** For messages: "the OpenAI Responses API". */
  readonly title: string;
  /** The output cap's fields, read in this order; the first the client set is rewritten, else the last is added. None: the route generates nothing. */
  readonly capFields: readonly string[];
  /** Whether `stream: true` streams (embeddings never do). */
  readonly streams: boolean;
  /** Chat streams report usage only when asked (`stream_options.include_usage`); Responses and Messages streams always do. */
  readonly askUsageOnStreams: boolean;
  /** Whether the body must name a model (Chat, Completions and Embeddings may leave it to the plan's default class). */
  readonly modelRequired: boolean;
  /** The fields the API requires beyond the common ones. */
  readonly validate: (body: Record<string, unknown>) => InvalidRequest | undefined;
}

/** A validated request body of a metered route. */
export interface LlmRequest {
  readonly route: LlmRoute;
  readonly body: Readonly<Record<string, unknown>>;
  /** Model name or class as asked; empty lets the plan pick its default class. */
  readonly model: string;
  readonly stream: boolean;
  /** The output cap as asked (max_completion_tokens, max_tokens or max_output_tokens); 0 when absent. */
  readonly maxTokens: number;
  /** Choices asked for (n). */
  readonly choices: number;
  /** Counted with the tokenizer. */
  readonly inputTokens: number;
}

export interface InvalidRequest {
  readonly error: string;
  readonly param: string | null;
  /** The body is not JSON at all (not UTF-8, too deep, a syntax error), as opposed to JSON of the wrong shape. */
  readonly notJson?: boolean;
}

const chatCap = ["max_completion_tokens", "max_tokens"];

const routeList: LlmRoute[] = [
  {
    path: "/chat/completions", family: "chat", api: "openai", title: "the OpenAI Chat Completions API", capFields: chatCap, streams: true, askUsageOnStreams: true, modelRequired: false,
    validate: (b) => {
      if (!Array.isArray(b.messages) || b.messages.length === 0) return { error: "messages must be a non-empty array", param: "messages" };
      return b.messages.every(isObject) ? undefined : { error: "messages must be an array of objects", param: "messages" };
    },
  },
  {
    path: "/completions", family: "chat", api: "openai", title: "the OpenAI Completions API", capFields: chatCap, streams: true, askUsageOnStreams: true, modelRequired: false,
    validate: (b) => (typeof b.prompt === "string" || Array.isArray(b.prompt) ? undefined : { error: "prompt must be a string or an array", param: "prompt" }),
  },
  {
    path: "/embeddings", family: "chat", api: "openai", title: "the OpenAI Embeddings API", capFields: [], streams: false, askUsageOnStreams: false, modelRequired: false,
    validate: (b) => (typeof b.input === "string" || Array.isArray(b.input) ? undefined : { error: "input must be a string or an array", param: "input" }),
  },
  {
    path: "/responses", family: "responses", api: "openai", title: "the OpenAI Responses API", capFields: ["max_output_tokens"], streams: true, askUsageOnStreams: false, modelRequired: true,
    validate: (b) => {
      if (b.input !== undefined && typeof b.input !== "string" && !(Array.isArray(b.input) && b.input.every(isObject))) {
        return { error: "input must be a string or an array of input items (objects)", param: "input" };
      }
      return optional(b, "instructions", "a string", (v) => typeof v === "string") ?? optional(b, "tools", "an array", Array.isArray);
    },
  },
  {
    path: "/messages", family: "messages", api: "anthropic", title: "the Anthropic Messages API", capFields: ["max_tokens"], streams: true, askUsageOnStreams: false, modelRequired: true,
    validate: (b) => {
      if (!Array.isArray(b.messages) || b.messages.length === 0) return { error: "messages must be a non-empty array", param: "messages" };
      const bad = b.messages.findIndex((m) => !isObject(m) || typeof m.role !== "string" || !(typeof m.content === "string" || Array.isArray(m.content)));
      if (bad >= 0) return { error: `messages.${bad} must be an object with a role and a content (a string or an array of blocks)`, param: "messages" };
      return optional(b, "system", "a string or an array of blocks", (v) => typeof v === "string" || Array.isArray(v)) ?? optional(b, "tools", "an array", Array.isArray);
    },
  },
];

/** The metered routes by path after /v1: the one table every front end (data plane, ext_authz, Kong) reads bodies with. */
export const llmRoutes: ReadonlyMap<string, LlmRoute> = new Map(routeList.map((r) => [r.path, r]));

/** Anthropic's token counting: a Messages body, passed to the provider unmetered (it runs no model). */
export const countTokensPath = "/messages/count_tokens";

/** The metered route a request path names by what follows its last `/v1` (`/v1/messages`, `/tasks/X/v1/responses?x=1`); undefined for any other path. */
export function llmRouteOf(path: string): LlmRoute | undefined {
  const at = path.lastIndexOf("/v1/");
  if (at < 0) return undefined;
  return llmRoutes.get(path.slice(at + 3).split("?")[0]!.replace(/\/+$/, ""));
}

const maxModelChars = 128;
/** JSON is UTF-8 (RFC 8259): invalid bytes are refused, not silently replaced before they reach a provider. */
const utf8 = new TextDecoder("utf-8", { fatal: true });
/** Deeper bodies are refused before parsing: nothing an LLM API takes nests this far, and re-serializing them would exhaust the stack. */
const maxJsonDepth = 64;

/** Parses and validates a body for a route; a clear message naming the field when it is not acceptable. */
export function parseLlmRequest(route: LlmRoute, raw: Buffer | string): LlmRequest | InvalidRequest {
  const parsed = parseJsonObject(raw);
  return "json" in parsed ? readLlmBody(route, parsed.json) : parsed;
}

/** A body as a JSON object: UTF-8, at most 64 levels deep, valid JSON, an object. */
export function parseJsonObject(raw: Buffer | string): { json: Record<string, unknown> } | InvalidRequest {
  let text: string;
  try {
    text = typeof raw === "string" ? raw : utf8.decode(raw);
  } catch {
    return { error: "the body is not valid UTF-8", param: null, notJson: true };
  }
  if (nestsDeeperThan(text, maxJsonDepth)) return { error: `the body nests deeper than ${maxJsonDepth} levels`, param: null, notJson: true };
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    return { error: `the body is not valid JSON: ${err instanceof Error ? err.message.slice(0, 200) : "parse error"}`, param: null, notJson: true };
  }
  return isObject(body) ? { json: body } : { error: "the body must be a JSON object", param: null };
}

/** Validates a parsed body for a route and reads what admission needs: model, stream, output cap, choices, input tokens. */
export function readLlmBody(route: LlmRoute, b: Record<string, unknown>): LlmRequest | InvalidRequest {
  const model = b.model ?? "";
  if (typeof model !== "string" || model.length > maxModelChars) return { error: `model must be a string of at most ${maxModelChars} characters`, param: "model" };
  if (route.modelRequired && !model) return { error: `model is required by ${route.title}`, param: "model" };
  if (b.stream !== undefined && b.stream !== null && typeof b.stream !== "boolean") return { error: "stream must be a boolean", param: "stream" };
  for (const field of route.capFields) {
    const v = b[field];
    if (v !== undefined && v !== null && !(Number.isSafeInteger(v) && (v as number) >= 0)) return { error: `${field} must be a non-negative integer`, param: field };
  }
  const n = route.family === "chat" ? b.n ?? 1 : 1;
  if (!(Number.isSafeInteger(n) && (n as number) >= 1 && (n as number) <= 128)) return { error: "n must be an integer between 1 and 128", param: "n" };
  const invalid = route.validate(b);
  if (invalid) return invalid;
  const capField = route.capFields.find((f) => b[f] !== undefined && b[f] !== null);
  return {
    route,
    body: b,
    model,
    stream: route.streams && b.stream === true,
    maxTokens: capField ? (b[capField] as number) : 0,
    choices: n as number,
    inputTokens: countInputTokens(route.path, b),
  };
}

/** The output cap to reserve (Admit's max_output_tokens): all n choices; an embedding produces none, so one rather than the plan's default. */
export function reservedOutputTokens(request: LlmRequest): number {
  return request.route.capFields.length === 0 ? 1 : Math.min(request.maxTokens * request.choices, 1_000_000_000);
}

/** The Admit for a parsed request: its model, counted input tokens and reserved output cap. */
export function admitRequestFor(request: LlmRequest, who: { requestId: string; credential: string; task: string; attributes: Record<string, string> }): AdmitRequest {
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
 * The body sent to the provider: the routed model; the clamped output cap
 * (split across n choices) in the field the client used, added when it set
 * none; and usage asked for on Chat streams (Responses and Messages streams
 * report it unasked).
 */
export function rewriteBody(request: LlmRequest, target: { providerModel: string; maxOutputTokens?: number }): Buffer {
  const { route } = request;
  const body: Record<string, unknown> = { ...request.body, model: target.providerModel };
  if (route.capFields.length > 0 && target.maxOutputTokens !== undefined && target.maxOutputTokens > 0) {
    const field = route.capFields.find((f) => request.body[f] !== undefined && request.body[f] !== null) ?? route.capFields.at(-1)!;
    body[field] = Math.max(1, Math.floor(target.maxOutputTokens / request.choices));
  }
  if (request.stream && route.askUsageOnStreams) body.stream_options = { ...(isObject(request.body.stream_options) ? request.body.stream_options : {}), include_usage: true };
  return Buffer.from(JSON.stringify(body));
}

/** Undefined when `field` is absent, null, or passes `ok`; else the error naming it. */
function optional(b: Record<string, unknown>, field: string, what: string, ok: (v: unknown) => boolean): InvalidRequest | undefined {
  const v = b[field];
  return v === undefined || v === null || ok(v) ? undefined : { error: `${field} must be ${what}`, param: field };
}

/** True when JSON text opens more than `limit` objects/arrays at once (brackets inside strings do not count). */
function nestsDeeperThan(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > limit) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The client's credential: `Authorization: Bearer <API key or JWT>` (OpenAI's
 * SDKs and most clients) or `x-api-key: <API key>` (Anthropic's SDKs and
 * Claude Code); undefined when neither holds one.
 */
export function clientCredential(authorization: unknown, apiKey: unknown): string | undefined {
  const bearer = typeof authorization === "string" ? /^Bearer\s+(\S{1,4096})\s*$/i.exec(authorization)?.[1] : undefined;
  if (bearer) return bearer;
  return typeof apiKey === "string" ? /^\s*(\S{1,4096})\s*$/.exec(apiKey)?.[1] : undefined;
}

/**
 * The normalized usage record, the same for every API (as Settle takes it):
 * `inputTokens` is every input token the provider processed, cache reads and
 * writes included, which are also counted on their own; `outputTokens` every
 * output token, reasoning included, which is also counted on its own.
 */
export interface UsageRecord {
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** Part of inputTokens read from the provider's prompt cache. */
  readonly cacheReadTokens: number;
  /** Part of inputTokens written to the provider's prompt cache. */
  readonly cacheWriteTokens: number;
  /** Part of outputTokens spent reasoning. */
  readonly reasoningTokens: number;
}

export const noUsage: UsageRecord = { inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0 };

/**
 * OpenAI Chat Completions (and Completions, Embeddings): `prompt_tokens`
 * includes `prompt_tokens_details.cached_tokens`, `completion_tokens` includes
 * `completion_tokens_details.reasoning_tokens`. Undefined without a prompt count.
 */
export function chatUsage(u: unknown): UsageRecord | undefined {
  const usage = object(u);
  if (!isCount(usage.prompt_tokens)) return undefined;
  return usageRecord({
    input: usage.prompt_tokens, output: usage.completion_tokens,
    cacheRead: object(usage.prompt_tokens_details).cached_tokens, reasoning: object(usage.completion_tokens_details).reasoning_tokens,
  });
}

/**
 * OpenAI Responses: `input_tokens` includes `input_tokens_details.cached_tokens`,
 * `output_tokens` includes `output_tokens_details.reasoning_tokens`.
 */
export function responsesUsage(u: unknown): UsageRecord | undefined {
  const usage = object(u);
  if (!isCount(usage.input_tokens)) return undefined;
  return usageRecord({
    input: usage.input_tokens, output: usage.output_tokens,
    cacheRead: object(usage.input_tokens_details).cached_tokens, reasoning: object(usage.output_tokens_details).reasoning_tokens,
  });
}

/** Anthropic's usage fields, each as last reported (a stream spreads them over message_start and message_delta). */
export interface AnthropicUsage {
  input_tokens?: number;
  cache_creation_input_tokens?: number;
  cache_read_input_tokens?: number;
  output_tokens?: number;
}

/** Takes the fields of an Anthropic `usage` object into `into`: the last value of each, never a sum. False when it carries none. */
export function mergeAnthropicUsage(into: AnthropicUsage, u: unknown): boolean {
  const usage = object(u);
  let any = false;
  for (const field of ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"] as const) {
    const v = usage[field];
    if (isCount(v)) {
      into[field] = v;
      any = true;
    }
  }
  return any;
}

/**
 * Anthropic Messages: `input_tokens` EXCLUDES `cache_creation_input_tokens` and
 * `cache_read_input_tokens`, so the record's input is their sum. Anthropic
 * reports no reasoning count (thinking is in `output_tokens`): 0.
 */
export function anthropicUsage(u: AnthropicUsage): UsageRecord {
  const write = u.cache_creation_input_tokens ?? 0;
  const read = u.cache_read_input_tokens ?? 0;
  return usageRecord({ input: (u.input_tokens ?? 0) + write + read, output: u.output_tokens, cacheRead: read, cacheWrite: write, reasoning: 0 });
}

/** Whole non-negative counts, each part at most its whole (a provider's inconsistent report must not make the Settle invalid). */
function usageRecord(u: { input: number; output: unknown; cacheRead?: unknown; cacheWrite?: unknown; reasoning?: unknown }): UsageRecord {
  const inputTokens = count(u.input);
  const outputTokens = count(u.output);
  const cacheReadTokens = Math.min(count(u.cacheRead), inputTokens);
  return {
    inputTokens,
    outputTokens,
    cacheReadTokens,
    cacheWriteTokens: Math.min(count(u.cacheWrite), inputTokens - cacheReadTokens),
    reasoningTokens: Math.min(count(u.reasoning), outputTokens),
  };
}

function count(v: unknown): number {
  return isCount(v) ? Math.floor(v) : 0;
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0;
}

function object(v: unknown): Record<string, unknown> {
  return typeof v === "object" && v !== null ? (v as Record<string, unknown>) : {};
}

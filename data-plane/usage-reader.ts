import { countTokens } from "gpt-tokenizer";

export interface ProviderUsage {
  readonly inputTokens: number;
  readonly outputTokens: number;
}

/**
 * Reads a provider response as it streams by (never holding it back): SSE
 * events or a JSON body. Keeps the last reported usage — including a usage
 * chunk that also carries choices — and the generated text, to estimate
 * output tokens when the provider reports none.
 */
export class UsageReader {
  private usage: ProviderUsage | undefined;
  private text = "";
  private pending = "";
  private body = "";
  private static readonly maxBodyChars = 8 * 1024 * 1024;

  constructor(private readonly sse: boolean) {}

  push(chunk: Buffer): void {
    if (!this.sse) {
      if (this.body.length < UsageReader.maxBodyChars) this.body += chunk.toString("utf8");
      return;
    }
    this.pending += chunk.toString("utf8");
    let cut: number;
    while ((cut = this.pending.indexOf("\n")) >= 0) {
      const line = this.pending.slice(0, cut).trim();
      this.pending = this.pending.slice(cut + 1);
      if (line.startsWith("data:")) this.event(line.slice(5).trim());
    }
  }

  /** Call at the end of a JSON response. A body that is not JSON is counted as generated text. */
  finish(): void {
    if (!this.sse && this.body && !this.event(this.body)) this.text = this.body;
  }

  /** Usage reported by the provider, if any. */
  reported(): ProviderUsage | undefined {
    return this.usage;
  }

  /** Output tokens estimated from the text generated so far. */
  estimatedOutputTokens(): number {
    return this.text ? countTokens(this.text) : 0;
  }

  /** False when the data is not JSON. */
  private event(data: string): boolean {
    if (!data || data === "[DONE]") return true;
    let json: any;
    try {
      json = JSON.parse(data);
    } catch {
      return false;
    }
    for (const choice of Array.isArray(json?.choices) ? json.choices : []) {
      const piece = choice?.delta?.content ?? choice?.message?.content ?? choice?.text;
      if (typeof piece === "string" && this.text.length < UsageReader.maxBodyChars) this.text += piece;
    }
    const u = json?.usage;
    if (u && Number.isFinite(u.prompt_tokens)) {
      this.usage = { inputTokens: Math.max(0, Math.floor(u.prompt_tokens)), outputTokens: Math.max(0, Math.floor(u.completion_tokens ?? 0)) };
    }
    return true;
  }
}

/** Input tokens of an OpenAI-style request body, counted with the tokenizer. */
export function countInputTokens(body: Record<string, unknown>): number {
  const messages = body.messages;
  if (Array.isArray(messages)) {
    let n = 3;
    for (const m of messages) {
      n += 4;
      const content = (m as { content?: unknown })?.content;
      if (typeof content === "string") n += countTokens(content);
      else if (Array.isArray(content)) for (const part of content) if (typeof part?.text === "string") n += countTokens(part.text);
    }
    return n;
  }
  const input = body.prompt ?? body.input;
  if (typeof input === "string") return countTokens(input);
  if (Array.isArray(input)) return input.reduce((n: number, s) => n + (typeof s === "string" ? countTokens(s) : 0), 0);
  return 0;
}

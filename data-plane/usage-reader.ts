import { StringDecoder } from "node:string_decoder";
import type { Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import { countTextTokens } from "./token-counter.js";

export { countInputTokens } from "./token-counter.js";

export interface ProviderUsage {
  readonly inputTokens: number;
  readonly outputTokens: number;
}

/** Generated text kept for estimating output tokens when the provider reports none. */
const maxTextChars = 8 * 1024 * 1024;

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
  private bodyCut = false;
  private unreadableBody = false;
  private data: string[] = [];
  private readonly decoder = new StringDecoder("utf8");

  constructor(private readonly sse: boolean) {}

  push(chunk: Buffer): void {
    const s = this.decoder.write(chunk);
    if (!this.sse) {
      if (this.body.length < maxTextChars) this.body += s;
      else this.bodyCut = true;
      return;
    }
    this.pending += s;
    let cut: number;
    while ((cut = this.pending.indexOf("\n")) >= 0) {
      const line = this.pending.slice(0, cut).replace(/\r$/, "");
      this.pending = this.pending.slice(cut + 1);
      this.line(line);
    }
  }

  /** Call at the end of the response. A JSON body that is not JSON is counted as generated text. */
  finish(): void {
    const rest = this.decoder.end();
    if (!this.sse) {
      this.body += rest;
      if (this.body && !this.event(this.body)) {
        this.text = this.body.slice(0, maxTextChars);
        this.unreadableBody = !this.bodyCut;
      }
      return;
    }
    this.pending += rest;
    if (this.pending) this.line(this.pending.replace(/\r$/, ""));
    this.pending = "";
    this.line("");
  }

  /** After finish(): a JSON body that is not JSON (a body too long to keep whole is never judged). */
  unreadable(): boolean {
    return this.unreadableBody;
  }

  /** Usage reported by the provider, if any. */
  reported(): ProviderUsage | undefined {
    return this.usage;
  }

  /** The generated text seen so far (message content, text, tool-call arguments). */
  generatedText(): string {
    return this.text;
  }

  /** Output tokens estimated from the text generated so far. */
  estimatedOutputTokens(): number {
    return countTextTokens(this.text);
  }

  /** SSE: "data:" lines accumulate until a blank line ends the event. */
  private line(line: string): void {
    if (line === "") {
      if (this.data.length > 0) this.event(this.data.join("\n"));
      this.data = [];
    } else if (line.startsWith("data:")) {
      this.data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
    }
  }

  /** False when the data is not JSON. */
  private event(data: string): boolean {
    if (data === "[DONE]") return true;
    let json: unknown;
    try {
      json = JSON.parse(data);
    } catch {
      return false;
    }
    const o = (json ?? {}) as { choices?: unknown; usage?: Record<string, unknown> };
    for (const choice of Array.isArray(o.choices) ? o.choices : []) this.collect(choice);
    const u = o.usage;
    if (u && typeof u === "object" && Number.isFinite(u.prompt_tokens)) {
      const completion = Number.isFinite(u.completion_tokens) ? Number(u.completion_tokens) : 0;
      this.usage = { inputTokens: Math.max(0, Math.floor(Number(u.prompt_tokens))), outputTokens: Math.max(0, Math.floor(completion)) };
    }
    return true;
  }

  private collect(choice: unknown): void {
    const c = (choice ?? {}) as { delta?: Record<string, unknown>; message?: Record<string, unknown>; text?: unknown };
    const part = c.delta ?? c.message;
    const pieces: unknown[] = [c.text, part?.content, part?.reasoning_content, part?.refusal];
    for (const call of Array.isArray(part?.tool_calls) ? part.tool_calls : []) {
      const fn = (call as { function?: { name?: unknown; arguments?: unknown } })?.function;
      pieces.push(fn?.name, fn?.arguments);
    }
    for (const piece of pieces) if (typeof piece === "string" && this.text.length < maxTextChars) this.text += piece;
  }
}

/**
 * Feeds a response to a reader as it passes, decompressing a copy when the
 * provider compressed it anyway (the proxy asks for identity): the client
 * gets the bytes as they came.
 */
export class UsageFeed {
  private readonly decoder: Transform | undefined;

  constructor(readonly reader: UsageReader, contentEncoding: string | undefined) {
    const encoding = (contentEncoding ?? "").trim().toLowerCase();
    this.decoder = encoding === "gzip" || encoding === "x-gzip" ? createGunzip() : encoding === "deflate" ? createInflate() : encoding === "br" ? createBrotliDecompress() : undefined;
    this.decoder?.on("data", (chunk: Buffer) => reader.push(chunk));
    this.decoder?.on("error", () => undefined); // a corrupt body is an unreadable one: estimated
  }

  push(chunk: Buffer): void {
    if (this.decoder) this.decoder.write(chunk);
    else this.reader.push(chunk);
  }

  /** Resolves once everything pushed has been read. */
  finish(): Promise<void> {
    const decoder = this.decoder;
    if (!decoder) {
      this.reader.finish();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        this.reader.finish();
        resolve();
      };
      if (decoder.destroyed) return done();
      decoder.once("end", done);
      decoder.once("error", done);
      decoder.end();
      decoder.resume();
    });
  }
}

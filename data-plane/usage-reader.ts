import { StringDecoder } from "node:string_decoder";
import type { Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import { joinChunks } from "./read-body.js";
import { countTextTokens } from "../control-plane/token-counter.js";

export interface ProviderUsage {
  readonly inputTokens: number;
  readonly outputTokens: number;
}

/** Generated text kept for estimating output tokens when the provider reports none. */
const maxTextChars = 8 * 1024 * 1024;
/** SSE events held unread, at most: past this they are read for their text, as they would be without usage. */
const maxUnreadChars = 256 * 1024;
/** `"usage"` as a key whose value is an object (not the `"usage":null` most providers put in every chunk). */
const usageObject = /"usage"\s*:\s*\{/;

/**
 * Reads a provider response as it streams by (never holding it back): SSE
 * events or a JSON body. Keeps the last reported usage — including a usage
 * chunk that also carries choices — and the generated text, to estimate
 * output tokens when the provider reports none.
 *
 * A stream that reports usage never needs its text, so SSE events are parsed
 * as they pass only when they carry a usage object; the others are kept as
 * they came (bounded) and parsed only if their text is asked for, or no usage
 * was seen — so a usage written in a form the quick check does not recognise
 * is still read.
 */
export class UsageReader {
  private usage: ProviderUsage | undefined;
  private text = "";
  /** SSE: the start of a line whose end has not arrived yet. */
  private pending = "";
  /** JSON: the body as it came (decoded once, at the end), up to maxTextChars bytes. */
  private body: Buffer[] = [];
  private bodyBytes = 0;
  private bodyCut = false;
  private unreadableBody = false;
  /** SSE: the data lines of the event being received. */
  private data: string[] = [];
  /** SSE: events (their data) not parsed yet, in order. */
  private unread: string[] = [];
  private unreadChars = 0;
  private readonly decoder = new StringDecoder("utf8");

  constructor(private readonly sse: boolean) {}

  push(chunk: Buffer): void {
    if (!this.sse) {
      if (this.bodyBytes < maxTextChars) {
        this.body.push(chunk);
        this.bodyBytes += chunk.length;
      } else this.bodyCut = true;
      return;
    }
    const s = this.decoder.write(chunk);
    this.lines(this.pending ? this.pending + s : s);
  }

  /** Call at the end of the response. A JSON body that is not JSON is counted as generated text. */
  finish(): void {
    if (!this.sse) {
      const body = joinChunks(this.body, this.bodyBytes).toString();
      this.body = [];
      const json = body ? parse(body) : undefined;
      if (json) this.read(json);
      else if (body) {
        this.text = body.slice(0, maxTextChars);
        this.unreadableBody = !this.bodyCut;
      }
      return;
    }
    this.lines(this.pending + this.decoder.end());
    const last = this.pending;
    this.pending = "";
    if (last) this.line(last, last.endsWith("\r") ? last.length - 1 : last.length);
    this.line("", 0);
  }

  /** After finish(): a JSON body that is not JSON (a body too long to keep whole is never judged). */
  unreadable(): boolean {
    return this.unreadableBody;
  }

  /** Usage reported by the provider, if any. */
  reported(): ProviderUsage | undefined {
    if (!this.usage) this.readUnread();
    return this.usage;
  }

  /** The generated text seen so far (message content, text, tool-call arguments). */
  generatedText(): string {
    this.readUnread();
    return this.text;
  }

  /** Output tokens estimated from the text generated so far. */
  estimatedOutputTokens(): number {
    return countTextTokens(this.generatedText());
  }

  /** SSE: every complete line of `text`; an unfinished last line waits in `pending`. */
  private lines(text: string): void {
    let start = 0;
    for (let cut = text.indexOf("\n"); cut >= 0; cut = text.indexOf("\n", start)) {
      this.line(text.slice(start, cut), cut > start && text.charCodeAt(cut - 1) === 0x0d ? cut - start - 1 : cut - start);
      start = cut + 1;
    }
    this.pending = start === 0 ? text : text.slice(start);
  }

  /** SSE: "data:" lines accumulate until a blank line ends the event; `length` leaves out a trailing CR. */
  private line(line: string, length: number): void {
    if (length === 0) {
      if (this.data.length > 0) this.event(this.data.length === 1 ? this.data[0]! : this.data.join("\n"));
      this.data.length = 0;
    } else if (line.startsWith("data:")) {
      this.data.push(line.slice(line.startsWith("data: ") ? 6 : 5, length));
    }
  }

  /** SSE: a usage is read at once; the text waits until it is asked for. */
  private event(data: string): void {
    if (data === "[DONE]") return;
    if (usageObject.test(data)) {
      const json = parse(data);
      if (json) this.readUsage(json);
    }
    this.unread.push(data);
    this.unreadChars += data.length;
    if (this.unreadChars > maxUnreadChars) this.readUnread();
  }

  /** Parses the events held unread, in order: their text, and any usage they report. */
  private readUnread(): void {
    for (const data of this.unread) {
      const json = parse(data);
      if (json) this.read(json);
    }
    this.unread = [];
    this.unreadChars = 0;
  }

  private read(json: ProviderJson): void {
    for (const choice of Array.isArray(json.choices) ? json.choices : []) this.collect(choice);
    this.readUsage(json);
  }

  private readUsage(json: ProviderJson): void {
    const u = json.usage;
    if (u && typeof u === "object" && Number.isFinite(u.prompt_tokens)) {
      const completion = Number.isFinite(u.completion_tokens) ? Number(u.completion_tokens) : 0;
      this.usage = { inputTokens: Math.max(0, Math.floor(Number(u.prompt_tokens))), outputTokens: Math.max(0, Math.floor(completion)) };
    }
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

/** The parts of a provider's JSON answer or event the reader looks at. */
interface ProviderJson {
  readonly choices?: unknown;
  readonly usage?: Record<string, unknown>;
}

/** A JSON value as an object to read (null and scalars read as empty); undefined when the text is not JSON. */
function parse(text: string): ProviderJson | undefined {
  try {
    return (JSON.parse(text) ?? {}) as ProviderJson;
  } catch {
    return undefined;
  }
}

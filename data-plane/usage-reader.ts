import { StringDecoder } from "node:string_decoder";
import type { Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import type { LlmFamily } from "../control-plane/llm-request.js";
import { countTextTokens } from "../control-plane/token-counter.js";
import { anthropicUsage, chatUsage, mergeAnthropicUsage, noUsage, responsesUsage, type AnthropicUsage, type UsageRecord } from "./provider-usage.js";
import { joinChunks } from "./read-body.js";

/** Generated text kept for estimating output tokens when the provider reports none. */
const maxTextChars = 8 * 1024 * 1024;
/** SSE events held unread, at most: past this they are read for their text, as they would be without usage. */
const maxUnreadChars = 256 * 1024;
/** `"usage"` as a key whose value is an object (not the `"usage":null` most providers put in every chunk). */
const usageObject = /"usage"\s*:\s*\{/;
/** Responses stream events whose `delta` is generated text (reasoning ones apart). */
const responsesTextDelta = /^response\.(?:output_text|refusal|function_call_arguments|custom_tool_call_input|mcp_call_arguments|audio_transcript|code_interpreter_call_code)\.delta$/;
const responsesReasoningDelta = /^response\.(?:reasoning_text|reasoning_summary_text)\.delta$/;

/** The usage a provider reported: `complete` once its final count arrived (an Anthropic stream reports its input first, its output at the end). */
export interface ReportedUsage {
  readonly usage: UsageRecord;
  readonly complete: boolean;
}

/**
 * Reads a provider response as it streams by (never holding it back): SSE
 * events or a JSON body, in the shape of its API family (OpenAI Chat
 * Completions, OpenAI Responses, Anthropic Messages). Keeps the last reported
 * usage — for Anthropic the last value of each field, message_start's input
 * and cache counts and message_delta's cumulative output — and the generated
 * text (reasoning apart), to estimate output tokens when the provider reports
 * none.
 *
 * A stream that reports usage never needs its text, so SSE events are parsed
 * as they pass only when they carry a usage object; the others are kept as
 * they came (bounded) and parsed only if their text is asked for, or no final
 * usage was seen — so a usage written in a form the quick check does not
 * recognise is still read. Malformed events are skipped: the client gets them
 * unchanged, the reader what it could read.
 */
export class UsageReader {
  /** OpenAI shapes: the last usage reported. */
  private openAi: UsageRecord | undefined;
  /** Anthropic: each usage field as last reported; `anthropicFinal` once a message_delta (or a whole answer) reported the output. */
  private anthropic: AnthropicUsage | undefined;
  private anthropicFinal = false;
  private text = "";
  private reasoning = "";
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

  constructor(private readonly family: LlmFamily, private readonly sse: boolean) {}

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
      if (json) this.read(json, false);
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

  /** Usage reported by the provider, if any: complete, or (an Anthropic stream cut short) its input counts only. */
  reported(): ReportedUsage | undefined {
    if (!this.completeUsage()) this.readUnread();
    if (this.openAi) return { usage: this.openAi, complete: true };
    return this.anthropic ? { usage: anthropicUsage(this.anthropic), complete: this.anthropicFinal } : undefined;
  }

  /** The generated text seen so far (message content, text, tool-call names and arguments), reasoning apart. */
  generatedText(): string {
    this.readUnread();
    return this.text;
  }

  /** The reasoning text seen so far (reasoning content, summaries, thinking). */
  reasoningText(): string {
    this.readUnread();
    return this.reasoning;
  }

  /** Output tokens estimated from the text generated so far, and the part of them spent reasoning. */
  estimatedOutput(): { outputTokens: number; reasoningTokens: number } {
    const reasoningTokens = countTextTokens(this.reasoningText());
    return { outputTokens: countTextTokens(this.generatedText()) + reasoningTokens, reasoningTokens };
  }

  private completeUsage(): boolean {
    return this.openAi !== undefined || this.anthropicFinal;
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

  /** SSE: "data:" lines accumulate until a blank line ends the event; `length` leaves out a trailing CR. `event:` lines are not needed: every shape repeats the type in its data. */
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
      if (json) this.readUsage(json, true);
    }
    this.unread.push(data);
    this.unreadChars += data.length;
    if (this.unreadChars > maxUnreadChars) this.readUnread();
  }

  /** Parses the events held unread, in order: their text, and any usage they report. */
  private readUnread(): void {
    for (const data of this.unread) {
      const json = parse(data);
      if (json) this.read(json, true);
    }
    this.unread = [];
    this.unreadChars = 0;
  }

  private read(json: Json, streamed: boolean): void {
    this.readText(json, streamed);
    this.readUsage(json, streamed);
  }

  /** The usage an answer or an event reports, where its family puts it. */
  private readUsage(json: Json, streamed: boolean): void {
    switch (this.family) {
      case "chat":
        this.openAi = chatUsage(json.usage) ?? this.openAi;
        return;
      case "responses":
        // Streams report it in the final event's response (response.completed, .incomplete or .failed).
        this.openAi = responsesUsage(streamed ? object(json.response).usage : json.usage) ?? this.openAi;
        return;
      case "messages": {
        const start = streamed && json.type === "message_start";
        const into = this.anthropic ?? {};
        if (!mergeAnthropicUsage(into, start ? object(json.message).usage : json.usage)) return;
        this.anthropic = into;
        if (!start) this.anthropicFinal = true;
      }
    }
  }

  /** The text an answer or an event carries, where its family puts it. */
  private readText(json: Json, streamed: boolean): void {
    switch (this.family) {
      case "chat":
        for (const choice of array(json.choices)) {
          const c = object(choice);
          const part = object(c.delta ?? c.message);
          this.add(c.text, part.content, part.refusal);
          this.addReasoning(part.reasoning_content);
          for (const call of array(part.tool_calls)) {
            const fn = object(object(call).function);
            this.add(fn.name, fn.arguments);
          }
        }
        return;
      case "responses":
        if (!streamed) {
          for (const item of array(json.output)) this.responsesItem(object(item));
        } else if (typeof json.type === "string") {
          if (responsesTextDelta.test(json.type)) this.add(json.delta);
          else if (responsesReasoningDelta.test(json.type)) this.addReasoning(json.delta);
          else if (json.type === "response.output_item.added") this.add(object(json.item).name);
        }
        return;
      case "messages":
        if (!streamed) {
          for (const block of array(json.content)) this.anthropicBlock(object(block));
        } else if (json.type === "content_block_delta") {
          const delta = object(json.delta);
          this.add(delta.text, delta.partial_json);
          this.addReasoning(delta.thinking);
        } else if (json.type === "content_block_start") {
          this.anthropicBlock(object(json.content_block));
        }
    }
  }

  /** A Responses output item: a message's text, a tool call's name and arguments, a reasoning summary. */
  private responsesItem(item: Record<string, unknown>): void {
    for (const part of array(item.content)) {
      const p = object(part);
      if (item.type === "reasoning") this.addReasoning(p.text);
      else this.add(p.text, p.refusal);
    }
    for (const part of array(item.summary)) this.addReasoning(object(part).text);
    this.add(item.name, item.arguments, item.input);
  }

  /** An Anthropic content block: text, a tool use's name and input, thinking. */
  private anthropicBlock(block: Record<string, unknown>): void {
    this.add(block.text, block.name);
    if ((block.type === "tool_use" || block.type === "server_tool_use") && block.input !== undefined && Object.keys(object(block.input)).length > 0) this.add(JSON.stringify(block.input));
    this.addReasoning(block.thinking);
  }

  private add(...pieces: unknown[]): void {
    for (const piece of pieces) if (typeof piece === "string" && this.text.length < maxTextChars) this.text += piece;
  }

  private addReasoning(piece: unknown): void {
    if (typeof piece === "string" && this.reasoning.length < maxTextChars) this.reasoning += piece;
  }
}

/** What a finished request is settled with, and whether it is an estimate. */
export interface SettledUsage {
  readonly usage: UsageRecord;
  readonly estimated: boolean;
}

/**
 * The usage to settle: what the provider reported when it reported it all;
 * otherwise, when the provider worked on the request (it answered a success,
 * or was cut off while working), an estimate — the counts it did report (an
 * Anthropic stream's input and cache counts), the counted prompt for the rest,
 * and the output from the text produced (never less than a count already
 * reported). A provider that failed without reporting anything charges nothing.
 */
export function settledUsage(reader: UsageReader | undefined, o: { countedInputTokens: number; worked: boolean }): SettledUsage {
  const reported = reader?.reported();
  if (reported?.complete) return { usage: reported.usage, estimated: false };
  if (!reported && !o.worked) return { usage: noUsage, estimated: false };
  const produced = reader?.estimatedOutput() ?? { outputTokens: 0, reasoningTokens: 0 };
  const outputTokens = Math.max(produced.outputTokens, reported?.usage.outputTokens ?? 0);
  const input = reported?.usage ?? { ...noUsage, inputTokens: o.countedInputTokens };
  return {
    usage: {
      inputTokens: input.inputTokens, cacheReadTokens: input.cacheReadTokens, cacheWriteTokens: input.cacheWriteTokens,
      outputTokens, reasoningTokens: Math.min(produced.reasoningTokens, outputTokens),
    },
    estimated: true,
  };
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

/** A provider's JSON answer or event, as an object to read. */
type Json = Record<string, unknown>;

/** A JSON value as an object to read (null and scalars read as empty); undefined when the text is not JSON. */
function parse(text: string): Json | undefined {
  try {
    return object(JSON.parse(text));
  } catch {
    return undefined;
  }
}

function object(v: unknown): Record<string, unknown> {
  return typeof v === "object" && v !== null ? (v as Record<string, unknown>) : {};
}

function array(v: unknown): readonly unknown[] {
  return Array.isArray(v) ? v : [];
}

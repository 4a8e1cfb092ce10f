import { StringDecoder } from "node:string_decoder";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import { joinChunks } from "./read-body.js";
import { countTextTokens } from "../control-plane/token-counter.js";
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
    sse;
    usage;
    text = "";
    /** SSE: the start of a line whose end has not arrived yet. */
    pending = "";
    /** JSON: the body as it came (decoded once, at the end), up to maxTextChars bytes. */
    body = [];
    bodyBytes = 0;
    bodyCut = false;
    unreadableBody = false;
    /** SSE: the data lines of the event being received. */
    data = [];
    /** SSE: events (their data) not parsed yet, in order. */
    unread = [];
    unreadChars = 0;
    decoder = new StringDecoder("utf8");
    constructor(sse) {
        this.sse = sse;
    }
    push(chunk) {
        if (!this.sse) {
            if (this.bodyBytes < maxTextChars) {
                this.body.push(chunk);
                this.bodyBytes += chunk.length;
            }
            else
                this.bodyCut = true;
            return;
        }
        const s = this.decoder.write(chunk);
        this.lines(this.pending ? this.pending + s : s);
    }
    /** Call at the end of the response. A JSON body that is not JSON is counted as generated text. */
    finish() {
        if (!this.sse) {
            const body = joinChunks(this.body, this.bodyBytes).toString();
            this.body = [];
            const json = body ? parse(body) : undefined;
            if (json)
                this.read(json);
            else if (body) {
                this.text = body.slice(0, maxTextChars);
                this.unreadableBody = !this.bodyCut;
            }
            return;
        }
        this.lines(this.pending + this.decoder.end());
        const last = this.pending;
        this.pending = "";
        if (last)
            this.line(last, last.endsWith("\r") ? last.length - 1 : last.length);
        this.line("", 0);
    }
    /** After finish(): a JSON body that is not JSON (a body too long to keep whole is never judged). */
    unreadable() {
        return this.unreadableBody;
    }
    /** Usage reported by the provider, if any. */
    reported() {
        if (!this.usage)
            this.readUnread();
        return this.usage;
    }
    /** The generated text seen so far (message content, text, tool-call arguments). */
    generatedText() {
        this.readUnread();
        return this.text;
    }
    /** Output tokens estimated from the text generated so far. */
    estimatedOutputTokens() {
        return countTextTokens(this.generatedText());
    }
    /** SSE: every complete line of `text`; an unfinished last line waits in `pending`. */
    lines(text) {
        let start = 0;
        for (let cut = text.indexOf("\n"); cut >= 0; cut = text.indexOf("\n", start)) {
            this.line(text.slice(start, cut), cut > start && text.charCodeAt(cut - 1) === 0x0d ? cut - start - 1 : cut - start);
            start = cut + 1;
        }
        this.pending = start === 0 ? text : text.slice(start);
    }
    /** SSE: "data:" lines accumulate until a blank line ends the event; `length` leaves out a trailing CR. */
    line(line, length) {
        if (length === 0) {
            if (this.data.length > 0)
                this.event(this.data.length === 1 ? this.data[0] : this.data.join("\n"));
            this.data.length = 0;
        }
        else if (line.startsWith("data:")) {
            this.data.push(line.slice(line.startsWith("data: ") ? 6 : 5, length));
        }
    }
    /** SSE: a usage is read at once; the text waits until it is asked for. */
    event(data) {
        if (data === "[DONE]")
            return;
        if (usageObject.test(data)) {
            const json = parse(data);
            if (json)
                this.readUsage(json);
        }
        this.unread.push(data);
        this.unreadChars += data.length;
        if (this.unreadChars > maxUnreadChars)
            this.readUnread();
    }
    /** Parses the events held unread, in order: their text, and any usage they report. */
    readUnread() {
        for (const data of this.unread) {
            const json = parse(data);
            if (json)
                this.read(json);
        }
        this.unread = [];
        this.unreadChars = 0;
    }
    read(json) {
        for (const choice of Array.isArray(json.choices) ? json.choices : [])
            this.collect(choice);
        this.readUsage(json);
    }
    readUsage(json) {
        const u = json.usage;
        if (u && typeof u === "object" && Number.isFinite(u.prompt_tokens)) {
            const completion = Number.isFinite(u.completion_tokens) ? Number(u.completion_tokens) : 0;
            this.usage = { inputTokens: Math.max(0, Math.floor(Number(u.prompt_tokens))), outputTokens: Math.max(0, Math.floor(completion)) };
        }
    }
    collect(choice) {
        const c = (choice ?? {});
        const part = c.delta ?? c.message;
        const pieces = [c.text, part?.content, part?.reasoning_content, part?.refusal];
        for (const call of Array.isArray(part?.tool_calls) ? part.tool_calls : []) {
            const fn = call?.function;
            pieces.push(fn?.name, fn?.arguments);
        }
        for (const piece of pieces)
            if (typeof piece === "string" && this.text.length < maxTextChars)
                this.text += piece;
    }
}
/**
 * Feeds a response to a reader as it passes, decompressing a copy when the
 * provider compressed it anyway (the proxy asks for identity): the client
 * gets the bytes as they came.
 */
export class UsageFeed {
    reader;
    decoder;
    constructor(reader, contentEncoding) {
        this.reader = reader;
        const encoding = (contentEncoding ?? "").trim().toLowerCase();
        this.decoder = encoding === "gzip" || encoding === "x-gzip" ? createGunzip() : encoding === "deflate" ? createInflate() : encoding === "br" ? createBrotliDecompress() : undefined;
        this.decoder?.on("data", (chunk) => reader.push(chunk));
        this.decoder?.on("error", () => undefined); // a corrupt body is an unreadable one: estimated
    }
    push(chunk) {
        if (this.decoder)
            this.decoder.write(chunk);
        else
            this.reader.push(chunk);
    }
    /** Resolves once everything pushed has been read. */
    finish() {
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
            if (decoder.destroyed)
                return done();
            decoder.once("end", done);
            decoder.once("error", done);
            decoder.end();
            decoder.resume();
        });
    }
}
/** A JSON value as an object to read (null and scalars read as empty); undefined when the text is not JSON. */
function parse(text) {
    try {
        return (JSON.parse(text) ?? {});
    }
    catch {
        return undefined;
    }
}
//# sourceMappingURL=usage-reader.js.map
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";

/** A request as the provider received it. */
export interface ProviderCall {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: any;
}

/** One SSE event: `event:` line (optional) and data (JSON, or raw text sent as is). */
export interface SseEvent {
  readonly event?: string;
  readonly data: unknown;
}

/** How a stream is played: whole, cut (the socket destroyed) before event `cutAt`, or held before event `holdAt` until the client leaves. */
export interface Playback {
  readonly cutAt?: number;
  readonly holdAt?: number;
}

/**
 * A provider server whose answers the test scripts: `answer` writes the
 * response for each call (JSON or an SSE stream via `sse`). Every call is
 * recorded with its headers and parsed body.
 */
export class ScriptedProvider {
  server!: Server;
  port = 0;
  readonly received: ProviderCall[] = [];
  /** Streams held open (holdAt) right now. */
  holding = 0;

  constructor(public answer: (call: ProviderCall, res: ServerResponse) => void | Promise<void>) {}

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}/v1`;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res).catch(() => res.destroy()));
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** Writes `events` as SSE, as `playback` says. */
  async sse(res: ServerResponse, events: readonly SseEvent[], playback: Playback = {}): Promise<void> {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    for (const [i, e] of events.entries()) {
      if (i === playback.cutAt) return void res.socket?.destroy();
      if (i === playback.holdAt) {
        this.holding++;
        await new Promise((resolve) => res.once("close", resolve));
        this.holding--;
        return;
      }
      res.write(`${e.event ? `event: ${e.event}\n` : ""}data: ${typeof e.data === "string" ? e.data : JSON.stringify(e.data)}\n\n`);
      // Each event on its own, as a model generating sends them.
      await new Promise((resolve) => setImmediate(resolve));
    }
    res.end();
  }

  json(res: ServerResponse, body: unknown, status = 200): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    res.end(text);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let raw = "";
    for await (const chunk of req) raw += chunk;
    const call = { path: (req.url ?? "").replace(/^\/v1/, ""), headers: req.headers, body: raw ? JSON.parse(raw) : {} };
    this.received.push(call);
    await this.answer(call, res);
  }
}

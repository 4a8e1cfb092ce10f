/** One request of a load: which route, whose key, what body. */
export interface LoadRequest {
  readonly kind: string;
  readonly tenant: string;
  readonly path: "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings";
  /** Bearer credential. */
  readonly key: string;
  readonly task: string;
  readonly body: Record<string, unknown>;
}

/** What the client saw. `ok`: a 2xx answer read to its end (a stream up to `[DONE]`). */
export interface LoadResult {
  readonly kind: string;
  readonly tenant: string;
  readonly ok: boolean;
  /** HTTP status; 0 when no answer came (refused, reset before the headers). */
  readonly status: number;
  /** The data plane's x-request-id, when headers came back. */
  readonly requestId?: string;
  /** Why it failed: the error body's message or the network error. */
  readonly error?: string;
  readonly latencyMs: number;
}

export interface LoadOptions {
  /** The data plane's base URL, read per request (it may move while the load runs). */
  readonly baseUrl: () => string;
  readonly ratePerSec: number;
  /** The i-th request. */
  readonly request: (i: number) => LoadRequest;
  /** Per-request deadline. */
  readonly timeoutMs?: number;
}

/**
 * Calls `fire(i)` for i = 0, 1, … at `rate` per second from now, whatever the
 * earlier calls are doing (an open loop): call i is due at start + i / rate, and
 * calls a busy event loop missed are made as soon as it is free, so the rate holds
 * on average. Ends after `count` calls, or at stop(); `finished` says how many.
 */
export function openLoopSchedule(rate: number, fire: (i: number) => void, count = Infinity): { stop(): void; finished: Promise<number> } {
  const periodMs = 1000 / rate;
  const started = performance.now();
  let sent = 0;
  let timer: NodeJS.Timeout | undefined;
  let finish!: (sent: number) => void;
  const finished = new Promise<number>((r) => (finish = r));
  const tick = () => {
    const due = Math.min(count, Math.floor((performance.now() - started) / periodMs) + 1);
    while (sent < due) fire(sent++);
    if (sent >= count) return finish(sent);
    timer = setTimeout(tick, Math.max(0, started + sent * periodMs - performance.now()));
  };
  tick();
  return {
    stop: () => {
      clearTimeout(timer);
      finish(sent);
    },
    finished,
  };
}

/**
 * Open-loop load at a fixed rate through the data plane with plain fetch: a
 * request starts every 1/rate seconds whatever the previous ones are doing, so
 * a stalled server shows up as errors and latency, not as a slower load.
 */
export class Load {
  readonly results: LoadResult[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  /** Requests of each kind whose answer has begun (headers in) and not ended. */
  private readonly answeringByKind = new Map<string, number>();
  private schedule: { stop(): void } | undefined;

  constructor(private readonly options: LoadOptions) {}

  start(): void {
    this.schedule = openLoopSchedule(this.options.ratePerSec, (i) => this.fire(i));
  }

  /** Stops sending and waits for the requests under way. */
  async stop(): Promise<void> {
    this.schedule?.stop();
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  /** Requests sent and not yet answered to their end (or failed). */
  underWay(): number {
    return this.inFlight.size;
  }

  /** Requests of this kind whose answer has begun and not ended: for a stream, one cut now is cut mid-stream. */
  answering(kind: string): number {
    return this.answeringByKind.get(kind) ?? 0;
  }

  /** Results since index `from` (e.g. one sampling period). */
  since(from: number): LoadResult[] {
    return this.results.slice(from);
  }

  private fire(i: number): void {
    const spec = this.options.request(i);
    const answering = (delta: number) => this.answeringByKind.set(spec.kind, this.answering(spec.kind) + delta);
    const run = send(this.options.baseUrl(), spec, this.options.timeoutMs ?? 30_000, answering).then((r) => void this.results.push(r));
    this.inFlight.add(run);
    void run.finally(() => this.inFlight.delete(run));
  }
}

/** One request; `answering(+1)` when its headers are in, `answering(-1)` once its body ended or broke. */
async function send(baseUrl: string, spec: LoadRequest, timeoutMs: number, answering: (delta: number) => void): Promise<LoadResult> {
  const started = performance.now();
  const base = { kind: spec.kind, tenant: spec.tenant };
  let status = 0;
  let requestId: string | undefined;
  try {
    const res = await fetch(`${baseUrl}${spec.path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${spec.key}`, "content-type": "application/json", "x-llm-task": spec.task },
      body: JSON.stringify(spec.body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    status = res.status;
    requestId = res.headers.get("x-request-id") ?? undefined;
    answering(1);
    const text = await res.text().finally(() => answering(-1));
    const streamed = spec.body.stream === true && res.ok;
    const ok = res.ok && (!streamed || text.includes("data: [DONE]"));
    const error = ok ? undefined : streamed ? "stream cut before [DONE]" : errorMessage(text);
    return { ...base, ok, status, requestId, error, latencyMs: performance.now() - started };
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code;
    return { ...base, ok: false, status, requestId, error: cause ?? (err as Error).message, latencyMs: performance.now() - started };
  }
}

function errorMessage(text: string): string {
  try {
    return String((JSON.parse(text) as { error?: { message?: string } }).error?.message ?? text.slice(0, 200));
  } catch {
    return text.slice(0, 200);
  }
}

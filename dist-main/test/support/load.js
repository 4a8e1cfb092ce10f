/**
 * Calls `fire(i)` for i = 0, 1, … at `rate` per second from now, whatever the
 * earlier calls are doing (an open loop): call i is due at start + i / rate, and
 * calls a busy event loop missed are made as soon as it is free, so the rate holds
 * on average. Ends after `count` calls, or at stop(); `finished` says how many.
 */
export function openLoopSchedule(rate, fire, count = Infinity) {
    const periodMs = 1000 / rate;
    const started = performance.now();
    let sent = 0;
    let timer;
    let finish;
    const finished = new Promise((r) => (finish = r));
    const tick = () => {
        const due = Math.min(count, Math.floor((performance.now() - started) / periodMs) + 1);
        while (sent < due)
            fire(sent++);
        if (sent >= count)
            return finish(sent);
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
    options;
    results = [];
    inFlight = new Set();
    schedule;
    constructor(options) {
        this.options = options;
    }
    start() {
        this.schedule = openLoopSchedule(this.options.ratePerSec, (i) => this.fire(i));
    }
    /** Stops sending and waits for the requests under way. */
    async stop() {
        this.schedule?.stop();
        while (this.inFlight.size > 0)
            await Promise.all([...this.inFlight]);
    }
    /** Results since index `from` (e.g. one sampling period). */
    since(from) {
        return this.results.slice(from);
    }
    fire(i) {
        const spec = this.options.request(i);
        const run = send(this.options.baseUrl(), spec, this.options.timeoutMs ?? 30_000).then((r) => void this.results.push(r));
        this.inFlight.add(run);
        void run.finally(() => this.inFlight.delete(run));
    }
}
async function send(baseUrl, spec, timeoutMs) {
    const started = performance.now();
    const base = { kind: spec.kind, tenant: spec.tenant };
    let status = 0;
    let requestId;
    try {
        const res = await fetch(`${baseUrl}${spec.path}`, {
            method: "POST",
            headers: { authorization: `Bearer ${spec.key}`, "content-type": "application/json", "x-llm-task": spec.task },
            body: JSON.stringify(spec.body),
            signal: AbortSignal.timeout(timeoutMs),
        });
        status = res.status;
        requestId = res.headers.get("x-request-id") ?? undefined;
        const text = await res.text();
        const streamed = spec.body.stream === true && res.ok;
        const ok = res.ok && (!streamed || text.includes("data: [DONE]"));
        const error = ok ? undefined : streamed ? "stream cut before [DONE]" : errorMessage(text);
        return { ...base, ok, status, requestId, error, latencyMs: performance.now() - started };
    }
    catch (err) {
        const cause = err.cause?.code;
        return { ...base, ok: false, status, requestId, error: cause ?? err.message, latencyMs: performance.now() - started };
    }
}
function errorMessage(text) {
    try {
        return String(JSON.parse(text).error?.message ?? text.slice(0, 200));
    }
    catch {
        return text.slice(0, 200);
    }
}
//# sourceMappingURL=load.js.map
import { Outcome } from "../gen/admission/v1/admission_pb.js";
/**
 * One admitted (or, under FAIL_OPEN, unadmitted) request on its way through
 * the route candidates. Finishes exactly once, with what the provider
 * reported or an estimate of what it produced.
 */
export class Flight {
    init;
    /** Index of the route candidate being tried. */
    attempt = 0;
    /** When the first provider call started (performance.now()), 0 before. */
    upstreamStartedAt = 0;
    /** The provider's status once it answered. */
    status;
    reader;
    proxyReq;
    proxyRes;
    renewer;
    finished = false;
    constructor(init) {
        this.init = init;
    }
    /** `Server-Timing` of the proxy's own work before forwarding: the Admit round trip and everything else. */
    serverTiming() {
        const beforeForwardMs = this.upstreamStartedAt > 0 ? this.upstreamStartedAt - this.init.startedAt : 0;
        return `admit;dur=${this.init.admitMs.toFixed(3)}, proxy;dur=${Math.max(0, beforeForwardMs - this.init.admitMs).toFixed(3)}`;
    }
    get route() {
        return this.init.routes[this.attempt];
    }
    get done() {
        return this.finished;
    }
    /**
     * Ends the flight once; undefined if it already ended. Input tokens are
     * charged when the provider worked on the request (it answered with a
     * success, or the client left while it was working), output tokens are what
     * it produced; without reported usage both are estimated with the tokenizer.
     */
    finish(outcome) {
        if (this.finished)
            return undefined;
        this.finished = true;
        this.renewer?.stop();
        const reported = this.reader?.reported();
        const worked = this.status !== undefined ? this.status < 400 : outcome === Outcome.CLIENT_ABORTED && this.upstreamStartedAt > 0;
        const inputTokens = reported?.inputTokens ?? (worked ? this.init.request.inputTokens : 0);
        const outputTokens = reported?.outputTokens ?? (worked ? this.reader?.estimatedOutputTokens() ?? 0 : 0);
        return {
            inputTokens,
            outputTokens,
            estimated: reported === undefined && worked,
            outcome,
            route: this.route ?? this.init.routes.at(-1),
            latencyMs: this.upstreamStartedAt > 0 ? Math.round(performance.now() - this.upstreamStartedAt) : 0,
        };
    }
}
//# sourceMappingURL=flight.js.map
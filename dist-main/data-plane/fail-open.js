import { create } from "@bufbuild/protobuf";
import { AdmitRequestSchema, RouteSchema, SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { asControlPlaneError } from "./control-plane-error.js";
/**
 * FAIL_OPEN: while the control plane is unreachable, requests are forwarded
 * on the routes last decided for their task and model (or to a fallback
 * provider with the model as asked), unmetered. Their usage is recorded when
 * the link comes back: an Admit with the same request id (the reservation is
 * one token, so it passes unless the subject is now blocked outright), then a
 * Settle with what was used. Held in memory: a data-plane crash during the
 * outage loses it (the provider key's own billing still has it).
 */
export class FailOpen {
    options;
    routes = new Map();
    pending = [];
    flushing;
    unsubscribe;
    constructor(options) {
        this.options = options;
        this.unsubscribe = options.client.onLinkChange((up) => {
            if (up)
                void this.flush();
        });
    }
    /** Remembers the routes of an allowed decision, for use during an outage. */
    remember(task, model, routes) {
        const key = `${task}\u0000${model}`;
        const known = this.routes.get(key);
        if (routes.length === 0 || (known && sameRoutes(known, routes)))
            return;
        if (this.routes.size >= 10_000)
            this.routes.clear();
        this.routes.set(key, routes);
    }
    /** Routes for an unadmitted request, or undefined when it cannot be routed. */
    routesFor(task, model) {
        const known = this.routes.get(`${task}\u0000${model}`);
        if (known)
            return known;
        if (!this.options.fallbackProvider || !model)
            return undefined;
        return [create(RouteSchema, { provider: this.options.fallbackProvider, model, providerModel: model })];
    }
    record(usage) {
        if (this.pending.length >= (this.options.maxPending ?? 100_000)) {
            this.options.metrics.failOpen.inc({ result: "lost" });
            this.options.logger.error({ requestId: usage.requestId }, "fail-open usage buffer full; usage not recorded");
            return;
        }
        this.pending.push(usage);
        this.options.metrics.failOpen.inc({ result: "held" });
        // The link may have come back while this request ran.
        if (this.options.client.connected())
            void this.flush();
    }
    /** How many unadmitted requests wait to be recorded. */
    size() {
        return this.pending.length;
    }
    /** Records held usage (Admit then Settle each); stops at the first unreachable error. */
    flush() {
        this.flushing ??= this.flushOnce().finally(() => (this.flushing = undefined));
        return this.flushing;
    }
    close() {
        this.unsubscribe();
    }
    async flushOnce() {
        while (this.pending.length > 0) {
            const u = this.pending[0];
            let decision;
            try {
                decision = await this.options.client.admit(create(AdmitRequestSchema, {
                    requestId: u.requestId, credential: u.credential, task: u.task, model: u.model, inputTokens: 0n, maxOutputTokens: 1n,
                    attributes: { fail_open: "1" },
                }));
            }
            catch (raw) {
                const err = asControlPlaneError(raw);
                if (err.unreachable)
                    return;
                decision = undefined;
                this.options.logger.error({ requestId: u.requestId, err: err.message }, "fail-open usage refused by the control plane; not recorded");
            }
            this.pending.shift();
            if (!decision?.allowed || !decision.reservationId) {
                if (decision)
                    this.options.logger.error({ requestId: u.requestId, tenant: decision.tenant, reason: decision.message }, "fail-open usage denied on recording; not recorded");
                this.options.metrics.failOpen.inc({ result: "lost" });
                continue;
            }
            this.options.metrics.failOpen.inc({ result: "recorded" });
            await this.options.settler.settle(create(SettleRequestSchema, {
                reservationId: decision.reservationId,
                inputTokens: BigInt(u.inputTokens),
                outputTokens: BigInt(u.outputTokens),
                provider: u.provider,
                model: u.servedModel,
                outcome: u.outcome,
                latencyMs: BigInt(u.latencyMs),
                estimated: u.estimated,
            }), { requestId: u.requestId, tenant: decision.tenant });
        }
    }
}
/** The same candidates in the same order (every decision decodes new objects). */
function sameRoutes(a, b) {
    return a.length === b.length && a.every((r, i) => r.provider === b[i].provider && r.model === b[i].model && r.providerModel === b[i].providerModel && r.modelClass === b[i].modelClass);
}
//# sourceMappingURL=fail-open.js.map
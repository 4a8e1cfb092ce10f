import { clone } from "@bufbuild/protobuf";
import { status as Code } from "@grpc/grpc-js";
import { SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { Backoff } from "./backoff.js";
import { asControlPlaneError } from "./control-plane-error.js";
/**
 * Delivers every Settle exactly once in effect: sent now, or — when the
 * control plane cannot be reached — spooled to disk and replayed with backoff
 * (and as soon as the link comes back). Settle is idempotent on the
 * reservation id, so a settle that did arrive before the link broke is a
 * harmless duplicate on replay.
 */
export class Settler {
    options;
    inFlight = new Set();
    backoff;
    timer;
    stopped = false;
    unsubscribe;
    constructor(options) {
        this.options = options;
        this.backoff = new Backoff({ minMs: options.replayMinMs, maxMs: options.replayMaxMs, random: options.random });
        options.metrics.spooledSettles.set(options.spool.size());
        this.unsubscribe = options.client.onLinkChange((up) => {
            if (up && options.spool.pending()) {
                this.backoff.reset();
                this.schedule(0);
            }
        });
        if (options.spool.pending())
            this.schedule(0);
    }
    /** Never rejects: the settle is acknowledged, spooled, or (only when the control plane refuses it for good) logged as lost. */
    settle(req, context) {
        const run = this.deliver(req, context).finally(() => this.inFlight.delete(run));
        this.inFlight.add(run);
        return run;
    }
    /** Settles waiting in the spool. */
    spooled() {
        return this.options.spool.size();
    }
    /** Sends spooled settles now; resolves with what was delivered. */
    async replay() {
        const report = await this.options.spool.replay((req) => this.replayOne(req));
        this.options.metrics.spooledSettles.set(this.options.spool.size());
        if (report.delivered || report.dropped)
            this.options.logger.info(report, "spooled settles replayed");
        return report;
    }
    /** Waits for settles in flight (delivered or spooled). */
    async stop() {
        this.stopped = true;
        this.unsubscribe();
        clearTimeout(this.timer);
        while (this.inFlight.size > 0)
            await Promise.allSettled([...this.inFlight]);
        await this.options.spool.idle();
    }
    async deliver(req, context) {
        const result = await this.send(req);
        if (result.outcome === "delivered") {
            this.options.metrics.settles.inc({ result: "delivered" });
            return;
        }
        if (result.outcome === "drop") {
            this.options.metrics.settles.inc({ result: "lost" });
            this.options.logger.error({ ...context, code: Code[result.code], err: result.message }, "settle refused by the control plane; usage not recorded");
            return;
        }
        try {
            await this.options.spool.append(req);
            this.options.metrics.settles.inc({ result: "spooled" });
            this.options.metrics.spooledSettles.set(this.options.spool.size());
            this.options.logger.warn({ ...context, err: result.message }, "settle not delivered; spooled for replay");
            this.schedule(this.backoff.nextDelayMs());
        }
        catch (err) {
            this.options.metrics.settles.inc({ result: "lost" });
            this.options.logger.error({ ...context, err: String(err) }, "settle neither delivered nor spooled; usage not recorded");
        }
    }
    async replayOne(req) {
        const result = await this.send(req);
        if (result.outcome === "drop") {
            this.options.metrics.settles.inc({ result: "lost" });
            this.options.logger.error({ code: Code[result.code], err: result.message }, "spooled settle refused by the control plane; dropped");
        }
        else if (result.outcome === "delivered") {
            this.options.metrics.settles.inc({ result: "replayed" });
        }
        return result.outcome;
    }
    /**
     * One attempt. A credential that no longer authenticates (revoked while the
     * request ran) must not lose the usage: the signed reservation id alone is
     * accepted, so the settle is sent again without it.
     */
    async send(req) {
        try {
            await this.options.client.settle(req);
            return { outcome: "delivered", code: Code.OK, message: "" };
        }
        catch (raw) {
            const err = asControlPlaneError(raw);
            if (err.unreachable)
                return { outcome: "retry", code: err.code, message: err.message };
            if (req.credential && (err.code === Code.UNAUTHENTICATED || err.code === Code.PERMISSION_DENIED)) {
                const anonymous = clone(SettleRequestSchema, req);
                anonymous.credential = "";
                return this.send(anonymous);
            }
            return { outcome: "drop", code: err.code, message: err.message };
        }
    }
    schedule(delayMs) {
        if (this.stopped || (this.timer && delayMs > 0))
            return;
        clearTimeout(this.timer);
        this.timer = setTimeout(() => {
            this.timer = undefined;
            void this.replay().then((report) => {
                if (report.remaining > 0)
                    this.schedule(this.backoff.nextDelayMs());
                else
                    this.backoff.reset();
            }, (err) => {
                this.options.logger.warn({ err: String(err) }, "spool replay failed; retrying");
                this.schedule(this.backoff.nextDelayMs());
            });
        }, delayMs);
        this.timer.unref();
    }
}
//# sourceMappingURL=settler.js.map
import { status as Code } from "@grpc/grpc-js";
import { ControlPlaneError } from "./control-plane-error.js";
/** How often calls past their deadline are failed: one timer per stream rather than one per call. */
const deadlineSweepMs = 25;
/** Raised for calls in flight when their stream closes: safe to retry elsewhere (Admit and Settle are idempotent). */
export class StreamClosedError extends ControlPlaneError {
    constructor(why) {
        super(Code.UNAVAILABLE, `session stream closed: ${why}`);
        this.name = "StreamClosedError";
    }
}
/**
 * One bidirectional `Session` stream multiplexing calls by correlation id.
 * Answers may arrive in any order. When the stream ends or breaks, every call
 * in flight fails at once with StreamClosedError and `onClosed` fires once.
 */
export class SessionStream {
    call;
    onClosed;
    /** Calls in flight by correlation id (a number here, an int64 on the wire). */
    pending = new Map();
    nextId = 1;
    state = "open";
    sweeper;
    constructor(call, onClosed) {
        this.call = call;
        this.onClosed = onClosed;
        this.sweeper = setInterval(() => this.failOverdue(), deadlineSweepMs);
        this.sweeper.unref();
        call.on("data", (msg) => this.answer(msg));
        call.on("error", (err) => this.close(err.message));
        call.on("status", (s) => this.close(s.code === Code.OK ? "ended by the control plane" : s.details || `status ${s.code}`));
        call.on("end", () => this.close("ended by the control plane"));
        call.on("close", () => this.close("closed"));
    }
    /** Takes new calls (not draining, not closed). */
    get accepting() {
        return this.state === "open";
    }
    get inFlight() {
        return this.pending.size;
    }
    request(call, timeoutMs) {
        if (this.state !== "open")
            return Promise.reject(new StreamClosedError("not accepting calls"));
        const id = this.nextId++;
        return new Promise((resolve, reject) => {
            this.pending.set(id, { resolve, reject, deadlineMs: performance.now() + timeoutMs, timeoutMs });
            this.call.write({ $typeName: "admission.v1.SessionRequest", id: BigInt(id), call });
        });
    }
    /** Half-closes: no new calls; the control plane answers those in flight, then ends the stream. */
    drain() {
        if (this.state !== "open")
            return;
        this.state = "draining";
        this.call.end();
        if (this.pending.size === 0)
            this.cancel("drained");
    }
    /** Closes now, failing calls in flight. */
    cancel(why) {
        if (this.state === "closed")
            return;
        this.call.cancel();
        this.close(why);
    }
    answer(msg) {
        const id = Number(msg.id);
        const p = this.pending.get(id);
        if (!p)
            return; // timed out already
        this.pending.delete(id);
        if (msg.result.case === undefined)
            p.reject(new ControlPlaneError(Code.INTERNAL, "empty session response"));
        else
            p.resolve(msg.result);
        if (this.state === "draining" && this.pending.size === 0)
            this.cancel("drained");
    }
    /** Fails the calls whose deadline passed (late by at most deadlineSweepMs). */
    failOverdue() {
        if (this.pending.size === 0)
            return;
        const now = performance.now();
        for (const [id, p] of this.pending) {
            if (p.deadlineMs > now)
                continue;
            this.pending.delete(id);
            p.reject(new ControlPlaneError(Code.DEADLINE_EXCEEDED, `control plane did not answer within ${p.timeoutMs} ms`));
        }
        if (this.state === "draining" && this.pending.size === 0)
            this.cancel("drained");
    }
    close(why) {
        if (this.state === "closed")
            return;
        this.state = "closed";
        clearInterval(this.sweeper);
        const err = new StreamClosedError(why);
        for (const p of this.pending.values())
            p.reject(err);
        this.pending.clear();
        this.onClosed(this, why);
    }
}
//# sourceMappingURL=session-stream.js.map
import { status as Code } from "@grpc/grpc-js";
import { RpcError } from "./rpc-error.js";
/**
 * One bound on calls in flight across every front end: unary gRPC, Session
 * stream messages, Connect and ext_authz share it. Past the bound a call is
 * shed at once with RESOURCE_EXHAUSTED instead of queueing; a call whose
 * deadline has passed or whose caller left is not run at all.
 */
export class InFlightLimit {
    max;
    gauge;
    clock;
    current = 0;
    constructor(max, gauge, clock = Date.now) {
        this.max = max;
        this.gauge = gauge;
        this.clock = clock;
        if (!(Number.isInteger(max) && max >= 1))
            throw new Error(`in-flight limit must be a positive integer, got ${max}`);
    }
    get inFlight() {
        return this.current;
    }
    /** Runs the call in a slot; rejects without running it when no slot is free, the deadline passed or the caller left. */
    async run(state, call) {
        const refused = this.enter(state);
        if (refused)
            throw refused;
        try {
            return await call();
        }
        finally {
            this.leave();
        }
    }
    /**
     * Takes a slot for a call about to run, or answers why it may not run. The
     * caller runs it and calls leave() once it is done (run() does both).
     */
    enter(state) {
        if (state.cancelled)
            return new RpcError(Code.CANCELLED, "the caller cancelled the call before it ran");
        if (state.deadlineMs !== Infinity && state.deadlineMs <= this.clock())
            return new RpcError(Code.DEADLINE_EXCEEDED, "the call's deadline passed before it ran");
        if (this.current >= this.max)
            return new RpcError(Code.RESOURCE_EXHAUSTED, "control plane overloaded; retry with backoff");
        this.current++;
        this.gauge?.set(this.current);
        return undefined;
    }
    leave() {
        this.current--;
        this.gauge?.set(this.current);
    }
}
/** A grpc-js deadline (Date, ms number, or Infinity) in ms since the epoch. */
export function deadlineMs(deadline) {
    return deadline instanceof Date ? deadline.getTime() : deadline;
}
//# sourceMappingURL=in-flight-limit.js.map
import { status as Code } from "@grpc/grpc-js";
/** A failed control-plane call: its gRPC status code and message. */
export class ControlPlaneError extends Error {
    code;
    constructor(code, message) {
        super(message);
        this.code = code;
        this.name = "ControlPlaneError";
    }
    /**
     * The link, not the call, failed: the control plane is down, overloaded, or
     * did not answer in time. Admits then follow the failure policy and Settles
     * are spooled; any other code is the control plane's answer to this call.
     */
    get unreachable() {
        return unreachableCodes.has(this.code);
    }
}
const unreachableCodes = new Set([Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED, Code.CANCELLED, Code.UNKNOWN, Code.INTERNAL]);
export function asControlPlaneError(err) {
    if (err instanceof ControlPlaneError)
        return err;
    const e = err;
    if (typeof e?.code === "number")
        return new ControlPlaneError(e.code, String(e.details || e.message || "control plane call failed"));
    return new ControlPlaneError(Code.INTERNAL, err instanceof Error ? err.message : String(err));
}
//# sourceMappingURL=control-plane-error.js.map
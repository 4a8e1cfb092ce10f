import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { status as Code } from "@grpc/grpc-js";
import { RenewRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { asControlPlaneError } from "./control-plane-error.js";
const minDelayMs = 250;
/**
 * Keeps a reservation's lease alive while its request runs (a long stream
 * outliving the TTL would otherwise be charged its estimate and its real
 * Settle ignored): renews at half the remaining time, until stopped.
 */
export class LeaseRenewer {
    options;
    timer;
    stopped = false;
    constructor(options) {
        this.options = options;
        this.schedule(options.leaseExpiresAtMs);
    }
    stop() {
        this.stopped = true;
        clearTimeout(this.timer);
    }
    schedule(expiresAtMs) {
        if (this.stopped)
            return;
        const now = (this.options.clock ?? Date.now)();
        this.timer = setTimeout(() => void this.renew(expiresAtMs), Math.max(minDelayMs, (expiresAtMs - now) / 2));
        this.timer.unref();
    }
    async renew(expiresAtMs) {
        try {
            const renewed = await this.options.client.renew(create(RenewRequestSchema, { reservationId: this.options.reservationId }));
            this.schedule(renewed.leaseExpiresAt ? timestampMs(renewed.leaseExpiresAt) : expiresAtMs);
        }
        catch (raw) {
            const err = asControlPlaneError(raw);
            if (err.code === Code.NOT_FOUND)
                return; // settled or expired: nothing left to keep alive
            this.options.logger.warn({ requestId: this.options.requestId, err: err.message }, "lease renewal failed; retrying");
            this.schedule(expiresAtMs);
        }
    }
}
//# sourceMappingURL=lease-renewer.js.map
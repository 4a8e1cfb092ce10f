import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { status as Code } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { RenewRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { asControlPlaneError } from "./control-plane-error.js";
import type { TraceCarrier } from "../control-plane/tracing.js";
import type { ControlPlaneClient } from "./control-plane-client.js";

const minDelayMs = 250;

/**
 * Keeps a reservation's lease alive while its request runs (a long stream
 * outliving the TTL would otherwise be charged its estimate and its real
 * Settle ignored): renews at half the remaining time, until stopped — or until
 * the lease reaches its maximum lifetime (the control plane's
 * ADMISSION_MAX_LEASE_TTL_MS from the Admit: a Renew that no longer moves the
 * expiry, or FAILED_PRECONDITION). The request then goes on; its lease expires
 * at that time and is charged its estimate, and the Settle that follows finds
 * it so (logged once, as a warning).
 */
export class LeaseRenewer {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly options: {
    readonly client: Pick<ControlPlaneClient, "renew">;
    /** The request's span context: each Renew's control-plane span is a child of it. */
    readonly trace?: TraceCarrier;
    readonly reservationId: string;
    readonly leaseExpiresAtMs: number;
    readonly logger: Logger;
    /** The request it serves, for the log. */
    readonly requestId: string;
    readonly clock?: () => number;
  }) {
    this.schedule(options.leaseExpiresAtMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private schedule(expiresAtMs: number): void {
    if (this.stopped) return;
    const now = (this.options.clock ?? Date.now)();
    this.timer = setTimeout(() => void this.renew(expiresAtMs), Math.max(minDelayMs, (expiresAtMs - now) / 2));
    this.timer.unref();
  }

  private async renew(expiresAtMs: number): Promise<void> {
    try {
      const renewed = await this.options.client.renew(create(RenewRequestSchema, { reservationId: this.options.reservationId }), this.options.trace);
      const renewedAtMs = renewed.leaseExpiresAt ? timestampMs(renewed.leaseExpiresAt) : expiresAtMs;
      if (renewedAtMs <= expiresAtMs) return this.reachedLifetime(renewedAtMs); // clamped: the lease can live no longer
      this.schedule(renewedAtMs);
    } catch (raw) {
      const err = asControlPlaneError(raw);
      if (err.code === Code.NOT_FOUND) return; // settled or expired: nothing left to keep alive
      if (err.code === Code.FAILED_PRECONDITION) return this.reachedLifetime(expiresAtMs);
      this.options.logger.warn({ requestId: this.options.requestId, err: err.message }, "lease renewal failed; retrying");
      this.schedule(expiresAtMs);
    }
  }

  private reachedLifetime(expiresAtMs: number): void {
    if (this.stopped) return;
    this.options.logger.warn(
      { requestId: this.options.requestId, leaseExpiresAt: new Date(expiresAtMs).toISOString() },
      "lease reached its maximum lifetime; if the request runs past it, it is charged its estimate",
    );
  }
}

import { create } from "@bufbuild/protobuf";
import type { Logger } from "pino";
import type { Outcome } from "../gen/admission/v1/admission_pb.js";
import { AdmitRequestSchema, SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
import type { AdmissionAsk, AdmittedCredentials, RememberedAdmission } from "./admitted-credentials.js";
import { asControlPlaneError } from "./control-plane-error.js";
import type { ControlPlaneClient } from "./control-plane-client.js";
import type { DataPlaneMetrics } from "./metrics.js";
import type { Settler } from "./settler.js";

/** Usage of a request served without a decision, waiting to be recorded. */
export interface UnadmittedUsage {
  readonly requestId: string;
  /** Kept in memory only, never written to disk or logs. */
  readonly credential: string;
  readonly task: string;
  /** The model as the client asked for it (name or class). */
  readonly model: string;
  readonly provider: string;
  /** The catalog model that served it, when a cached route was used. */
  readonly servedModel: string;
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly outcome: Outcome;
  readonly latencyMs: number;
  readonly estimated: boolean;
}

export interface FailOpenOptions {
  readonly client: Pick<ControlPlaneClient, "admit" | "onLinkChange" | "connected">;
  readonly settler: Pick<Settler, "settle">;
  readonly logger: Logger;
  readonly metrics: DataPlaneMetrics;
  /** The credentials admitted here recently; undefined (FAIL_CLOSED): nothing is remembered, nothing served unadmitted. */
  readonly admitted: AdmittedCredentials | undefined;
  /** Bound on usage held while the control plane is away. */
  readonly maxPending?: number;
}

/**
 * FAIL_OPEN: while the control plane is unreachable, a request is forwarded,
 * unmetered, only if its credential was admitted here recently for the same
 * path, task and model: on the routes of that admission. Anything else (a
 * credential never admitted here, one denied since, one admitted too long
 * ago, a model or task it was not admitted for) is refused with 503. The
 * usage is recorded when the link comes back: an Admit with the same request
 * id (the reservation is one token, so it passes unless the subject is now
 * blocked outright), then a Settle with what was used. Held in memory: a
 * data-plane crash during the outage loses it (the provider key's own
 * billing still has it).
 */
export class FailOpen {
  private pending: UnadmittedUsage[] = [];
  private flushing: Promise<void> | undefined;
  private readonly unsubscribe: () => void;

  constructor(private readonly options: FailOpenOptions) {
    this.unsubscribe = options.client.onLinkChange((up) => {
      if (up) void this.flush();
    });
  }

  /** The control plane allowed this credential's ask: remembered, for an outage. */
  admitted(credential: string, ask: AdmissionAsk, admission: RememberedAdmission): void {
    this.options.admitted?.admitted(credential, ask, admission);
  }

  /** The control plane denied or refused this credential: it is not served during an outage. */
  denied(credential: string): void {
    this.options.admitted?.forget(credential);
  }

  /** The tenant and routes to serve an unadmitted request on, or undefined: refuse it. */
  serve(credential: string, ask: AdmissionAsk): RememberedAdmission | undefined {
    return this.options.admitted?.lookup(credential, ask);
  }

  record(usage: UnadmittedUsage): void {
    if (this.pending.length >= (this.options.maxPending ?? 100_000)) {
      this.options.metrics.failOpen.inc({ result: "lost" });
      this.options.logger.error({ requestId: usage.requestId }, "fail-open usage buffer full; usage not recorded");
      return;
    }
    this.pending.push(usage);
    this.options.metrics.failOpen.inc({ result: "held" });
    // The link may have come back while this request ran.
    if (this.options.client.connected()) void this.flush();
  }

  /** How many unadmitted requests wait to be recorded. */
  size(): number {
    return this.pending.length;
  }

  /** Records held usage (Admit then Settle each); stops at the first unreachable error. */
  flush(): Promise<void> {
    this.flushing ??= this.flushOnce().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  close(): void {
    this.unsubscribe();
  }

  private async flushOnce(): Promise<void> {
    while (this.pending.length > 0) {
      const u = this.pending[0]!;
      let decision;
      try {
        decision = await this.options.client.admit(create(AdmitRequestSchema, {
          requestId: u.requestId, credential: u.credential, task: u.task, model: u.model, inputTokens: 0n, maxOutputTokens: 1n,
          attributes: { fail_open: "1" },
        }));
      } catch (raw) {
        const err = asControlPlaneError(raw);
        if (err.unreachable) return;
        decision = undefined;
        this.options.logger.error({ requestId: u.requestId, err: err.message }, "fail-open usage refused by the control plane; not recorded");
      }
      this.pending.shift();
      if (!decision?.allowed || !decision.reservationId) {
        this.denied(u.credential);
        if (decision) this.options.logger.error({ requestId: u.requestId, tenant: decision.tenant, reason: decision.message }, "fail-open usage denied on recording; not recorded");
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

import { clone } from "@bufbuild/protobuf";
import { status as Code } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { SettleRequest } from "../gen/admission/v1/admission_pb.js";
import { SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { Backoff } from "./backoff.js";
import { asControlPlaneError } from "./control-plane-error.js";
import type { ControlPlaneClient } from "./control-plane-client.js";
import type { DataPlaneMetrics } from "./metrics.js";
import type { ReplayReport, ReplayResult, SettleSpool } from "./settle-spool.js";
import type { TraceCarrier } from "../control-plane/tracing.js";

/** Where a settle ended up: acknowledged, spooled to disk for replay, or lost (refused for good, or the spool failed). */
export type SettleResult = "delivered" | "spooled" | "lost";

export interface SettleContext {
  readonly requestId: string;
  readonly tenant: string;
  /** The span context of the request's Settle span, sent with the call (not spooled: a replay is a call of its own). */
  readonly trace?: TraceCarrier;
}

export interface SettlerOptions {
  readonly client: Pick<ControlPlaneClient, "settle" | "onLinkChange">;
  readonly spool: SettleSpool;
  readonly logger: Logger;
  readonly metrics: DataPlaneMetrics;
  /** Spool replay backoff while the control plane stays unreachable. */
  readonly replayMinMs: number;
  readonly replayMaxMs: number;
  readonly random?: () => number;
}

/**
 * Delivers every Settle exactly once in effect: sent now, or — when the
 * control plane cannot be reached — spooled to disk and replayed with backoff
 * (and as soon as the link comes back). Settle is idempotent on the
 * reservation id, so a settle that did arrive before the link broke is a
 * harmless duplicate on replay.
 */
export class Settler {
  private readonly inFlight = new Set<Promise<SettleResult>>();
  private readonly backoff: Backoff;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly unsubscribe: () => void;

  constructor(private readonly options: SettlerOptions) {
    this.backoff = new Backoff({ minMs: options.replayMinMs, maxMs: options.replayMaxMs, random: options.random });
    options.metrics.spooledSettles.set(options.spool.size());
    this.unsubscribe = options.client.onLinkChange((up) => {
      if (up && options.spool.pending()) {
        this.backoff.reset();
        this.schedule(0);
      }
    });
    if (options.spool.pending()) this.schedule(0);
  }

  /** Never rejects: the settle is acknowledged, spooled, or (only when the control plane refuses it for good) logged as lost. */
  settle(req: SettleRequest, context: SettleContext): Promise<SettleResult> {
    const run = this.deliver(req, context).finally(() => this.inFlight.delete(run));
    this.inFlight.add(run);
    return run;
  }

  /** Settles waiting in the spool. */
  spooled(): number {
    return this.options.spool.size();
  }

  /** Sends spooled settles now; resolves with what was delivered. */
  async replay(): Promise<ReplayReport> {
    const report = await this.options.spool.replay((req) => this.replayOne(req));
    this.options.metrics.spooledSettles.set(this.options.spool.size());
    if (report.delivered || report.dropped) this.options.logger.info(report, "spooled settles replayed");
    return report;
  }

  /** Waits for settles in flight (delivered or spooled). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe();
    clearTimeout(this.timer);
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    await this.options.spool.idle();
  }

  private async deliver(req: SettleRequest, { trace, ...context }: SettleContext): Promise<SettleResult> {
    const result = await this.send(req, trace);
    if (result.outcome === "delivered") {
      this.options.metrics.settles.inc({ result: "delivered" });
      return "delivered";
    }
    if (result.outcome === "drop") {
      this.options.metrics.settles.inc({ result: "lost" });
      this.options.logger.error({ ...context, code: Code[result.code], err: result.message }, "settle refused by the control plane; usage not recorded");
      return "lost";
    }
    try {
      await this.options.spool.append(req);
      this.options.metrics.settles.inc({ result: "spooled" });
      this.options.metrics.spooledSettles.set(this.options.spool.size());
      this.options.logger.warn({ ...context, err: result.message }, "settle not delivered; spooled for replay");
      this.schedule(this.backoff.nextDelayMs());
      return "spooled";
    } catch (err) {
      this.options.metrics.settles.inc({ result: "lost" });
      this.options.logger.error({ ...context, err: String(err) }, "settle neither delivered nor spooled; usage not recorded");
      return "lost";
    }
  }

  private async replayOne(req: SettleRequest): Promise<ReplayResult> {
    const result = await this.send(req);
    if (result.outcome === "drop") {
      this.options.metrics.settles.inc({ result: "lost" });
      this.options.logger.error({ code: Code[result.code], err: result.message }, "spooled settle refused by the control plane; dropped");
    } else if (result.outcome === "delivered") {
      this.options.metrics.settles.inc({ result: "replayed" });
    }
    return result.outcome;
  }

  /**
   * One attempt. A credential that no longer authenticates (revoked while the
   * request ran) must not lose the usage: the signed reservation id alone is
   * accepted, so the settle is sent again without it.
   */
  private async send(req: SettleRequest, trace?: TraceCarrier): Promise<{ outcome: ReplayResult; code: Code; message: string }> {
    try {
      await this.options.client.settle(req, trace);
      return { outcome: "delivered", code: Code.OK, message: "" };
    } catch (raw) {
      const err = asControlPlaneError(raw);
      if (err.unreachable) return { outcome: "retry", code: err.code, message: err.message };
      if (req.credential && (err.code === Code.UNAUTHENTICATED || err.code === Code.PERMISSION_DENIED)) {
        const anonymous = clone(SettleRequestSchema, req);
        anonymous.credential = "";
        return this.send(anonymous, trace);
      }
      return { outcome: "drop", code: err.code, message: err.message };
    }
  }

  private schedule(delayMs: number): void {
    if (this.stopped || (this.timer && delayMs > 0)) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.replay().then(
        (report) => {
          if (report.remaining > 0) this.schedule(this.backoff.nextDelayMs());
          else this.backoff.reset();
        },
        (err) => {
          this.options.logger.warn({ err: String(err) }, "spool replay failed; retrying");
          this.schedule(this.backoff.nextDelayMs());
        },
      );
    }, delayMs);
    this.timer.unref();
  }
}

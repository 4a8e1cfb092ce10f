import type { ClientRequest, IncomingMessage } from "node:http";
import type { Route } from "../gen/admission/v1/admission_pb.js";
import { Outcome } from "../gen/admission/v1/admission_pb.js";
import type { LlmRequest } from "../control-plane/llm-request.js";
import type { Span } from "@opentelemetry/api";
import type { LeaseRenewer } from "./lease-renewer.js";
import type { RequestTrace } from "./request-trace.js";
import type { UsageRecord } from "./provider-usage.js";
import { settledUsage, type UsageReader } from "./usage-reader.js";

/** What a finished request consumed, for its Settle. */
export interface FlightUsage {
  readonly usage: UsageRecord;
  readonly estimated: boolean;
  readonly outcome: Outcome;
  readonly route: Route | undefined;
  readonly latencyMs: number;
}

/**
 * One admitted (or, under FAIL_OPEN, unadmitted) request on its way through
 * the route candidates. Finishes exactly once, with what the provider
 * reported or an estimate of what it produced.
 */
export class Flight {
  /** Index of the route candidate being tried. */
  attempt = 0;
  /** When the first provider call started (performance.now()), 0 before. */
  upstreamStartedAt = 0;
  /** The provider's status once it answered. */
  status: number | undefined;
  reader: UsageReader | undefined;
  proxyReq: ClientRequest | undefined;
  proxyRes: IncomingMessage | undefined;
  renewer: LeaseRenewer | undefined;
  /** The request's trace (tracing on) and the span of the route attempt under way. */
  trace: RequestTrace | undefined;
  attemptSpan: Span | undefined;
  private finished = false;

  constructor(readonly init: {
    readonly requestId: string;
    readonly credential: string;
    readonly task: string;
    readonly request: LlmRequest;
    readonly tenant: string;
    /** Empty when the request runs unadmitted (FAIL_OPEN). */
    readonly reservationId: string;
    readonly routes: readonly Route[];
    /** The clamped output cap; undefined leaves the client's value (FAIL_OPEN). */
    readonly maxOutputTokens: number | undefined;
    /** The decision's headers for the answer: request id, x-ratelimit-*, warnings (a FAIL_OPEN warning when unadmitted). */
    readonly headers: Readonly<Record<string, string>>;
    readonly startedAt: number;
    /** The Admit round trip (0 when there was none). */
    readonly admitMs: number;
  }) {}

  /** `Server-Timing` of the proxy's own work before forwarding: the Admit round trip and everything else. */
  serverTiming(): string {
    const beforeForwardMs = this.upstreamStartedAt > 0 ? this.upstreamStartedAt - this.init.startedAt : 0;
    return `admit;dur=${this.init.admitMs.toFixed(3)}, proxy;dur=${Math.max(0, beforeForwardMs - this.init.admitMs).toFixed(3)}`;
  }

  get route(): Route | undefined {
    return this.init.routes[this.attempt];
  }

  get done(): boolean {
    return this.finished;
  }

  /**
   * Ends the flight once; undefined if it already ended. The provider's
   * reported usage when it reported it all; otherwise, when it worked on the
   * request (it answered with a success, or the client left while it was
   * working), what it did report completed by estimates with the tokenizer
   * (settledUsage).
   */
  finish(outcome: Outcome): FlightUsage | undefined {
    if (this.finished) return undefined;
    this.finished = true;
    this.renewer?.stop();
    const worked = this.status !== undefined ? this.status < 400 : outcome === Outcome.CLIENT_ABORTED && this.upstreamStartedAt > 0;
    const { usage, estimated } = settledUsage(this.reader, { countedInputTokens: this.init.request.inputTokens, worked });
    return {
      usage,
      estimated,
      outcome,
      route: this.route ?? this.init.routes.at(-1),
      latencyMs: this.upstreamStartedAt > 0 ? Math.round(performance.now() - this.upstreamStartedAt) : 0,
    };
  }
}

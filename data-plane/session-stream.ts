import { status as Code, type ClientDuplexStream } from "@grpc/grpc-js";
import type { SessionRequest, SessionResponse } from "../gen/admission/v1/admission_pb.js";
import type { TraceCarrier } from "../control-plane/tracing.js";
import { ControlPlaneError } from "./control-plane-error.js";

/** One call on the stream: Admit, Settle or Renew. */
export type SessionCall = Exclude<SessionRequest["call"], { case: undefined }>;
/** Its answer, or the SessionError the control plane sent instead. */
export type SessionResult = Exclude<SessionResponse["result"], { case: undefined }>;

interface Pending {
  readonly resolve: (result: SessionResult) => void;
  readonly reject: (err: ControlPlaneError) => void;
  readonly deadlineMs: number;
  readonly timeoutMs: number;
}

/** How often calls past their deadline are failed: one timer per stream rather than one per call. */
const deadlineSweepMs = 25;

/** Raised for calls in flight when their stream closes: safe to retry elsewhere (Admit and Settle are idempotent). */
export class StreamClosedError extends ControlPlaneError {
  constructor(why: string) {
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
  /** Calls in flight by correlation id (a number here, an int64 on the wire). */
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private state: "open" | "draining" | "closed" = "open";
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly call: ClientDuplexStream<SessionRequest, SessionResponse>,
    private readonly onClosed: (stream: SessionStream, why: string) => void,
  ) {
    this.sweeper = setInterval(() => this.failOverdue(), deadlineSweepMs);
    this.sweeper.unref();
    call.on("data", (msg: SessionResponse) => this.answer(msg));
    call.on("error", (err: Error & { code?: number }) => this.close(err.message));
    call.on("status", (s: { code: number; details: string }) => this.close(s.code === Code.OK ? "ended by the control plane" : s.details || `status ${s.code}`));
    call.on("end", () => this.close("ended by the control plane"));
    call.on("close", () => this.close("closed"));
  }

  /** Takes new calls (not draining, not closed). */
  get accepting(): boolean {
    return this.state === "open";
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** `trace`: the caller's span context, carried by this message (a stream carries the calls of many traces). */
  request(call: SessionCall, timeoutMs: number, trace?: TraceCarrier): Promise<SessionResult> {
    if (this.state !== "open") return Promise.reject(new StreamClosedError("not accepting calls"));
    const id = this.nextId++;
    return new Promise<SessionResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, deadlineMs: performance.now() + timeoutMs, timeoutMs });
      this.call.write({
        $typeName: "admission.v1.SessionRequest", id: BigInt(id), call, traceparent: trace?.traceparent ?? "", tracestate: trace?.tracestate ?? "",
      } satisfies SessionRequest);
    });
  }

  /** Half-closes: no new calls; the control plane answers those in flight, then ends the stream. */
  drain(): void {
    if (this.state !== "open") return;
    this.state = "draining";
    this.call.end();
    if (this.pending.size === 0) this.cancel("drained");
  }

  /** Closes now, failing calls in flight. */
  cancel(why: string): void {
    if (this.state === "closed") return;
    this.call.cancel();
    this.close(why);
  }

  private answer(msg: SessionResponse): void {
    const id = Number(msg.id);
    const p = this.pending.get(id);
    if (!p) return; // timed out already
    this.pending.delete(id);
    if (msg.result.case === undefined) p.reject(new ControlPlaneError(Code.INTERNAL, "empty session response"));
    else p.resolve(msg.result);
    if (this.state === "draining" && this.pending.size === 0) this.cancel("drained");
  }

  /** Fails the calls whose deadline passed (late by at most deadlineSweepMs). */
  private failOverdue(): void {
    if (this.pending.size === 0) return;
    const now = performance.now();
    for (const [id, p] of this.pending) {
      if (p.deadlineMs > now) continue;
      this.pending.delete(id);
      p.reject(new ControlPlaneError(Code.DEADLINE_EXCEEDED, `control plane did not answer within ${p.timeoutMs} ms`));
    }
    if (this.state === "draining" && this.pending.size === 0) this.cancel("drained");
  }

  private close(why: string): void {
    if (this.state === "closed") return;
    this.state = "closed";
    clearInterval(this.sweeper);
    const err = new StreamClosedError(why);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.onClosed(this, why);
  }
}

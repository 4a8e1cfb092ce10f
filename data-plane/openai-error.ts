import type { ServerResponse } from "node:http";
import type { AdmitResponse } from "../gen/admission/v1/admission_pb.js";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Per, Window } from "../gen/admission/v1/policy_pb.js";
import { reasonMapping } from "../control-plane/deny-reasons.js";
import { errorType as decisionErrorType } from "../control-plane/rate-limit-headers.js";
import { decisionHeaders } from "./rate-limit-headers.js";

/** The `type` of an OpenAI error body: the shared table for decisions, plus the proxy's own 404 and 5xx. */
export function errorType(status: number): string {
  if (status === 404) return "not_found_error";
  if (status === 502 || status === 504) return "upstream_error";
  if (status >= 500 && status !== 503) return "api_error";
  return decisionErrorType(status);
}

export interface ErrorOptions {
  readonly headers?: Record<string, string>;
  /** Stable lowercase code (`rate_limited`, `request_too_large`...). */
  readonly code?: string | null;
  readonly param?: string | null;
  /** Extra fields of `error`: the reason, the limit, usage, retry-after. */
  readonly extra?: Record<string, unknown>;
}

/** An OpenAI-style error: `{"error": {"message", "type", "code", "param", ...}}`. */
export function sendError(res: ServerResponse, status: number, message: string, options: ErrorOptions = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: { message, type: errorType(status), code: options.code ?? null, param: options.param ?? null, ...options.extra } });
  res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)), ...options.headers });
  res.end(body);
}

/**
 * A denial: the decision's status and reason code, the meter that denied
 * (`limit`, `used`, `remaining`, its kind and window), `retry_after_ms`, and
 * the decision's headers (Retry-After, x-ratelimit-*).
 */
export function sendDenial(res: ServerResponse, d: AdmitResponse, requestId: string): void {
  const m = d.deniedMeter;
  const retryAfterMs = Number(d.retryAfterMs);
  sendError(res, d.httpStatus || reasonMapping(d.reason).httpStatus, d.message, {
    headers: decisionHeaders(d, requestId),
    code: reasonMapping(d.reason).code,
    param: d.reason === DenyReason.MODEL_NOT_ALLOWED ? "model" : null,
    extra: {
      reason: DenyReason[d.reason],
      ...(m ? { limit: Number(m.limit), used: Number(m.used), remaining: Number(m.remaining), limit_kind: LimitKind[m.kind], limit_window: Window[m.window], limit_per: Per[m.per] } : {}),
      ...(retryAfterMs > 0 ? { retry_after_ms: retryAfterMs } : {}),
    },
  });
}

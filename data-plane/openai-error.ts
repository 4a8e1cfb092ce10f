import type { ServerResponse } from "node:http";
import type { AdmitResponse } from "../gen/admission/v1/admission_pb.js";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Per, Window } from "../gen/admission/v1/policy_pb.js";
import { reasonMapping } from "../control-plane/deny-reasons.js";
import { decisionHeaders, retryAfterHeaders } from "./rate-limit-headers.js";

/** The `type` of an OpenAI error body for an HTTP status. */
export function errorType(status: number): string {
  switch (status) {
    case 401:
      return "authentication_error";
    case 402:
      return "insufficient_quota";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 502:
    case 504:
      return "upstream_error";
    case 503:
      return "service_unavailable";
    default:
      return status >= 500 ? "api_error" : "invalid_request_error";
  }
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

/** A denial: the decision's status, reason code, the meter that denied, Retry-After and x-ratelimit-* headers. */
export function sendDenial(res: ServerResponse, d: AdmitResponse, requestId: string): void {
  const m = d.deniedMeter;
  const retryAfterMs = Number(d.retryAfterMs);
  sendError(res, d.httpStatus || reasonMapping(d.reason).httpStatus, d.message, {
    headers: { ...decisionHeaders(d, requestId), ...retryAfterHeaders(retryAfterMs) },
    code: reasonMapping(d.reason).code,
    param: d.reason === DenyReason.MODEL_NOT_ALLOWED ? "model" : null,
    extra: {
      reason: DenyReason[d.reason],
      ...(m
        ? {
            limit: {
              kind: LimitKind[m.kind], window: Window[m.window], per: Per[m.per], task: m.task || undefined,
              value: Number(m.limit), used: Number(m.used), remaining: Number(m.remaining), reset_ms: Number(m.resetMs),
            },
          }
        : {}),
      ...(retryAfterMs > 0 ? { retry_after_ms: retryAfterMs } : {}),
    },
  });
}

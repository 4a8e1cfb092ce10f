import type { ServerResponse } from "node:http";
import { status as Code } from "@grpc/grpc-js";
import type { AdmitResponse } from "../gen/admission/v1/admission_pb.js";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Per, Window } from "../gen/admission/v1/policy_pb.js";
import { anthropicErrorBody } from "../control-plane/anthropic-error.js";
import { reasonMapping } from "../control-plane/deny-reasons.js";
import type { ParserRefusal } from "../control-plane/http-server.js";
import type { LlmFamily, ProviderApi } from "../control-plane/llm-request.js";
import { errorType as decisionErrorType } from "../control-plane/rate-limit-headers.js";
import type { ControlPlaneError } from "./control-plane-error.js";
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
  /** The API whose error shape to answer in (the request's); OpenAI's by default. */
  readonly api?: ProviderApi;
}

/** An answer not yet sent: what any front end (this proxy, a gateway plugin) writes back. */
export interface ErrorResponse {
  readonly status: number;
  /** content-type and the given headers; content-length is the writer's business. */
  readonly headers: Record<string, string>;
  readonly body: string;
}

/**
 * An error in the API's shape: OpenAI's `{"error": {"message", "type", "code", "param", ...}}`,
 * or Anthropic's `{"type": "error", "error": {"type", "message", "code", "param", ...}}`.
 */
export function errorResponse(status: number, message: string, options: ErrorOptions = {}): ErrorResponse {
  const fields = { code: options.code ?? null, param: options.param ?? null, ...options.extra };
  const body = options.api === "anthropic"
    ? anthropicErrorBody(status, message, fields)
    : JSON.stringify({ error: { message, type: errorType(status), ...fields } });
  return { status, headers: { "content-type": "application/json", ...options.headers }, body };
}

export function sendError(res: ServerResponse, status: number, message: string, options: ErrorOptions = {}): void {
  sendErrorResponse(res, errorResponse(status, message, options));
}

export function sendErrorResponse(res: ServerResponse, e: ErrorResponse): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(e.status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(e.body)), ...e.headers });
  res.end(e.body);
}

/**
 * A denial: the decision's status and reason code, the meter that denied
 * (`limit`, `used`, `remaining`, its kind and window), `retry_after_ms`, and
 * the decision's headers (Retry-After, x-ratelimit-*).
 */
export function denialResponse(d: AdmitResponse, requestId: string, api: ProviderApi = "openai"): ErrorResponse {
  const m = d.deniedMeter;
  const retryAfterMs = Number(d.retryAfterMs);
  return errorResponse(d.httpStatus || reasonMapping(d.reason).httpStatus, d.message, {
    headers: decisionHeaders(d, requestId),
    code: reasonMapping(d.reason).code,
    param: d.reason === DenyReason.MODEL_NOT_ALLOWED ? "model" : null,
    api,
    extra: {
      reason: DenyReason[d.reason],
      ...(m ? { limit: Number(m.limit), used: Number(m.used), remaining: Number(m.remaining), limit_kind: LimitKind[m.kind], limit_window: Window[m.window], limit_per: Per[m.per] } : {}),
      ...(retryAfterMs > 0 ? { retry_after_ms: retryAfterMs } : {}),
    },
  });
}

export function sendDenial(res: ServerResponse, d: AdmitResponse, requestId: string, api: ProviderApi = "openai"): void {
  sendErrorResponse(res, denialResponse(d, requestId, api));
}

/**
 * The control plane refused the call itself (malformed request, bad
 * credential...): its gRPC code as an HTTP error; 502 for anything unexpected.
 */
export function refusalResponse(err: ControlPlaneError, headers: Record<string, string>, api: ProviderApi = "openai"): ErrorResponse {
  switch (err.code) {
    case Code.INVALID_ARGUMENT:
      return errorResponse(400, err.message, { headers, code: "invalid_request", api });
    case Code.UNAUTHENTICATED:
      return errorResponse(401, err.message, { headers, code: "unauthenticated", api });
    case Code.PERMISSION_DENIED:
      return errorResponse(403, err.message, { headers, code: "permission_denied", api });
    case Code.NOT_FOUND:
      return errorResponse(404, err.message, { headers, code: "not_found", api });
    default:
      return errorResponse(502, `admission control error: ${err.message}`, { headers, code: "admission_error", api });
  }
}

/** FAIL_CLOSED with the control plane unreachable. */
export function unavailableResponse(headers: Record<string, string>, api: ProviderApi = "openai"): ErrorResponse {
  return errorResponse(503, "admission control unavailable; retry shortly", { headers: { ...headers, "retry-after": "1" }, code: "unavailable", api });
}

/**
 * The event that tells a streaming client the provider stopped mid-stream, in
 * its API's stream shape: a Chat chunk with `error`, a Responses `error`
 * event, an Anthropic `error` event.
 */
export function streamErrorEvent(family: LlmFamily, message: string): string {
  switch (family) {
    case "chat":
      return `data: ${JSON.stringify({ error: { message, type: "upstream_error", code: "upstream_error", param: null } })}\n\n`;
    case "responses":
      return `event: error\ndata: ${JSON.stringify({ type: "error", code: "upstream_error", message, param: null })}\n\n`;
    case "messages":
      return `event: error\ndata: ${anthropicErrorBody(502, message)}\n\n`;
  }
}

/** The JSON error body for a request Node's parser refused before any handler ran. */
export function clientErrorBody(r: ParserRefusal): string {
  return JSON.stringify({ error: { message: r.message, type: errorType(r.status), code: r.code, param: null } });
}

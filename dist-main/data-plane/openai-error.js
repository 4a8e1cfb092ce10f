import { status as Code } from "@grpc/grpc-js";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Per, Window } from "../gen/admission/v1/policy_pb.js";
import { reasonMapping } from "../control-plane/deny-reasons.js";
import { errorType as decisionErrorType } from "../control-plane/rate-limit-headers.js";
import { decisionHeaders } from "./rate-limit-headers.js";
/** The `type` of an OpenAI error body: the shared table for decisions, plus the proxy's own 404 and 5xx. */
export function errorType(status) {
    if (status === 404)
        return "not_found_error";
    if (status === 502 || status === 504)
        return "upstream_error";
    if (status >= 500 && status !== 503)
        return "api_error";
    return decisionErrorType(status);
}
/** An OpenAI-style error: `{"error": {"message", "type", "code", "param", ...}}`. */
export function errorResponse(status, message, options = {}) {
    const body = JSON.stringify({ error: { message, type: errorType(status), code: options.code ?? null, param: options.param ?? null, ...options.extra } });
    return { status, headers: { "content-type": "application/json", ...options.headers }, body };
}
export function sendError(res, status, message, options = {}) {
    sendErrorResponse(res, errorResponse(status, message, options));
}
export function sendErrorResponse(res, e) {
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
export function denialResponse(d, requestId) {
    const m = d.deniedMeter;
    const retryAfterMs = Number(d.retryAfterMs);
    return errorResponse(d.httpStatus || reasonMapping(d.reason).httpStatus, d.message, {
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
export function sendDenial(res, d, requestId) {
    sendErrorResponse(res, denialResponse(d, requestId));
}
/**
 * The control plane refused the call itself (malformed request, bad
 * credential...): its gRPC code as an HTTP error; 502 for anything unexpected.
 */
export function refusalResponse(err, headers) {
    switch (err.code) {
        case Code.INVALID_ARGUMENT:
            return errorResponse(400, err.message, { headers, code: "invalid_request" });
        case Code.UNAUTHENTICATED:
            return errorResponse(401, err.message, { headers, code: "unauthenticated" });
        case Code.PERMISSION_DENIED:
            return errorResponse(403, err.message, { headers, code: "permission_denied" });
        case Code.NOT_FOUND:
            return errorResponse(404, err.message, { headers, code: "not_found" });
        default:
            return errorResponse(502, `admission control error: ${err.message}`, { headers, code: "admission_error" });
    }
}
/** FAIL_CLOSED with the control plane unreachable. */
export function unavailableResponse(headers) {
    return errorResponse(503, "admission control unavailable; retry shortly", { headers: { ...headers, "retry-after": "1" }, code: "unavailable" });
}
/** The JSON error body for a request Node's parser refused before any handler ran. */
export function clientErrorBody(r) {
    return JSON.stringify({ error: { message: r.message, type: errorType(r.status), code: r.code, param: null } });
}
//# sourceMappingURL=openai-error.js.map
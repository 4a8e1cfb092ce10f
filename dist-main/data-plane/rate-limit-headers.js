import { rateLimitHeaders } from "../control-plane/rate-limit-headers.js";
/**
 * The headers every answer to an admitted or denied request carries: the
 * request id, and — shared with every other front end (ext_authz) — the
 * `x-ratelimit-{limit,remaining,reset}-*` of the tightest meter of each kind,
 * `retry-after` on a denial and soft warnings in `x-admission-warnings`;
 * plus `retry-after-ms`, which the openai SDKs read before `retry-after`.
 */
export function decisionHeaders(d, requestId) {
    const headers = { "x-request-id": requestId, ...rateLimitHeaders(d) };
    if (!d.allowed && d.retryAfterMs > 0n)
        headers["retry-after-ms"] = String(d.retryAfterMs);
    return headers;
}
//# sourceMappingURL=rate-limit-headers.js.map
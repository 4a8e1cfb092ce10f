import { LimitKind } from "../gen/admission/v1/policy_pb.js";
/** Header names per metered kind, in the order headers are written. */
const headerKinds = [
    [LimitKind.REQUESTS, "requests"],
    [LimitKind.TOKENS, "tokens"],
    [LimitKind.BUDGET_MICROS, "budget-micros"],
    [LimitKind.CONCURRENCY, "concurrency"],
];
/** Every `x-ratelimit-*` name a decision may carry (a gateway in front of a provider drops the provider's own). */
export const rateLimitHeaderNames = headerKinds.flatMap(([, kind]) => ["limit", "remaining", "reset"].map((what) => `x-ratelimit-${what}-${kind}`));
/**
 * `x-ratelimit-{limit,remaining,reset}-{requests,tokens,budget-micros,concurrency}`
 * from a decision's meters (the tightest meter of each kind), `retry-after` on
 * a denial, and soft warnings in `x-admission-warnings`. Used by every front end.
 */
export function rateLimitHeaders(d) {
    const headers = {};
    for (const [kind, name] of headerKinds) {
        let tightest;
        for (const m of d.meters)
            if (m.kind === kind && (!tightest || m.remaining < tightest.remaining))
                tightest = m;
        if (!tightest)
            continue;
        headers[`x-ratelimit-limit-${name}`] = String(tightest.limit);
        headers[`x-ratelimit-remaining-${name}`] = String(tightest.remaining);
        // A concurrency slot has no window: it frees when a request ends, so there is no reset to announce.
        if (kind !== LimitKind.CONCURRENCY)
            headers[`x-ratelimit-reset-${name}`] = `${(Number(tightest.resetMs) / 1000).toFixed(3)}s`;
    }
    if (!d.allowed && d.retryAfterMs > 0n)
        headers["retry-after"] = String(Math.max(1, Math.ceil(Number(d.retryAfterMs) / 1000)));
    if (d.warnings.length > 0)
        headers["x-admission-warnings"] = d.warnings.join("; ").replace(/[^\x20-\x7e]/g, "?").slice(0, 2000);
    return headers;
}
/**
 * What the upstream of an admitted request is told: the reservation id (to
 * Settle), tenant, user, the clamped output cap and — when the decision routes
 * it — the model and provider. Used by every gateway front end (ext_authz, Kong).
 */
export function upstreamDecisionHeaders(d) {
    const headers = {
        "x-llm-reservation-id": d.reservationId,
        "x-llm-tenant": d.tenant,
        "x-llm-user": d.user,
        "x-llm-max-tokens": String(d.maxOutputTokens),
    };
    const route = d.routes[0];
    if (route) {
        headers["x-llm-model"] = route.providerModel || route.model;
        headers["x-llm-provider"] = route.provider;
    }
    return headers;
}
/** The OpenAI-style error body of a denial: {"error": {"message", "type", "code", "param", ...}}. */
export function denialBody(d, code) {
    const m = d.deniedMeter;
    return JSON.stringify({
        error: {
            message: d.message,
            type: errorType(d.httpStatus),
            code,
            param: null,
            ...(m ? { limit: Number(m.limit), used: Number(m.used), remaining: Number(m.remaining), limit_kind: LimitKind[m.kind] } : {}),
            ...(d.retryAfterMs > 0n ? { retry_after_ms: Number(d.retryAfterMs) } : {}),
        },
    });
}
/** OpenAI's error type for an HTTP status. */
export function errorType(status) {
    switch (status) {
        case 401:
            return "authentication_error";
        case 402:
            return "insufficient_quota";
        case 403:
            return "permission_error";
        case 429:
            return "rate_limit_error";
        case 503:
            return "service_unavailable";
        default:
            return "invalid_request_error";
    }
}
//# sourceMappingURL=rate-limit-headers.js.map
import type { AdmitResponse, Meter } from "../gen/admission/v1/admission_pb.js";
import { LimitKind } from "../gen/admission/v1/policy_pb.js";
import { anthropicErrorBody } from "./anthropic-error.js";
import type { ProviderApi } from "./llm-request.js";

/** Header names per metered kind, in the order headers are written. */
const headerKinds: ReadonlyArray<readonly [LimitKind, string]> = [
  [LimitKind.REQUESTS, "requests"],
  [LimitKind.TOKENS, "tokens"],
  [LimitKind.BUDGET_MICROS, "budget-micros"],
  [LimitKind.CONCURRENCY, "concurrency"],
];

/** Every `x-ratelimit-*` name a decision may carry (a gateway in front of a provider drops the provider's own). */
export const rateLimitHeaderNames: readonly string[] = headerKinds.flatMap(([, kind]) => ["limit", "remaining", "reset"].map((what) => `x-ratelimit-${what}-${kind}`));

/**
 * `x-ratelimit-{limit,remaining,reset}-{requests,tokens,budget-micros,concurrency}`
 * from a decision's meters (the tightest meter of each kind), `retry-after` on
 * a denial, soft warnings in `x-admission-warnings`, and on an Admit moved to a
 * cheaper class `x-admission-degraded: <from> -> <to>`.
 * Used by every front end.
 * For a token bucket the meter already says it as headers want it: limit is the refill per
 * window, remaining the whole tokens in the bucket, reset the time until it is full, and a
 * denial's retry-after the time until the request fits.
 */
export function rateLimitHeaders(d: AdmitResponse): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [kind, name] of headerKinds) {
    let tightest: Meter | undefined;
    for (const m of d.meters) if (m.kind === kind && (!tightest || m.remaining < tightest.remaining)) tightest = m;
    if (!tightest) continue;
    headers[`x-ratelimit-limit-${name}`] = String(tightest.limit);
    headers[`x-ratelimit-remaining-${name}`] = String(tightest.remaining);
    // A concurrency slot has no window: it frees when a request ends, so there is no reset to announce.
    if (kind !== LimitKind.CONCURRENCY) headers[`x-ratelimit-reset-${name}`] = `${(Number(tightest.resetMs) / 1000).toFixed(3)}s`;
  }
  if (!d.allowed && d.retryAfterMs > 0n) headers["retry-after"] = String(Math.max(1, Math.ceil(Number(d.retryAfterMs) / 1000)));
  if (d.warnings.length > 0) headers["x-admission-warnings"] = d.warnings.join("; ").replace(/[^\x20-\x7e]/g, "?").slice(0, 2000);
  if (d.degraded && d.routes[0]) headers["x-admission-degraded"] = `${d.degradedFrom} -> ${d.routes[0].model}`;
  return headers;
}

/**
 * What the upstream of an admitted request is told: the reservation id (to
 * Settle), tenant, user, the clamped output cap and — when the decision routes
 * it — the model and provider. Used by every gateway front end (ext_authz, Kong).
 */
export function upstreamDecisionHeaders(d: AdmitResponse): Record<string, string> {
  const headers: Record<string, string> = {
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

/** The error body of a denial in the request's API's shape: OpenAI's {"error": {"message", "type", "code", "param", ...}} or Anthropic's. */
export function denialBody(d: AdmitResponse, code: string, api: ProviderApi = "openai"): string {
  const m = d.deniedMeter;
  const meter = {
    ...(m ? { limit: Number(m.limit), used: Number(m.used), remaining: Number(m.remaining), limit_kind: LimitKind[m.kind] } : {}),
    ...(d.retryAfterMs > 0n ? { retry_after_ms: Number(d.retryAfterMs) } : {}),
  };
  if (api === "anthropic") return anthropicErrorBody(d.httpStatus, d.message, { code, ...meter });
  return JSON.stringify({ error: { message: d.message, type: errorType(d.httpStatus), code, param: null, ...meter } });
}

/** OpenAI's error type for an HTTP status. */
export function errorType(status: number): string {
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

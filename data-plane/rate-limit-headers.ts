import type { Meter } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Window } from "../gen/admission/v1/policy_pb.js";

/** What a decision tells the client about its limits. */
export interface DecisionView {
  readonly meters: readonly Meter[];
  readonly warnings: readonly string[];
}

const headerKinds: Partial<Record<LimitKind, string>> = {
  [LimitKind.REQUESTS]: "requests",
  [LimitKind.TOKENS]: "tokens",
  [LimitKind.BUDGET_MICROS]: "budget-micros",
  [LimitKind.CONCURRENCY]: "concurrency",
};

/**
 * `x-ratelimit-{limit,remaining,reset}-{requests,tokens,budget-micros}` and
 * `x-ratelimit-{limit,remaining}-concurrency`, from the tightest meter of each
 * kind (least remaining), the reset as an
 * OpenAI-style duration ("1m30s", "250ms"); soft warnings in
 * `x-admission-warnings`; and the request id.
 */
export function decisionHeaders(d: DecisionView, requestId: string): Record<string, string> {
  const headers: Record<string, string> = { "x-request-id": requestId };
  const tightest = new Map<string, Meter>();
  for (const m of d.meters) {
    const kind = headerKinds[m.kind];
    if (!kind || m.limit < 0n || m.window === Window.REQUEST) continue;
    const current = tightest.get(kind);
    if (!current || m.remaining < current.remaining) tightest.set(kind, m);
  }
  for (const [kind, m] of tightest) {
    headers[`x-ratelimit-limit-${kind}`] = String(m.limit);
    headers[`x-ratelimit-remaining-${kind}`] = String(m.remaining);
    // In-flight limits have no window to reset.
    if (m.kind !== LimitKind.CONCURRENCY) headers[`x-ratelimit-reset-${kind}`] = formatDuration(Number(m.resetMs));
  }
  if (d.warnings.length > 0) headers["x-admission-warnings"] = headerValue(d.warnings.join("; "));
  return headers;
}

/** `Retry-After` in whole seconds (at least 1) and `retry-after-ms`, which the openai SDKs read first. */
export function retryAfterHeaders(retryAfterMs: number): Record<string, string> {
  if (!(retryAfterMs > 0)) return {};
  return { "retry-after": String(Math.max(1, Math.ceil(retryAfterMs / 1000))), "retry-after-ms": String(Math.ceil(retryAfterMs)) };
}

/** "250ms", "12s", "1m30s", "2h0m5s". */
export function formatDuration(ms: number): string {
  if (!(ms > 0)) return "0s";
  if (ms < 1000) return `${Math.ceil(ms)}ms`;
  const total = Math.ceil(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return `${h ? `${h}h` : ""}${h || m ? `${m}m` : ""}${s}s`;
}

/** A header value from free text: printable ASCII only, bounded (no CR/LF can reach the wire). */
export function headerValue(text: string, maxChars = 2000): string {
  return text.replace(/[^\x20-\x7e]/g, "?").slice(0, maxChars);
}

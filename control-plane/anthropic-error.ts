/**
 * Anthropic's error `type` for an HTTP status, from its documented list
 * (invalid_request_error is also its type for any 4xx it does not name).
 */
export function anthropicErrorType(status: number): string {
  switch (status) {
    case 401:
      return "authentication_error";
    case 402:
      return "billing_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
    case 529:
      return "overloaded_error";
    case 504:
      return "timeout_error";
    default:
      return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

/**
 * An Anthropic-style error body, `{"type":"error","error":{"type","message",...}}`;
 * `fields` (the reason, the limit, retry-after...) go inside `error`, where the
 * Anthropic SDKs keep them for the caller.
 */
export function anthropicErrorBody(status: number, message: string, fields: Record<string, unknown> = {}): string {
  return JSON.stringify({ type: "error", error: { type: anthropicErrorType(status), message, ...fields } });
}

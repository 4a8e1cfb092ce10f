import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http";
import { providerApi, type ProviderConfig } from "./config.js";

/** Request headers of the client the provider may see; never its credential (`authorization`, `x-api-key`), cookies or routing headers. */
const passedRequestHeaders = ["accept", "user-agent"];
/** What a client of Anthropic's API states about the API it expects: passed to providers that speak it. */
const passedAnthropicHeaders = ["anthropic-version", "anthropic-beta"];
/** Response headers of the provider a client may see; everything else (cookies, the provider account's rate limits...) stays behind. */
const passedResponseHeaders = ["content-type", "content-length", "content-encoding", "cache-control", "openai-processing-ms", "openai-version"];

/**
 * Exactly the headers the provider sees: its own key in its API's header
 * (`Authorization: Bearer` for OpenAI's, `x-api-key` for Anthropic's, with the
 * client's `anthropic-version` and `anthropic-beta`), its configured headers,
 * the body's length, and a few harmless client headers.
 */
export function upstreamHeaders(incoming: IncomingHttpHeaders, provider: ProviderConfig, contentLength: number, requestId: string): IncomingHttpHeaders {
  const headers: IncomingHttpHeaders = {};
  const anthropic = providerApi(provider) === "anthropic";
  for (const name of passedRequestHeaders) if (typeof incoming[name] === "string") headers[name] = incoming[name];
  if (anthropic) for (const name of passedAnthropicHeaders) if (typeof incoming[name] === "string") headers[name] = incoming[name];
  Object.assign(headers, provider.headers);
  headers["content-type"] = "application/json";
  headers["content-length"] = String(contentLength);
  // Usage is read from the response as it passes: it must not be compressed.
  headers["accept-encoding"] = "identity";
  headers["x-request-id"] = requestId;
  if (provider.apiKey) {
    if (anthropic) headers["x-api-key"] = provider.apiKey;
    else headers.authorization = `Bearer ${provider.apiKey}`;
  }
  return headers;
}

/** What of the provider's answer headers reaches the client; its request id (`x-request-id`, Anthropic's `request-id`) as `x-upstream-request-id`. */
export function clientHeaders(upstream: IncomingHttpHeaders): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {};
  for (const name of passedResponseHeaders) if (upstream[name] !== undefined) headers[name] = upstream[name];
  const upstreamId = upstream["x-request-id"] ?? upstream["request-id"];
  if (typeof upstreamId === "string") headers["x-upstream-request-id"] = upstreamId.slice(0, 200);
  return headers;
}

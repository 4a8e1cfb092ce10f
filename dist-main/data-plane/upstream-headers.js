/** Request headers of the client the provider may see; never its credential, cookies or routing headers. */
const passedRequestHeaders = ["accept", "user-agent"];
/** Response headers of the provider a client may see; everything else (cookies, the provider account's rate limits...) stays behind. */
const passedResponseHeaders = ["content-type", "content-length", "content-encoding", "cache-control", "openai-processing-ms", "openai-version"];
/** Exactly the headers the provider sees: its own key and headers, the body's length, and a few harmless client headers. */
export function upstreamHeaders(incoming, provider, contentLength, requestId) {
    const headers = {};
    for (const name of passedRequestHeaders)
        if (typeof incoming[name] === "string")
            headers[name] = incoming[name];
    Object.assign(headers, provider.headers);
    headers["content-type"] = "application/json";
    headers["content-length"] = String(contentLength);
    // Usage is read from the response as it passes: it must not be compressed.
    headers["accept-encoding"] = "identity";
    headers["x-request-id"] = requestId;
    if (provider.apiKey)
        headers.authorization = `Bearer ${provider.apiKey}`;
    return headers;
}
/** What of the provider's answer headers reaches the client; its request id as `x-upstream-request-id`. */
export function clientHeaders(upstream) {
    const headers = {};
    for (const name of passedResponseHeaders)
        if (upstream[name] !== undefined)
            headers[name] = upstream[name];
    if (typeof upstream["x-request-id"] === "string")
        headers["x-upstream-request-id"] = upstream["x-request-id"].slice(0, 200);
    return headers;
}
//# sourceMappingURL=upstream-headers.js.map
import { createServer } from "node:http";
export function parserRefusal(errCode) {
    if (errCode === "ECONNRESET")
        return undefined; // the client is gone: nobody to answer
    if (errCode === "ERR_HTTP_REQUEST_TIMEOUT")
        return { status: 408, reason: "Request Timeout", message: "the request was not received in time", code: "request_timeout" };
    if (errCode === "HPE_HEADER_OVERFLOW")
        return { status: 431, reason: "Request Header Fields Too Large", message: "request headers too large", code: "headers_too_large" };
    return { status: 400, reason: "Bad Request", message: "malformed HTTP request", code: "bad_request" };
}
/**
 * Answers a parser refusal on the raw socket with `body` (JSON), then closes
 * the connection; nothing is written when a response is already under way.
 */
export function answerClientError(socket, refusal, body) {
    const inFlight = socket._httpMessage;
    if (refusal && socket.writable && !inFlight?.headersSent) {
        const text = body(refusal);
        socket.write(`HTTP/1.1 ${refusal.status} ${refusal.reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
    }
    socket.destroy();
}
/** /metrics, /healthz (the process is up) and /readyz (every dependency answers). */
export function createHttpServer(deps) {
    const server = createServer({
        requestTimeout: deps.requestTimeoutMs,
        headersTimeout: deps.headersTimeoutMs,
        connectionsCheckingInterval: Math.min(1_000, deps.headersTimeoutMs),
    }, (req, res) => {
        const path = (req.url ?? "/").split("?")[0];
        if (req.method === "GET" && path === "/metrics") {
            deps.registry.metrics().then((body) => send(res, 200, body, deps.registry.contentType), (err) => {
                deps.logger.error({ err }, "metrics failed");
                send(res, 500, "metrics failed\n");
            });
            return;
        }
        if (req.method === "GET" && path === "/healthz")
            return send(res, 200, JSON.stringify({ status: "ok" }), "application/json");
        if (req.method === "GET" && path === "/readyz") {
            void readiness(deps.checks, deps.degradedOnly ?? []).then((report) => send(res, report.ready ? 200 : 503, JSON.stringify(report), "application/json"));
            return;
        }
        if (deps.fallback?.(req, res))
            return;
        send(res, 404, JSON.stringify({ error: "not found" }), "application/json");
    });
    // The Connect protocol's error shape: {"code", "message"}.
    server.on("clientError", (err, socket) => {
        answerClientError(socket, parserRefusal(err.code), (r) => JSON.stringify({ code: r.status === 408 ? "deadline_exceeded" : r.status === 431 ? "resource_exhausted" : "invalid_argument", message: r.message }));
    });
    return server;
}
async function readiness(checks, degradedOnly) {
    const results = {};
    await Promise.all(Object.entries(checks).map(async ([name, check]) => {
        try {
            await withTimeout(check(), 2000);
            results[name] = "ok";
        }
        catch (err) {
            results[name] = `failing: ${err instanceof Error ? err.message : String(err)}`.slice(0, 300);
        }
    }));
    return { ready: Object.entries(results).every(([name, r]) => r === "ok" || degradedOnly.includes(name)), checks: results };
}
function withTimeout(promise, ms) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
        promise.then((v) => (clearTimeout(timer), resolve(v)), (e) => (clearTimeout(timer), reject(e)));
    });
}
function send(res, status, body, contentType = "text/plain") {
    res.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
    res.end(body);
}
//# sourceMappingURL=http-server.js.map
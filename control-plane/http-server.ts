import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { TLSSocket } from "node:tls";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { ServerTls } from "./config.js";

export type ReadinessCheck = () => Promise<void>;

export interface HttpServerDeps {
  readonly registry: Registry;
  /** Named dependency checks for /readyz; each resolves when healthy. */
  readonly checks: Readonly<Record<string, ReadinessCheck>>;
  /** Checks whose failure is reported but does not make the process unready (it can still serve). */
  readonly degradedOnly?: readonly string[];
  readonly logger: Logger;
  /** Extra routes (e.g. the Connect protocol); returns false when it did not handle the request. */
  readonly fallback?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /** Slow clients are cut off with 408: the headers within `headersTimeoutMs`, the whole request within `requestTimeoutMs`. */
  readonly requestTimeoutMs: number;
  readonly headersTimeoutMs: number;
  /**
   * HTTPS with this certificate. With a client CA (mTLS), the fallback routes
   * (Connect) need a verified client certificate; /metrics and the probes do
   * not, so kubelets and scrapers without one keep working.
   */
  readonly tls?: ServerTls;
}

/** What Node's HTTP parser refused before any handler ran (malformed, headers too large, too slow). */
export interface ParserRefusal {
  readonly status: number;
  readonly reason: string;
  readonly message: string;
  readonly code: string;
}

export function parserRefusal(errCode: string | undefined): ParserRefusal | undefined {
  if (errCode === "ECONNRESET") return undefined; // the client is gone: nobody to answer
  if (errCode === "ERR_HTTP_REQUEST_TIMEOUT") return { status: 408, reason: "Request Timeout", message: "the request was not received in time", code: "request_timeout" };
  if (errCode === "HPE_HEADER_OVERFLOW") return { status: 431, reason: "Request Header Fields Too Large", message: "request headers too large", code: "headers_too_large" };
  return { status: 400, reason: "Bad Request", message: "malformed HTTP request", code: "bad_request" };
}

/**
 * Answers a parser refusal on the raw socket with `body` (JSON), then closes
 * the connection; nothing is written when a response is already under way.
 */
export function answerClientError(socket: Duplex, refusal: ParserRefusal | undefined, body: (r: ParserRefusal) => string): void {
  const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage;
  if (refusal && socket.writable && !inFlight?.headersSent) {
    const text = body(refusal);
    socket.write(`HTTP/1.1 ${refusal.status} ${refusal.reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
  }
  socket.destroy();
}

/** /metrics, /healthz (the process is up) and /readyz (every dependency answers). */
export function createHttpServer(deps: HttpServerDeps): Server {
  const options = {
    requestTimeout: deps.requestTimeoutMs,
    headersTimeout: deps.headersTimeoutMs,
    connectionsCheckingInterval: Math.min(1_000, deps.headersTimeoutMs),
  };
  const tls = deps.tls;
  const clientCertRequired = tls?.clientCaPem !== undefined;
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/metrics") {
      deps.registry.metrics().then(
        (body) => send(res, 200, body, deps.registry.contentType),
        (err) => {
          deps.logger.error({ err }, "metrics failed");
          send(res, 500, "metrics failed\n");
        },
      );
      return;
    }
    if (req.method === "GET" && path === "/healthz") return send(res, 200, JSON.stringify({ status: "ok" }), "application/json");
    if (req.method === "GET" && path === "/readyz") {
      void readiness(deps.checks, deps.degradedOnly ?? []).then((report) => send(res, report.ready ? 200 : 503, JSON.stringify(report), "application/json"));
      return;
    }
    if (clientCertRequired && !(req.socket as TLSSocket).authorized) {
      // The Connect error shape, for every route the fallback would serve.
      return send(res, 401, JSON.stringify({ code: "unauthenticated", message: "a client certificate signed by the control plane's client CA is required" }), "application/json");
    }
    if (deps.fallback?.(req, res)) return;
    send(res, 404, JSON.stringify({ error: "not found" }), "application/json");
  };
  const server: Server = tls
    ? createTlsServer({ ...options, cert: tls.certChainPem, key: tls.privateKeyPem, ca: tls.clientCaPem, requestCert: clientCertRequired, rejectUnauthorized: false }, handle)
    : createServer(options, handle);
  // The Connect protocol's error shape: {"code", "message"}.
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    answerClientError(socket, parserRefusal(err.code), (r) => JSON.stringify({ code: r.status === 408 ? "deadline_exceeded" : r.status === 431 ? "resource_exhausted" : "invalid_argument", message: r.message }));
  });
  return server;
}

async function readiness(checks: Readonly<Record<string, ReadinessCheck>>, degradedOnly: readonly string[]): Promise<{ ready: boolean; checks: Record<string, string> }> {
  const results: Record<string, string> = {};
  await Promise.all(
    Object.entries(checks).map(async ([name, check]) => {
      try {
        await withTimeout(check(), 2000);
        results[name] = "ok";
      } catch (err) {
        results[name] = `failing: ${err instanceof Error ? err.message : String(err)}`.slice(0, 300);
      }
    }),
  );
  return { ready: Object.entries(results).every(([name, r]) => r === "ok" || degradedOnly.includes(name)), checks: results };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    promise.then(
      (v) => (clearTimeout(timer), resolve(v)),
      (e) => (clearTimeout(timer), reject(e)),
    );
  });
}

function send(res: ServerResponse, status: number, body: string, contentType = "text/plain"): void {
  res.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
  res.end(body);
}

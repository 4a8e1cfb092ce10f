import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Logger } from "pino";
import type { Registry } from "prom-client";

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
}

/** /metrics, /healthz (the process is up) and /readyz (every dependency answers). */
export function createHttpServer(deps: HttpServerDeps): Server {
  return createServer((req, res) => {
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
    if (deps.fallback?.(req, res)) return;
    send(res, 404, JSON.stringify({ error: "not found" }), "application/json");
  });
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

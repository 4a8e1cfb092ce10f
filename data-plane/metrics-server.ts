import { createServer, type Server, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import type { Registry } from "prom-client";

export interface MetricsServerOptions {
  readonly registry: Registry;
  readonly logger: Logger;
  /** Slow clients are cut off: the headers within `headersTimeoutMs`, the whole request within `requestTimeoutMs`. */
  readonly requestTimeoutMs: number;
  readonly headersTimeoutMs: number;
}

/**
 * The data plane's `GET /metrics`, on a listener of its own
 * (`PROXY_METRICS_HOST`:`PROXY_METRICS_PORT`, loopback by default): its series
 * name tenants and models, which the proxy's clients must not read. Anything
 * else is 404.
 */
export function createMetricsServer(options: MetricsServerOptions): Server {
  const { registry, logger } = options;
  const server = createServer({
    requestTimeout: options.requestTimeoutMs,
    headersTimeout: options.headersTimeoutMs,
    connectionsCheckingInterval: Math.min(1_000, options.headersTimeoutMs),
  }, (req, res) => {
    if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/metrics") return send(res, 404, "not found: this listener serves GET /metrics\n");
    registry.metrics().then(
      (text) => send(res, 200, text, registry.contentType),
      (err) => {
        logger.error({ err }, "metrics failed");
        send(res, 500, "metrics failed\n");
      },
    );
  });
  server.on("clientError", (_err, socket: Duplex) => socket.destroy());
  return server;
}

function send(res: ServerResponse, status: number, body: string, contentType = "text/plain"): void {
  res.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
  res.end(body);
}

import type { Server } from "node:http";
import type { Logger } from "pino";
import { mockAnthropicProviderName, mockProviderName, type DataPlaneConfig, type ProviderConfig } from "./config.js";
import { AdmittedCredentials } from "./admitted-credentials.js";
import { ControlPlaneClient } from "./control-plane-client.js";
import { FailOpen } from "./fail-open.js";
import { createLogger } from "../control-plane/logger.js";
import { createDataPlaneMetrics, type DataPlaneMetrics } from "./metrics.js";
import { createMetricsServer } from "./metrics-server.js";
import { startMockProvider, type RunningMockProvider } from "./mock-provider.js";
import { createProxyServer } from "./proxy-server.js";
import type { ReplayReport } from "./settle-spool.js";
import { SettleSpool } from "./settle-spool.js";
import { Settler } from "./settler.js";
import { startTracing, type Tracing } from "../control-plane/tracing.js";

export interface RunningDataPlane {
  readonly port: number;
  /** Where `GET /metrics` is served (PROXY_METRICS_HOST). */
  readonly metricsPort: number;
  readonly metrics: DataPlaneMetrics;
  readonly controlPlane: ControlPlaneClient;
  readonly spool: SettleSpool;
  readonly failOpen: FailOpen;
  /** OpenTelemetry export (off unless an OTLP endpoint is configured). */
  readonly tracing: Tracing;
  /** The built-in mock provider (both its entries, "mock" and "mock-anthropic"), when no providers were configured. */
  readonly mockProvider?: RunningMockProvider;
  /** Sends spooled settles now (also done with backoff, and whenever the link comes back); resolves with how many were delivered. */
  replaySpool(): Promise<number>;
  /** Stops taking requests, finishes those in flight, delivers or spools their settles. */
  close(): Promise<void>;
}

/** Optional replacements for tests and embedding (providers instead of the config's, a logger, jitter, the clock of FAIL_OPEN's memory). */
export interface DataPlaneDeps {
  readonly logger?: Logger;
  readonly providers?: readonly ProviderConfig[];
  readonly metrics?: DataPlaneMetrics;
  readonly random?: () => number;
  readonly clock?: () => number;
}

function tlsMode(config: DataPlaneConfig): "off" | "tls" | "mtls" {
  return !config.controlPlaneTls ? "off" : config.controlPlaneTls.certChainPem ? "mtls" : "tls";
}

/**
 * The one wiring function of the data plane: providers (or the built-in mock),
 * the control-plane link, the settle spool and replay, FAIL_OPEN, the proxy.
 */
export async function startDataPlane(config: DataPlaneConfig, deps: DataPlaneDeps = {}): Promise<RunningDataPlane> {
  const logger = deps.logger ?? createLogger({ level: config.logLevel, service: "data-plane" });
  const metrics = deps.metrics ?? createDataPlaneMetrics();
  // Spans are passed explicitly here (request-trace.ts): no process-wide context manager.
  const tracing = startTracing(config.tracing, metrics.droppedSpans, { activeContext: false });
  let providers = deps.providers ?? config.providers;
  let mockProvider: RunningMockProvider | undefined;
  if (!providers) {
    mockProvider = await startMockProvider();
    // One process answering both APIs, as two providers: models name the one whose API they are served on.
    providers = [
      { name: mockProviderName, baseUrl: mockProvider.baseUrl, api: "openai", apiKey: "" },
      { name: mockAnthropicProviderName, baseUrl: mockProvider.baseUrl, api: "anthropic", apiKey: "" },
    ];
    logger.info({ baseUrl: mockProvider.baseUrl }, "no PROVIDERS_FILE: built-in mock provider started");
  }

  const controlPlane = new ControlPlaneClient({
    address: config.controlPlaneAddr,
    tls: config.controlPlaneTls,
    timeoutMs: config.admitTimeoutMs,
    settleTimeoutMs: config.settleTimeoutMs,
    reconnectMinMs: config.reconnectMinMs,
    reconnectMaxMs: config.reconnectMaxMs,
    logger,
    random: deps.random,
  });
  metrics.controlPlaneUp.set(0);
  controlPlane.onLinkChange((up) => metrics.controlPlaneUp.set(up ? 1 : 0));
  const spool = new SettleSpool(config.spoolDir, {
    onQuarantine: ({ from, quarantineFile, lineNumbers }) => {
      metrics.spoolQuarantined.inc(lineNumbers.length);
      logger.error({ from, quarantineFile, count: lineNumbers.length, lines: lineNumbers.slice(0, 100) }, "settle spool lines unreadable: kept in the quarantine file, not delivered");
    },
  });
  const settler = new Settler({ client: controlPlane, spool, logger, metrics, replayMinMs: config.replayMinMs, replayMaxMs: config.replayMaxMs, random: deps.random });
  // Under FAIL_CLOSED nothing is served unadmitted, so no credential is remembered.
  const admitted = config.failurePolicy === "FAIL_OPEN"
    ? new AdmittedCredentials({ ttlMs: config.failOpenTtlMs, maxCredentials: config.failOpenMaxCredentials, clock: deps.clock })
    : undefined;
  const failOpen = new FailOpen({ client: controlPlane, settler, logger, metrics, admitted });
  const server: Server = createProxyServer({
    config, providers: new Map(providers.map((p) => [p.name, p])), controlPlane, settler, failOpen, metrics, logger, tracer: tracing.tracer,
  });
  const metricsServer = createMetricsServer({ registry: metrics.registry, logger, requestTimeoutMs: config.requestTimeoutMs, headersTimeoutMs: config.headersTimeoutMs });
  let port: number;
  let metricsPort: number;
  try {
    port = await listen(server, config.port, config.host);
    metricsPort = await listen(metricsServer, config.metricsPort, config.metricsHost);
  } catch (err) {
    // e.g. a port is taken: release what was started so the process can exit.
    if (server.listening) await new Promise((resolve) => server.close(resolve));
    await settler.stop();
    failOpen.close();
    controlPlane.close();
    await mockProvider?.close();
    await tracing.shutdown();
    throw err;
  }
  logger.info({ port, metricsHost: config.metricsHost, metricsPort, controlPlane: config.controlPlaneAddr, controlPlaneTls: tlsMode(config), providers: providers.map((p) => p.name), failurePolicy: config.failurePolicy }, "data plane ready");

  let closing: Promise<void> | undefined;
  return {
    port, metricsPort, metrics, controlPlane, spool, failOpen, tracing, mockProvider,
    replaySpool: async () => {
      const report: ReplayReport = await settler.replay();
      return report.delivered;
    },
    close: () => {
      closing ??= (async () => {
        server.closeIdleConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        metricsServer.closeAllConnections();
        await new Promise<void>((resolve) => metricsServer.close(() => resolve()));
        await settler.stop();
        await failOpen.flush().catch(() => undefined);
        failOpen.close();
        controlPlane.close();
        await mockProvider?.close();
        await tracing.shutdown();
        logger.info("data plane stopped");
      })();
      return closing;
    },
  };
}

/** Listens on host:port (0: ephemeral) and resolves with the port. */
function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve((server.address() as { port: number }).port));
  });
}

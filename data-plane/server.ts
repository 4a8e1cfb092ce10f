import type { Server } from "node:http";
import type { Logger } from "pino";
import { mockProviderName, type DataPlaneConfig, type ProviderConfig } from "./config.js";
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

export interface RunningDataPlane {
  readonly port: number;
  /** Where `GET /metrics` is served (PROXY_METRICS_HOST). */
  readonly metricsPort: number;
  readonly metrics: DataPlaneMetrics;
  readonly controlPlane: ControlPlaneClient;
  readonly spool: SettleSpool;
  readonly failOpen: FailOpen;
  /** The built-in mock provider, when no providers were configured. */
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

/**
 * The one wiring function of the data plane: providers (or the built-in mock),
 * the control-plane link, the settle spool and replay, FAIL_OPEN, the proxy.
 */
export async function startDataPlane(config: DataPlaneConfig, deps: DataPlaneDeps = {}): Promise<RunningDataPlane> {
  const logger = deps.logger ?? createLogger({ level: config.logLevel, service: "data-plane" });
  const metrics = deps.metrics ?? createDataPlaneMetrics();
  let providers = deps.providers ?? config.providers;
  let mockProvider: RunningMockProvider | undefined;
  if (!providers) {
    mockProvider = await startMockProvider();
    providers = [{ name: mockProviderName, baseUrl: mockProvider.baseUrl, apiKey: "" }];
    logger.info({ baseUrl: mockProvider.baseUrl }, "no PROVIDERS_FILE: built-in mock provider started");
  }

  const controlPlane = new ControlPlaneClient({
    address: config.controlPlaneAddr,
    timeoutMs: config.admitTimeoutMs,
    settleTimeoutMs: config.settleTimeoutMs,
    reconnectMinMs: config.reconnectMinMs,
    reconnectMaxMs: config.reconnectMaxMs,
    logger,
    random: deps.random,
  });
  metrics.controlPlaneUp.set(0);
  controlPlane.onLinkChange((up) => metrics.controlPlaneUp.set(up ? 1 : 0));
  const spool = new SettleSpool(config.spoolDir);
  const settler = new Settler({ client: controlPlane, spool, logger, metrics, replayMinMs: config.replayMinMs, replayMaxMs: config.replayMaxMs, random: deps.random });
  // Under FAIL_CLOSED nothing is served unadmitted, so no credential is remembered.
  const admitted = config.failurePolicy === "FAIL_OPEN"
    ? new AdmittedCredentials({ ttlMs: config.failOpenTtlMs, maxCredentials: config.failOpenMaxCredentials, clock: deps.clock })
    : undefined;
  const failOpen = new FailOpen({ client: controlPlane, settler, logger, metrics, admitted });
  const server: Server = createProxyServer({
    config, providers: new Map(providers.map((p) => [p.name, p])), controlPlane, settler, failOpen, metrics, logger,
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
    throw err;
  }
  logger.info({ port, metricsHost: config.metricsHost, metricsPort, controlPlane: config.controlPlaneAddr, providers: providers.map((p) => p.name), failurePolicy: config.failurePolicy }, "data plane ready");

  let closing: Promise<void> | undefined;
  return {
    port, metricsPort, metrics, controlPlane, spool, failOpen, mockProvider,
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

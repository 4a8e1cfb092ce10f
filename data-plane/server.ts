import type { Server } from "node:http";
import pino, { type Logger } from "pino";
import type { DataPlaneConfig, ProviderConfig } from "./config.js";
import { ControlPlaneClient } from "./control-plane-client.js";
import { createDataPlaneMetrics, type DataPlaneMetrics } from "./metrics.js";
import { createProxyServer } from "./proxy-server.js";
import { SettleSpool } from "./settle-spool.js";

export interface RunningDataPlane {
  readonly port: number;
  readonly metrics: DataPlaneMetrics;
  readonly controlPlane: ControlPlaneClient;
  readonly spool: SettleSpool;
  /** Sends spooled settles now (also runs every second). */
  replaySpool(): Promise<number>;
  close(): Promise<void>;
}

/** Wires the data plane: control-plane client, spool, proxy; replays spooled settles every second. */
export async function startDataPlane(config: DataPlaneConfig, deps: { logger?: Logger; providers: readonly ProviderConfig[] }): Promise<RunningDataPlane> {
  const logger = deps.logger ?? pino({ level: config.logLevel, base: { service: "data-plane" }, redact: ["authorization", "*.authorization", "credential", "*.credential"] });
  const metrics = createDataPlaneMetrics();
  const controlPlane = new ControlPlaneClient({ address: config.controlPlaneAddr, timeoutMs: config.admitTimeoutMs });
  const spool = new SettleSpool(config.spoolDir);
  const server: Server = createProxyServer({ config, providers: new Map(deps.providers.map((p) => [p.name, p])), controlPlane, spool, metrics, logger });
  let replaying: Promise<number> | undefined;
  const replaySpool = () => {
    replaying ??= spool.replay((req) => controlPlane.settle(req)).finally(() => (replaying = undefined));
    return replaying;
  };
  const timer = setInterval(() => {
    if (spool.pending()) void replaySpool().then((n) => n && logger.info({ settles: n }, "spooled settles delivered"), (err) => logger.debug({ err: String(err) }, "spool replay will retry"));
  }, 1_000);
  timer.unref();
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, () => resolve((server.address() as { port: number }).port));
  });
  logger.info({ port, controlPlane: config.controlPlaneAddr }, "data plane ready");
  return {
    port, metrics, controlPlane, spool, replaySpool,
    close: async () => {
      clearInterval(timer);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections?.();
      await replaying?.catch(() => undefined);
      controlPlane.close();
    },
  };
}

import { mockProviderName } from "./config.js";
import { ControlPlaneClient } from "./control-plane-client.js";
import { FailOpen } from "./fail-open.js";
import { createLogger } from "../control-plane/logger.js";
import { createDataPlaneMetrics } from "./metrics.js";
import { startMockProvider } from "./mock-provider.js";
import { createProxyServer } from "./proxy-server.js";
import { SettleSpool } from "./settle-spool.js";
import { Settler } from "./settler.js";
/**
 * The one wiring function of the data plane: providers (or the built-in mock),
 * the control-plane link, the settle spool and replay, FAIL_OPEN, the proxy.
 */
export async function startDataPlane(config, deps = {}) {
    const logger = deps.logger ?? createLogger({ level: config.logLevel, service: "data-plane" });
    const metrics = deps.metrics ?? createDataPlaneMetrics();
    let providers = deps.providers ?? config.providers;
    let mockProvider;
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
    const failOpen = new FailOpen({ client: controlPlane, settler, logger, metrics, fallbackProvider: config.failOpenProvider || providers[0]?.name || "" });
    const server = createProxyServer({
        config, providers: new Map(providers.map((p) => [p.name, p])), controlPlane, settler, failOpen, metrics, logger,
    });
    let port;
    try {
        port = await new Promise((resolve, reject) => {
            server.once("error", reject);
            server.listen(config.port, config.host, () => resolve(server.address().port));
        });
    }
    catch (err) {
        // e.g. the port is taken: release what was started so the process can exit.
        await settler.stop();
        failOpen.close();
        controlPlane.close();
        await mockProvider?.close();
        throw err;
    }
    logger.info({ port, controlPlane: config.controlPlaneAddr, providers: providers.map((p) => p.name), failurePolicy: config.failurePolicy }, "data plane ready");
    let closing;
    return {
        port, metrics, controlPlane, spool, failOpen, mockProvider,
        replaySpool: async () => {
            const report = await settler.replay();
            return report.delivered;
        },
        close: () => {
            closing ??= (async () => {
                server.closeIdleConnections();
                await new Promise((resolve) => server.close(() => resolve()));
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
//# sourceMappingURL=server.js.map
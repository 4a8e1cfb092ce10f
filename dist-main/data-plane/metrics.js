import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
export function createDataPlaneMetrics(options = {}) {
    const registry = new Registry();
    if (options.defaultMetrics !== false)
        collectDefaultMetrics({ register: registry });
    const registers = [registry];
    return {
        registry,
        requests: new Counter({ name: "proxy_requests_total", help: "Requests by route and HTTP status", labelNames: ["route", "status"], registers }),
        upstreamSeconds: new Histogram({
            name: "proxy_upstream_duration_seconds",
            help: "Time to the provider's response headers",
            labelNames: ["provider", "status"],
            buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
            registers,
        }),
        overheadSeconds: new Histogram({
            name: "proxy_overhead_duration_seconds",
            help: "Time the proxy adds before forwarding: body read, token count, Admit, rewrite",
            buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1],
            registers,
        }),
        admitSeconds: new Histogram({
            name: "proxy_admit_duration_seconds",
            help: "Admit round trip to the control plane by result (allowed, denied, error)",
            labelNames: ["result"],
            buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2],
            registers,
        }),
        tokens: new Counter({ name: "proxy_tokens_total", help: "Tokens settled by tenant, model and direction (input, output)", labelNames: ["tenant", "model", "direction"], registers }),
        failovers: new Counter({ name: "proxy_failovers_total", help: "Route candidates abandoned before the first byte (connect error, 5xx), by provider", labelNames: ["provider"], registers }),
        settles: new Counter({ name: "proxy_settles_total", help: "Settles by result: delivered, spooled (disk), replayed (from the spool), lost", labelNames: ["result"], registers }),
        spooledSettles: new Gauge({ name: "proxy_settle_spool_pending", help: "Settles waiting in the disk spool", registers }),
        controlPlaneUp: new Gauge({ name: "proxy_control_plane_up", help: "1 while the Session link to the control plane is up", registers }),
        failOpen: new Counter({ name: "proxy_fail_open_total", help: "Requests served unadmitted under FAIL_OPEN, by result: held, recorded, lost", labelNames: ["result"], registers }),
    };
}
//# sourceMappingURL=metrics.js.map
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export interface DataPlaneMetrics {
  readonly registry: Registry;
  readonly requests: Counter<"status">;
  readonly upstreamSeconds: Histogram<"status">;
  readonly overheadSeconds: Histogram;
  readonly tokens: Counter<"tenant" | "model" | "direction">;
  readonly settlesSpooled: Counter;
}

export function createDataPlaneMetrics(): DataPlaneMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    requests: new Counter({ name: "proxy_requests_total", help: "Requests by HTTP status", labelNames: ["status"], registers }),
    upstreamSeconds: new Histogram({ name: "proxy_upstream_duration_seconds", help: "Time to the provider's response headers", labelNames: ["status"], buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers }),
    overheadSeconds: new Histogram({ name: "proxy_overhead_duration_seconds", help: "Time the proxy adds before forwarding (body read, token count, Admit)", buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1], registers }),
    tokens: new Counter({ name: "proxy_tokens_total", help: "Tokens settled by tenant, model and direction", labelNames: ["tenant", "model", "direction"], registers }),
    settlesSpooled: new Counter({ name: "proxy_settles_spooled_total", help: "Settles written to the disk spool because the control plane did not acknowledge them", registers }),
  };
}

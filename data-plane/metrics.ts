import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The data plane's Prometheus metrics, on one registry served at /metrics. */
export interface DataPlaneMetrics {
  readonly registry: Registry;
  readonly requests: Counter<"route" | "status">;
  readonly upstreamSeconds: Histogram<"provider" | "status">;
  readonly overheadSeconds: Histogram;
  readonly admitSeconds: Histogram<"result">;
  readonly tokens: Counter<"tenant" | "model" | "direction">;
  readonly failovers: Counter<"provider">;
  readonly settles: Counter<"result">;
  readonly spooledSettles: Gauge;
  readonly spoolQuarantined: Counter;
  readonly controlPlaneUp: Gauge;
  readonly failOpen: Counter<"result">;
  readonly droppedSpans: Counter<"reason">;
}

export function createDataPlaneMetrics(options: { defaultMetrics?: boolean } = {}): DataPlaneMetrics {
  const registry = new Registry();
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });
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
    tokens: new Counter({ name: "proxy_tokens_total", help: "Tokens settled by tenant, model and direction: input and output, and their parts cache_read, cache_write (of the input) and reasoning (of the output)", labelNames: ["tenant", "model", "direction"], registers }),
    failovers: new Counter({ name: "proxy_failovers_total", help: "Route candidates abandoned before the first byte (connect error, 5xx), by provider", labelNames: ["provider"], registers }),
    settles: new Counter({ name: "proxy_settles_total", help: "Settles by result: delivered, spooled (disk), replayed (from the spool), lost", labelNames: ["result"], registers }),
    spooledSettles: new Gauge({ name: "proxy_settle_spool_pending", help: "Settles waiting in the disk spool", registers }),
    spoolQuarantined: new Counter({
      name: "proxy_settle_spool_quarantined_total",
      help: "Settle spool lines that could not be read back, kept in settles.quarantine.jsonl (not delivered until an operator replays them)",
      registers,
    }),
    controlPlaneUp: new Gauge({ name: "proxy_control_plane_up", help: "1 while the Session link to the control plane is up", registers }),
    failOpen: new Counter({ name: "proxy_fail_open_total", help: "Requests served unadmitted under FAIL_OPEN, by result: held, recorded, lost", labelNames: ["result"], registers }),
    droppedSpans: new Counter({
      name: "proxy_trace_spans_dropped_total",
      help: "Trace spans dropped instead of exported, by reason: queue_full (the bounded export queue was full) or the export's error (collector unreachable, refused, timed out)",
      labelNames: ["reason"],
      registers,
    }),
  };
}

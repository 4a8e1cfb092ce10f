import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The control plane's Prometheus metrics, on one registry served at /metrics. */
export interface Metrics {
  readonly registry: Registry;
  readonly decisions: Counter<"outcome" | "reason">;
  readonly decisionSeconds: Histogram;
  readonly activeReservations: Gauge;
  readonly settles: Counter<"result">;
  readonly expiries: Counter;
  readonly ledgerWriteSeconds: Histogram;
  readonly wouldDeny: Counter<"mode" | "kind">;
  readonly downgrades: Counter<"mode" | "kind" | "from" | "to">;
  readonly alerts: Counter<"kind" | "threshold">;
  readonly storeErrors: Counter<"op">;
  readonly storeMisconfigured: Counter<"op">;
  readonly counterRebuilds: Counter<"trigger">;
  readonly counterReconciles: Counter<"result">;
  readonly policyReloads: Counter<"result">;
  readonly policyVersion: Gauge;
  readonly rpcs: Counter<"method" | "code">;
  readonly inFlight: Gauge;
  readonly spoolQuarantined: Counter;
  readonly webhookDeliveries: Counter<"webhook" | "outcome">;
  readonly webhookAttempts: Counter<"webhook" | "result">;
  readonly webhookOldestPendingSeconds: Gauge;
  readonly webhookEventsUnrecorded: Counter<"type">;
  readonly droppedSpans: Counter<"reason">;
}

export function createMetrics(options: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    decisions: new Counter({ name: "admission_decisions_total", help: "Admit decisions by outcome and deny reason", labelNames: ["outcome", "reason"], registers }),
    decisionSeconds: new Histogram({
      name: "admission_decision_duration_seconds",
      help: "Time to decide an Admit",
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
      registers,
    }),
    activeReservations: new Gauge({ name: "admission_active_reservations", help: "Reservations granted by this process and not yet settled or expired", registers }),
    settles: new Counter({ name: "admission_settles_total", help: "Settles by result (settled, duplicate, late)", labelNames: ["result"], registers }),
    expiries: new Counter({ name: "admission_lease_expiries_total", help: "Leases that expired unsettled and were charged their estimate", registers }),
    ledgerWriteSeconds: new Histogram({
      name: "admission_ledger_write_duration_seconds",
      help: "Time until a ledger row is durable (group commit)",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    wouldDeny: new Counter({ name: "admission_would_deny_total", help: "Requests over a SOFT or SHADOW limit that ENFORCE would have denied", labelNames: ["mode", "kind"], registers }),
    downgrades: new Counter({
      name: "admission_downgrades_total",
      help: "Admits moved to a plan's downgrade class because the requested model's estimate did not fit a budget, by mode (enforce: admitted degraded; soft, shadow: would have been, the model kept), meter kind and model classes",
      labelNames: ["mode", "kind", "from", "to"],
      registers,
    }),
    alerts: new Counter({ name: "admission_alerts_total", help: "Threshold alerts raised (once per meter and window)", labelNames: ["kind", "threshold"], registers }),
    storeErrors: new Counter({ name: "admission_counter_store_errors_total", help: "Counter store calls that failed", labelNames: ["op"], registers }),
    storeMisconfigured: new Counter({
      name: "admission_counter_store_misconfigured_total",
      help: "Counter store calls refused as misconfiguration (credentials, permissions): their Admits are denied whatever the failure policy",
      labelNames: ["op"],
      registers,
    }),
    counterRebuilds: new Counter({
      name: "admission_counter_rebuilds_total",
      help: "Tenants whose counters were rebuilt from the ledger, by trigger (start, bundle: added tenants; cold: the store had lost them)",
      labelNames: ["trigger"],
      registers,
    }),
    counterReconciles: new Counter({
      name: "admission_counter_reconciles_total",
      help: "Settles checked against a newer counter generation than the one their usage went into, by result (charged, counted: the rebuild had it, pending)",
      labelNames: ["result"],
      registers,
    }),
    policyReloads: new Counter({ name: "admission_policy_reloads_total", help: "Policy snapshot reloads by result", labelNames: ["result"], registers }),
    policyVersion: new Gauge({ name: "admission_policy_version", help: "Version of the policy snapshot in use", registers }),
    rpcs: new Counter({ name: "admission_rpcs_total", help: "RPCs by method and status code", labelNames: ["method", "code"], registers }),
    inFlight: new Gauge({ name: "admission_rpcs_in_flight", help: "Calls being decided now, over every front end (bounded by ADMISSION_MAX_IN_FLIGHT)", registers }),
    spoolQuarantined: new Counter({
      name: "admission_ledger_spool_quarantined_total",
      help: "Ledger spool lines that could not be read back, kept in ledger-spool.quarantine.jsonl (not in the ledger until an operator replays them)",
      registers,
    }),
    webhookDeliveries: new Counter({
      name: "admission_webhook_deliveries_total",
      help: "Webhook deliveries finished, by endpoint and outcome (delivered; failed: given up or 410; dropped: endpoint deleted or disabled)",
      labelNames: ["webhook", "outcome"],
      registers,
    }),
    webhookAttempts: new Counter({
      name: "admission_webhook_attempts_total",
      help: "Webhook attempts by endpoint and result (ok, http_error: a non-2xx answer, error: no answer, timeout or refused target)",
      labelNames: ["webhook", "result"],
      registers,
    }),
    webhookOldestPendingSeconds: new Gauge({
      name: "admission_webhook_oldest_undelivered_seconds",
      help: "Age of the oldest event with a delivery still pending (0: none), as of this replica's last outbox poll",
      registers,
    }),
    webhookEventsUnrecorded: new Counter({
      name: "admission_webhook_events_unrecorded_total",
      help: "Events an Admit raised that could not be written to the outbox (the database was unreachable): logged, not delivered",
      labelNames: ["type"],
      registers,
    }),
    droppedSpans: new Counter({
      name: "admission_trace_spans_dropped_total",
      help: "Trace spans dropped instead of exported, by reason: queue_full (the bounded export queue was full) or the export's error (collector unreachable, refused, timed out)",
      labelNames: ["reason"],
      registers,
    }),
  };
}

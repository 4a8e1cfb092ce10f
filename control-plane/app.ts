import { randomBytes } from "node:crypto";
import type { Server as HttpServer } from "node:http";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { ControlPlaneConfig } from "./config.js";
import type { CounterStore } from "./counter-store.js";
import { CounterRebuild } from "./counter-rebuild.js";
import { CredentialVerifier, generateApiKeySecret } from "./credentials.js";
import { DecisionEngine } from "./decide.js";
import { demoApiKeyId, demoBundle } from "./demo-bundle.js";
import { AdmissionHandlers } from "./grpc/admission-handlers.js";
import { addAdmissionServices } from "./grpc/grpc-server.js";
import { PolicyHandlers } from "./grpc/policy-handlers.js";
import { addExtAuthz } from "./grpc/ext-authz.js";
import { addHealthService } from "./grpc/health.js";
import { addReflection } from "./grpc/reflection.js";
import { connectRoutes } from "./connect-routes.js";
import { consoleAssets } from "./console-assets.js";
import { createHttpServer } from "./http-server.js";
import { createLogger } from "./logger.js";
import { MemoryCounterStore } from "./memory-counter-store.js";
import { RedisCounterStore } from "./redis-counter-store.js";
import { createMetrics, type Metrics } from "./metrics.js";
import { InFlightLimit } from "./in-flight-limit.js";
import { PolicyManager } from "./policy/policy-manager.js";
import { ReservationSigner } from "./reservation-id.js";
import { Settlement } from "./settlement.js";
import { TenantStatusReader } from "./tenant-status.js";
import { CreditBalances } from "./credit-balances.js";
import { CreditGrantStore } from "./store/credit-grants.js";
import { startTracing, type Tracing } from "./tracing.js";
import { AuditLog } from "./store/audit-log.js";
import { ConfigRepository } from "./store/config-repository.js";
import { openDatabase, type Database } from "./store/database.js";
import { Ledger } from "./store/ledger.js";
import { LedgerSpool } from "./store/ledger-spool.js";
import { applyRetention } from "./store/retention.js";
import { WebhookOutbox, webhookEventSpool } from "./store/webhook-outbox.js";
import { WebhookEvents } from "./webhook-events.js";
import { WebhookWorker } from "./webhook-worker.js";
import { ThresholdAlerts } from "./threshold-alerts.js";
import { BundleSchema, WebhookSchema } from "../gen/admission/v1/policy_pb.js";
import { create } from "@bufbuild/protobuf";
import { file_admission_v1_admission } from "../gen/admission/v1/admission_pb.js";
import { file_admission_v1_policy_service } from "../gen/admission/v1/policy_service_pb.js";
import { file_envoy_service_auth_v3_external_auth } from "../gen/envoy/service/auth/v3/external_auth_pb.js";

export interface RunningControlPlane {
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly adminToken: string;
  /** The demo API key's secret, when the demo bundle was loaded. */
  readonly demoApiKey?: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly policy: PolicyManager;
  readonly settlement: Settlement;
  readonly counters: CounterStore;
  readonly ledger: Ledger;
  readonly audit: AuditLog;
  readonly database: Database;
  readonly webhooks: WebhookWorker;
  readonly events: WebhookEvents;
  /** OpenTelemetry export (off unless an OTLP endpoint is configured). */
  readonly tracing: Tracing;
  /** Graceful: stop taking calls, drain, flush the ledger and audit log, close stores. */
  stop(): Promise<void>;
}

/** Optional replacements for tests and benchmarks (an injected clock, a specific counter store). */
export interface ControlPlaneDeps {
  readonly clock?: () => number;
  readonly logger?: Logger;
  readonly counters?: CounterStore;
  readonly metrics?: Metrics;
}

/**
 * The one wiring function: picks backends from the config, builds the object
 * graph, rebuilds counters from the ledger, then starts serving.
 */
export async function startControlPlane(config: ControlPlaneConfig, deps: ControlPlaneDeps = {}): Promise<RunningControlPlane> {
  const logger = deps.logger ?? createLogger({ level: config.logLevel, service: "control-plane" });
  const metrics = deps.metrics ?? createMetrics({ defaultMetrics: true });
  const tracing = startTracing(config.tracing, metrics.droppedSpans);
  const { tracer } = tracing;
  const counters = deps.counters ?? (await openCounterStore(config, logger, deps.clock ?? Date.now));
  // Replicas sharing Redis decide windows by Redis's clock, so local skew does not split them.
  const clock = deps.clock ?? (counters instanceof RedisCounterStore ? counters.now : Date.now);

  const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir, logger });
  const repository = new ConfigRepository({ db: database });
  const spool = new LedgerSpool({
    dir: config.spoolDir,
    onQuarantine: ({ from, quarantineFile, lineNumbers }) => {
      metrics.spoolQuarantined.inc(lineNumbers.length);
      logger.error({ from, quarantineFile, count: lineNumbers.length, lines: lineNumbers.slice(0, 100) }, "ledger spool lines unreadable: kept in the quarantine file, not recorded in the ledger");
    },
  });
  // Events committed here (with a ledger row, an admin change, an Admit) wake this replica's delivery worker at once.
  const ledger = new Ledger({ db: database, logger, spool, onEventsCommitted: () => worker.kick() });
  await ledger.ensurePartitions(clock());
  const audit = new AuditLog({ db: database, logger, clock });
  const signer = new ReservationSigner(await repository.getOrCreateSecret("reservation_signing_key", () => randomBytes(32).toString("base64url")));
  const credentials = new CredentialVerifier(config.jwt, clock);

  const outbox = new WebhookOutbox(database);
  const eventSpool = webhookEventSpool({
    dir: config.spoolDir,
    onQuarantine: ({ from, quarantineFile, lineNumbers }) => {
      metrics.spoolQuarantined.inc(lineNumbers.length);
      logger.error({ from, quarantineFile, count: lineNumbers.length }, "webhook spool lines unreadable: kept in the quarantine file, not delivered");
    },
  });
  const events = new WebhookEvents({ db: database, policy: () => policy.snapshot(), logger, clock, spool: eventSpool, onCommitted: () => worker.kick() });
  const worker = new WebhookWorker({
    outbox, policy: () => policy.snapshot(), audit, metrics, logger, clock, raiseDue: async () => {
      await events.replaySpool();
      await events.raiseExpiringKeys();
    },
    settings: { ...config.webhooks, pollIntervalMs: 1_000, concurrency: 8 },
    // A 410 disables the endpoint in the config, so every replica stops sending to it.
    disable: async (webhook) => {
      await policy.apply(create(BundleSchema, { webhooks: [create(WebhookSchema, { ...webhook, disabled: true })] }), { dryRun: false, actor: "webhooks" });
    },
  });
  const policy = new PolicyManager({ repository, audit, events, metrics, logger, defaultFailurePolicy: config.failurePolicy, pollIntervalMs: 5_000, clock });
  await policy.start();
  let demoApiKey: string | undefined;
  if (config.demo) {
    demoApiKey = generateApiKeySecret();
    await policy.apply(demoBundle(demoApiKey), { dryRun: false, actor: "demo" });
  }
  const snapshot = () => policy.snapshot();

  const alerts = new ThresholdAlerts({ metrics, audit, events, thresholds: config.alertThresholds });
  const rebuild = new CounterRebuild({ counters, ledger, policy: snapshot, metrics, logger, clock });
  const credits = new CreditBalances({ grants: new CreditGrantStore(database), counters, rebuild, policy: snapshot, audit, events, logger, clock });
  const engine = new DecisionEngine({
    policy: snapshot, credentials, counters, rebuild, signer, audit, events, alerts, metrics, logger, clock, tracer, credits,
    settings: { leaseTtlMs: config.leaseTtlMs, defaultMaxOutputTokens: config.defaultMaxOutputTokens, alertThresholds: config.alertThresholds },
  });
  const settlement = new Settlement({
    policy: snapshot, credentials, counters, rebuild, signer, ledger, audit, alerts, events, metrics, logger, clock, tracer, credits,
    settings: { leaseTtlMs: config.leaseTtlMs, maxLeaseTtlMs: config.maxLeaseTtlMs, recordGraceMs: 30_000, sweepIntervalMs: 1_000 },
  });
  // Every tenant's counters in one read of the ledger, rather than one query per tenant on its first call.
  const warm = (tenants: string[], trigger: "start" | "bundle") =>
    rebuild.warmAll(tenants, trigger).catch((err) => logger.error({ err: String(err) }, "counter rebuild failed; each tenant rebuilds on its first call"));
  await warm(snapshot().tenantIds(), "start");
  // Tenants a bundle adds are warmed in bulk too (in the background; a call meanwhile rebuilds its own tenant).
  policy.onSwap((previous, next) => {
    const added = next.tenantIds().filter((t) => !previous.tenants.has(t));
    if (added.length > 0) void warm(added, "bundle");
  });
  settlement.start();
  worker.start();
  const maintenance = setInterval(() => {
    void applyRetention({ ledger, audit, outbox }, clock(), config).catch((err) => logger.error({ err }, "store maintenance failed"));
  }, 3_600_000);
  maintenance.unref();

  const server = new grpc.Server({ "grpc.max_receive_message_length": 8 * 1024 * 1024, "grpc.keepalive_permit_without_calls": 1 });
  const admissionHandlers = new AdmissionHandlers({ engine, settlement, credentials, policy: snapshot, adminToken: config.adminToken, tracer });
  const tenantStatus = new TenantStatusReader({ policy: snapshot, counters, rebuild, ledger, clock, credits });
  const policyHandlers = new PolicyHandlers({ policy, ledger, audit, counters, tenantStatus, engine, outbox, credits, deliverNow: () => worker.kick(), adminToken: config.adminToken, clock });
  const limit = new InFlightLimit(config.maxInFlight, metrics.inFlight);
  addAdmissionServices(server, { admission: admissionHandlers, policy: policyHandlers, metrics, logger, limit, tracer });
  addExtAuthz(server, { engine, metrics, limit, logger, tracer });
  const health = addHealthService(server, ["admission.v1.AdmissionService", "admission.v1.PolicyService", "envoy.service.auth.v3.Authorization"]);
  addReflection(server, [file_admission_v1_admission, file_admission_v1_policy_service, file_envoy_service_auth_v3_external_auth]);
  const grpcPort = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${config.grpcHost}:${config.grpcPort}`, serverCredentials(config), (err, port) => (err ? reject(err) : resolve(port)));
  });

  const connect = connectRoutes({ admission: admissionHandlers, policy: policyHandlers, limit, logger, tracer });
  const consoleFiles = consoleAssets(config.consoleDir);
  const http = createHttpServer({
    registry: metrics.registry,
    logger,
    fallback: (req, res) => connect(req, res) || consoleFiles(req, res),
    requestTimeoutMs: config.httpRequestTimeoutMs,
    headersTimeoutMs: config.httpHeadersTimeoutMs,
    tls: config.tls,
    // Without the database, Settles are spooled and Admits still decide: degraded, not down.
    degradedOnly: ["database"],
    checks: {
      policy: async () => {
        if (policy.snapshot().version === 0) throw new Error("no policy loaded");
      },
      database: async () => {
        await database.ping();
        if (ledger.spoolPending()) throw new Error("ledger rows spooled, replaying");
        if (eventSpool.pending()) throw new Error("webhook events spooled, replaying");
      },
      counters: () => counters.ping(),
    },
  });
  const httpPort = await listen(http, config.grpcHost, config.httpPort);
  const tls = !config.tls ? "off" : config.tls.clientCaPem ? "mtls" : "tls";
  logger.info({ grpcPort, httpPort, tls, database: database.kind, counters: counters.constructor.name }, "control plane ready");

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      health.shutdown();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, config.shutdownGraceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      await new Promise<void>((resolve) => http.close(() => resolve()));
      clearInterval(maintenance);
      await settlement.stop();
      credits.close();
      await worker.stop();
      await policy.stop();
      await ledger.close();
      await audit.close();
      await counters.close();
      await database.close();
      await tracing.shutdown();
      logger.info("control plane stopped");
    })();
    return stopping;
  };

  return { grpcPort, httpPort, adminToken: config.adminToken, demoApiKey, logger, metrics, policy, settlement, counters, ledger, audit, database, webhooks: worker, events, tracing, stop };
}

/** Redis (or Redis Cluster) when configured, otherwise counters in this process. */
async function openCounterStore(config: ControlPlaneConfig, logger: Logger, clock: () => number): Promise<CounterStore> {
  if (config.redisUrl || config.redisClusterNodes?.length) {
    return RedisCounterStore.connect({ url: config.redisUrl, clusterNodes: config.redisClusterNodes, keyPrefix: config.redisKeyPrefix, logger });
  }
  return new MemoryCounterStore({ clock });
}

/** TLS (and, with a client CA, verified client certificates) when configured; plaintext otherwise. */
function serverCredentials(config: ControlPlaneConfig): grpc.ServerCredentials {
  const tls = config.tls;
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const ca = tls.clientCaPem ? Buffer.from(tls.clientCaPem) : null;
  return grpc.ServerCredentials.createSsl(ca, [{ cert_chain: Buffer.from(tls.certChainPem), private_key: Buffer.from(tls.privateKeyPem) }], ca !== null);
}

function listen(server: HttpServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const address = server.address();
      resolve(typeof address === "object" && address ? address.port : port);
    });
  });
}

export { demoApiKeyId };

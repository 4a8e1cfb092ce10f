import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
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
import { createHttpServer } from "./http-server.js";
import { createLogger } from "./logger.js";
import { MemoryCounterStore } from "./memory-counter-store.js";
import { RedisCounterStore } from "./redis-counter-store.js";
import { createMetrics } from "./metrics.js";
import { InFlightLimit } from "./in-flight-limit.js";
import { PolicyManager } from "./policy/policy-manager.js";
import { ReservationSigner } from "./reservation-id.js";
import { Settlement } from "./settlement.js";
import { AuditLog } from "./store/audit-log.js";
import { ConfigRepository } from "./store/config-repository.js";
import { openDatabase } from "./store/database.js";
import { Ledger } from "./store/ledger.js";
import { LedgerSpool } from "./store/ledger-spool.js";
import { file_admission_v1_admission } from "../gen/admission/v1/admission_pb.js";
import { file_admission_v1_policy_service } from "../gen/admission/v1/policy_service_pb.js";
import { file_envoy_service_auth_v3_external_auth } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
/**
 * The one wiring function: picks backends from the config, builds the object
 * graph, rebuilds counters from the ledger, then starts serving.
 */
export async function startControlPlane(config, deps = {}) {
    const logger = deps.logger ?? createLogger({ level: config.logLevel, service: "control-plane" });
    const metrics = deps.metrics ?? createMetrics({ defaultMetrics: true });
    const counters = deps.counters ?? (await openCounterStore(config, logger, deps.clock ?? Date.now));
    // Replicas sharing Redis decide windows by Redis's clock, so local skew does not split them.
    const clock = deps.clock ?? (counters instanceof RedisCounterStore ? counters.now : Date.now);
    const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir, logger });
    const repository = new ConfigRepository({ db: database });
    const ledger = new Ledger({ db: database, logger, spool: new LedgerSpool(config.spoolDir) });
    await ledger.ensurePartitions(clock());
    const audit = new AuditLog({ db: database, logger, clock });
    const signer = new ReservationSigner(await repository.getOrCreateSecret("reservation_signing_key", () => randomBytes(32).toString("base64url")));
    const credentials = new CredentialVerifier(config.jwt, clock);
    const policy = new PolicyManager({ repository, audit, metrics, logger, defaultFailurePolicy: config.failurePolicy, pollIntervalMs: 5_000, clock });
    await policy.start();
    let demoApiKey;
    if (config.demo) {
        demoApiKey = generateApiKeySecret();
        await policy.apply(demoBundle(demoApiKey), { dryRun: false, actor: "demo" });
    }
    const snapshot = () => policy.snapshot();
    const rebuild = new CounterRebuild({ counters, ledger, policy: snapshot, metrics, logger, clock });
    const engine = new DecisionEngine({
        policy: snapshot, credentials, counters, rebuild, signer, audit, metrics, logger, clock,
        settings: { leaseTtlMs: config.leaseTtlMs, defaultMaxOutputTokens: config.defaultMaxOutputTokens, alertThresholds: config.alertThresholds },
    });
    const settlement = new Settlement({
        policy: snapshot, credentials, counters, rebuild, signer, ledger, audit, metrics, logger, clock,
        settings: { leaseTtlMs: config.leaseTtlMs, maxLeaseTtlMs: config.maxLeaseTtlMs, recordGraceMs: 30_000, sweepIntervalMs: 1_000 },
    });
    // Every tenant's counters in one read of the ledger, rather than one query per tenant on its first call.
    const warm = (tenants, trigger) => rebuild.warmAll(tenants, trigger).catch((err) => logger.error({ err: String(err) }, "counter rebuild failed; each tenant rebuilds on its first call"));
    await warm(snapshot().tenantIds(), "start");
    // Tenants a bundle adds are warmed in bulk too (in the background; a call meanwhile rebuilds its own tenant).
    policy.onSwap((previous, next) => {
        const added = next.tenantIds().filter((t) => !previous.tenants.has(t));
        if (added.length > 0)
            void warm(added, "bundle");
    });
    settlement.start();
    const partitions = setInterval(() => {
        void maintainLedger(ledger, clock(), config.ledgerRetentionMonths).catch((err) => logger.error({ err }, "ledger maintenance failed"));
    }, 3_600_000);
    partitions.unref();
    const server = new grpc.Server({ "grpc.max_receive_message_length": 8 * 1024 * 1024, "grpc.keepalive_permit_without_calls": 1 });
    const admissionHandlers = new AdmissionHandlers({ engine, settlement, credentials, policy: snapshot, adminToken: config.adminToken });
    const policyHandlers = new PolicyHandlers({ policy, ledger, audit, counters, adminToken: config.adminToken, clock });
    const limit = new InFlightLimit(config.maxInFlight, metrics.inFlight);
    addAdmissionServices(server, { admission: admissionHandlers, policy: policyHandlers, metrics, logger, limit });
    addExtAuthz(server, { engine, metrics, limit, logger });
    const health = addHealthService(server, ["admission.v1.AdmissionService", "admission.v1.PolicyService", "envoy.service.auth.v3.Authorization"]);
    addReflection(server, [file_admission_v1_admission, file_admission_v1_policy_service, file_envoy_service_auth_v3_external_auth]);
    const grpcPort = await new Promise((resolve, reject) => {
        server.bindAsync(`${config.grpcHost}:${config.grpcPort}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
    });
    const http = createHttpServer({
        registry: metrics.registry,
        logger,
        fallback: connectRoutes({ admission: admissionHandlers, policy: policyHandlers, limit, logger }),
        requestTimeoutMs: config.httpRequestTimeoutMs,
        headersTimeoutMs: config.httpHeadersTimeoutMs,
        // Without the database, Settles are spooled and Admits still decide: degraded, not down.
        degradedOnly: ["database"],
        checks: {
            policy: async () => {
                if (policy.snapshot().version === 0)
                    throw new Error("no policy loaded");
            },
            database: async () => {
                await database.ping();
                if (ledger.spoolPending())
                    throw new Error("ledger rows spooled, replaying");
            },
            counters: () => counters.ping(),
        },
    });
    const httpPort = await listen(http, config.grpcHost, config.httpPort);
    logger.info({ grpcPort, httpPort, database: database.kind, counters: counters.constructor.name }, "control plane ready");
    let stopping;
    const stop = () => {
        stopping ??= (async () => {
            health.shutdown();
            await new Promise((resolve) => {
                const force = setTimeout(() => {
                    server.forceShutdown();
                    resolve();
                }, config.shutdownGraceMs);
                server.tryShutdown(() => {
                    clearTimeout(force);
                    resolve();
                });
            });
            await new Promise((resolve) => http.close(() => resolve()));
            clearInterval(partitions);
            await settlement.stop();
            await policy.stop();
            await ledger.close();
            await audit.close();
            await counters.close();
            await database.close();
            logger.info("control plane stopped");
        })();
        return stopping;
    };
    return { grpcPort, httpPort, adminToken: config.adminToken, demoApiKey, logger, metrics, policy, settlement, counters, ledger, audit, database, stop };
}
/** Redis (or Redis Cluster) when configured, otherwise counters in this process. */
async function openCounterStore(config, logger, clock) {
    if (config.redisUrl || config.redisClusterNodes?.length) {
        return RedisCounterStore.connect({ url: config.redisUrl, clusterNodes: config.redisClusterNodes, keyPrefix: config.redisKeyPrefix, logger });
    }
    return new MemoryCounterStore({ clock });
}
async function maintainLedger(ledger, nowMs, retentionMonths) {
    await ledger.ensurePartitions(nowMs);
    const d = new Date(nowMs);
    await ledger.dropPartitionsBefore(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - retentionMonths, 1));
}
function listen(server, host, port) {
    return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
            const address = server.address();
            resolve(typeof address === "object" && address ? address.port : port);
        });
    });
}
export { demoApiKeyId };
//# sourceMappingURL=app.js.map
import { randomBytes } from "node:crypto";
import { FailurePolicy } from "../gen/admission/v1/policy_pb.js";
import { CredentialVerifier } from "./credentials.js";
export class ConfigError extends Error {
    constructor(message) {
        super(message);
        this.name = "ConfigError";
    }
}
export const defaultControlPlaneConfig = {
    grpcHost: "0.0.0.0",
    grpcPort: 50051,
    httpPort: 9464,
    adminToken: "",
    adminTokenGenerated: false,
    dataDir: "./.data",
    spoolDir: "./.spool",
    demo: false,
    redisKeyPrefix: "adm",
    leaseTtlMs: 300_000,
    maxLeaseTtlMs: 3_600_000,
    failurePolicy: FailurePolicy.FAIL_CLOSED,
    defaultMaxOutputTokens: 4096,
    alertThresholds: [0.8, 1],
    jwt: { algorithms: [], clockToleranceSec: 30 },
    logLevel: "info",
    maxInFlight: 20_000,
    ledgerRetentionMonths: 24,
    shutdownGraceMs: 10_000,
    httpRequestTimeoutMs: 30_000,
    httpHeadersTimeoutMs: 10_000,
};
export function loadControlPlaneConfig(env) {
    const d = defaultControlPlaneConfig;
    const givenToken = env.ADMISSION_ADMIN_TOKEN ?? "";
    if (givenToken && givenToken.length < 16)
        throw new ConfigError("ADMISSION_ADMIN_TOKEN must be at least 16 characters");
    const hs256Secret = env.ADMISSION_JWT_HS256_SECRET || undefined;
    if (hs256Secret && hs256Secret.length < 32)
        throw new ConfigError("ADMISSION_JWT_HS256_SECRET must be at least 32 characters");
    const publicKeyPems = env.ADMISSION_JWT_PUBLIC_KEY_FILES ? CredentialVerifier.readPemFiles(env.ADMISSION_JWT_PUBLIC_KEY_FILES) : [];
    const jwksUrl = env.ADMISSION_JWT_JWKS_URL || undefined;
    const derived = [...(hs256Secret ? ["HS256"] : []), ...(publicKeyPems.length > 0 || jwksUrl ? ["RS256", "ES256"] : [])];
    const algorithms = env.ADMISSION_JWT_ALGORITHMS ? list(env.ADMISSION_JWT_ALGORITHMS) : derived;
    for (const alg of algorithms) {
        if (!["HS256", "RS256", "ES256"].includes(alg))
            throw new ConfigError(`ADMISSION_JWT_ALGORITHMS: ${alg} is not allowed (HS256, RS256, ES256)`);
    }
    const config = {
        grpcHost: env.ADMISSION_GRPC_HOST || d.grpcHost,
        grpcPort: int(env, "ADMISSION_GRPC_PORT", d.grpcPort, 0, 65535),
        httpPort: int(env, "ADMISSION_HTTP_PORT", d.httpPort, 0, 65535),
        adminToken: givenToken || randomBytes(24).toString("base64url"),
        adminTokenGenerated: !givenToken,
        dataDir: env.ADMISSION_DATA_DIR || d.dataDir,
        spoolDir: env.ADMISSION_SPOOL_DIR || d.spoolDir,
        demo: flag(env, "ADMISSION_DEMO", d.demo),
        databaseUrl: env.DATABASE_URL || undefined,
        redisUrl: env.REDIS_URL || undefined,
        redisClusterNodes: env.REDIS_CLUSTER_NODES ? list(env.REDIS_CLUSTER_NODES) : undefined,
        redisKeyPrefix: env.ADMISSION_REDIS_PREFIX || d.redisKeyPrefix,
        leaseTtlMs: int(env, "ADMISSION_LEASE_TTL_MS", d.leaseTtlMs, 1_000, 86_400_000),
        maxLeaseTtlMs: int(env, "ADMISSION_MAX_LEASE_TTL_MS", d.maxLeaseTtlMs, 1_000, 86_400_000),
        failurePolicy: failurePolicy(env.ADMISSION_FAILURE_POLICY),
        defaultMaxOutputTokens: int(env, "ADMISSION_DEFAULT_MAX_OUTPUT_TOKENS", d.defaultMaxOutputTokens, 1, 10_000_000),
        alertThresholds: env.ADMISSION_ALERT_THRESHOLDS ? thresholds(env.ADMISSION_ALERT_THRESHOLDS) : d.alertThresholds,
        jwt: {
            algorithms,
            hs256Secret,
            publicKeyPems,
            jwksUrl,
            issuer: env.ADMISSION_JWT_ISSUER || undefined,
            audience: env.ADMISSION_JWT_AUDIENCE || undefined,
            clockToleranceSec: int(env, "ADMISSION_JWT_CLOCK_TOLERANCE_SEC", d.jwt.clockToleranceSec, 0, 600),
        },
        logLevel: env.LOG_LEVEL || d.logLevel,
        maxInFlight: int(env, "ADMISSION_MAX_IN_FLIGHT", d.maxInFlight, 1, 10_000_000),
        ledgerRetentionMonths: int(env, "ADMISSION_LEDGER_RETENTION_MONTHS", d.ledgerRetentionMonths, 1, 1200),
        shutdownGraceMs: int(env, "ADMISSION_SHUTDOWN_GRACE_MS", d.shutdownGraceMs, 0, 600_000),
        httpRequestTimeoutMs: int(env, "ADMISSION_HTTP_REQUEST_TIMEOUT_MS", d.httpRequestTimeoutMs, 100, 3_600_000),
        httpHeadersTimeoutMs: int(env, "ADMISSION_HTTP_HEADERS_TIMEOUT_MS", d.httpHeadersTimeoutMs, 100, 3_600_000),
    };
    if (config.httpHeadersTimeoutMs > config.httpRequestTimeoutMs)
        throw new ConfigError("ADMISSION_HTTP_HEADERS_TIMEOUT_MS must not exceed ADMISSION_HTTP_REQUEST_TIMEOUT_MS");
    return config;
}
function list(value) {
    return value.split(",").map((s) => s.trim()).filter(Boolean);
}
function int(env, name, fallback, min, max) {
    const raw = env[name];
    if (raw === undefined || raw === "")
        return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max)
        throw new ConfigError(`${name} must be an integer between ${min} and ${max}, got "${raw}"`);
    return value;
}
function flag(env, name, fallback) {
    const raw = env[name];
    if (raw === undefined || raw === "")
        return fallback;
    if (["1", "true", "yes"].includes(raw.toLowerCase()))
        return true;
    if (["0", "false", "no"].includes(raw.toLowerCase()))
        return false;
    throw new ConfigError(`${name} must be 1 or 0, got "${raw}"`);
}
function failurePolicy(raw) {
    if (!raw)
        return FailurePolicy.FAIL_CLOSED;
    const name = raw.toUpperCase().replace(/^FAILURE_POLICY_/, "");
    if (name === "FAIL_CLOSED")
        return FailurePolicy.FAIL_CLOSED;
    if (name === "FAIL_OPEN")
        return FailurePolicy.FAIL_OPEN;
    throw new ConfigError(`ADMISSION_FAILURE_POLICY must be FAIL_CLOSED or FAIL_OPEN, got "${raw}"`);
}
function thresholds(raw) {
    const values = list(raw).map(Number);
    if (values.length === 0 || values.some((v) => !(v > 0 && v <= 1)))
        throw new ConfigError("ADMISSION_ALERT_THRESHOLDS must be fractions in (0, 1], e.g. 0.8,1");
    return values.sort((a, b) => a - b);
}
//# sourceMappingURL=config.js.map
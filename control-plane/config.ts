import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { FailurePolicy } from "../gen/admission/v1/policy_pb.js";
import { describeKey, jwtAlgorithmsOf, type JwtSettings } from "./credentials.js";
import { PemFileError, readCertificates, readKeyPair, readPublicKey, type KeyPair } from "./pem-files.js";
import { tracingOf, type TracingConfig } from "./tracing.js";

/** TLS on both ports: the server's certificate chain and key, and for mTLS the CAs client certificates must chain to. */
export interface ServerTls extends KeyPair {
  /** mTLS: gRPC clients must present a certificate signed by one of these (Connect routes too; probes and /metrics need none). */
  readonly clientCaPem?: string;
}

/** Everything the control plane is configured with. Read from the environment here and nowhere else. */
export interface ControlPlaneConfig {
  readonly grpcHost: string;
  /** 0 picks an ephemeral port. */
  readonly grpcPort: number;
  readonly httpPort: number;
  /** TLS for the gRPC and HTTP ports; plaintext when absent. */
  readonly tls?: ServerTls;
  readonly adminToken: string;
  /** True when no ADMISSION_ADMIN_TOKEN was given and one was generated. */
  readonly adminTokenGenerated: boolean;
  /** PGlite directory ("memory://" for an in-memory database). */
  readonly dataDir: string;
  /** Where ledger rows wait, fsync'd, while the database is unreachable. */
  readonly spoolDir: string;
  readonly demo: boolean;
  readonly databaseUrl?: string;
  readonly redisUrl?: string;
  readonly redisClusterNodes?: readonly string[];
  readonly redisKeyPrefix: string;
  readonly leaseTtlMs: number;
  readonly maxLeaseTtlMs: number;
  readonly failurePolicy: FailurePolicy;
  readonly defaultMaxOutputTokens: number;
  readonly alertThresholds: readonly number[];
  readonly jwt: JwtSettings;
  readonly logLevel: string;
  /** RPCs in flight beyond which new ones are shed with RESOURCE_EXHAUSTED. */
  readonly maxInFlight: number;
  readonly ledgerRetentionMonths: number;
  /** Audit events older than this are deleted (in bounded batches, hourly). */
  readonly auditRetentionDays: number;
  readonly shutdownGraceMs: number;
  /** HTTP port (metrics, probes, Connect): the whole request within this, else 408. */
  readonly httpRequestTimeoutMs: number;
  /** HTTP port: the request headers within this, else 408. */
  readonly httpHeadersTimeoutMs: number;
  /** The admin console's built files (served at /console/): `npm run build` writes them to dist/console. */
  readonly consoleDir: string;
  readonly webhooks: {
    /** ADMISSION_WEBHOOK_RETRY_MIN_MS: the first retry's delay (each later one doubles, with jitter). */
    readonly retryMinMs: number;
    /** ADMISSION_WEBHOOK_RETRY_MAX_AGE_MS: events undelivered this long after they were raised are given up. */
    readonly retryMaxAgeMs: number;
    /** ADMISSION_WEBHOOK_TIMEOUT_MS: one attempt at most. */
    readonly timeoutMs: number;
    /** ADMISSION_WEBHOOK_ALLOW_PRIVATE_NETWORKS=1: endpoints may be on loopback, private or link-local addresses. */
    readonly allowPrivateNetworks: boolean;
  };
  /** OpenTelemetry export (the standard OTEL_* variables); undefined: tracing off. */
  readonly tracing?: TracingConfig;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

export const defaultControlPlaneConfig: ControlPlaneConfig = {
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
  auditRetentionDays: 365,
  shutdownGraceMs: 10_000,
  httpRequestTimeoutMs: 30_000,
  httpHeadersTimeoutMs: 10_000,
  // This module is dist/control-plane/config.js once built.
  consoleDir: fileURLToPath(new URL("../console/", import.meta.url)),
  webhooks: { retryMinMs: 5_000, retryMaxAgeMs: 86_400_000, timeoutMs: 10_000, allowPrivateNetworks: false },
};

export function loadControlPlaneConfig(env: NodeJS.ProcessEnv): ControlPlaneConfig {
  const d = defaultControlPlaneConfig;
  const givenToken = env.ADMISSION_ADMIN_TOKEN ?? "";
  if (givenToken && givenToken.length < 16) throw new ConfigError("ADMISSION_ADMIN_TOKEN must be at least 16 characters");
  const hs256Secret = env.ADMISSION_JWT_HS256_SECRET || undefined;
  if (hs256Secret && hs256Secret.length < 32) throw new ConfigError("ADMISSION_JWT_HS256_SECRET must be at least 32 characters");
  const publicKeys = list(env.ADMISSION_JWT_PUBLIC_KEY_FILES ?? "").map((path) => ({ path, ...pem(() => readPublicKey("ADMISSION_JWT_PUBLIC_KEY_FILES", path)) }));
  const jwksUrl = env.ADMISSION_JWT_JWKS_URL || undefined;
  const derived = [...(hs256Secret ? ["HS256"] : []), ...(publicKeys.length > 0 || jwksUrl ? ["RS256", "ES256"] : [])];
  const algorithms = env.ADMISSION_JWT_ALGORITHMS ? list(env.ADMISSION_JWT_ALGORITHMS) : derived;
  for (const alg of algorithms) {
    if (!["HS256", "RS256", "ES256"].includes(alg)) throw new ConfigError(`ADMISSION_JWT_ALGORITHMS: ${alg} is not allowed (HS256, RS256, ES256)`);
  }
  // A key no allowed algorithm can use would be skipped silently: every JWT signed with it refused.
  const asymmetric = algorithms.filter((alg) => alg !== "HS256");
  for (const { path, key } of publicKeys) {
    if (!jwtAlgorithmsOf(key).some((alg) => asymmetric.includes(alg))) {
      throw new ConfigError(
        `ADMISSION_JWT_PUBLIC_KEY_FILES: ${path} holds an ${describeKey(key)} key, which none of the allowed algorithms (${asymmetric.join(", ") || "none"}) verifies (RS256: RSA of at least 2048 bits; ES256: P-256)`,
      );
    }
  }
  const config: ControlPlaneConfig = {
    grpcHost: env.ADMISSION_GRPC_HOST || d.grpcHost,
    grpcPort: int(env, "ADMISSION_GRPC_PORT", d.grpcPort, 0, 65535),
    httpPort: int(env, "ADMISSION_HTTP_PORT", d.httpPort, 0, 65535),
    tls: serverTls(env),
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
      publicKeyPems: publicKeys.map((k) => k.spkiPem),
      jwksUrl,
      issuer: env.ADMISSION_JWT_ISSUER || undefined,
      audience: env.ADMISSION_JWT_AUDIENCE || undefined,
      clockToleranceSec: int(env, "ADMISSION_JWT_CLOCK_TOLERANCE_SEC", d.jwt.clockToleranceSec, 0, 600),
    },
    logLevel: env.LOG_LEVEL || d.logLevel,
    maxInFlight: int(env, "ADMISSION_MAX_IN_FLIGHT", d.maxInFlight, 1, 10_000_000),
    ledgerRetentionMonths: int(env, "ADMISSION_LEDGER_RETENTION_MONTHS", d.ledgerRetentionMonths, 1, 1200),
    auditRetentionDays: int(env, "ADMISSION_AUDIT_RETENTION_DAYS", d.auditRetentionDays, 1, 36_500),
    shutdownGraceMs: int(env, "ADMISSION_SHUTDOWN_GRACE_MS", d.shutdownGraceMs, 0, 600_000),
    httpRequestTimeoutMs: int(env, "ADMISSION_HTTP_REQUEST_TIMEOUT_MS", d.httpRequestTimeoutMs, 100, 3_600_000),
    httpHeadersTimeoutMs: int(env, "ADMISSION_HTTP_HEADERS_TIMEOUT_MS", d.httpHeadersTimeoutMs, 100, 3_600_000),
    consoleDir: d.consoleDir,
    webhooks: {
      retryMinMs: int(env, "ADMISSION_WEBHOOK_RETRY_MIN_MS", d.webhooks.retryMinMs, 10, 3_600_000),
      retryMaxAgeMs: int(env, "ADMISSION_WEBHOOK_RETRY_MAX_AGE_MS", d.webhooks.retryMaxAgeMs, 0, 30 * 86_400_000),
      timeoutMs: int(env, "ADMISSION_WEBHOOK_TIMEOUT_MS", d.webhooks.timeoutMs, 100, 120_000),
      allowPrivateNetworks: flag(env, "ADMISSION_WEBHOOK_ALLOW_PRIVATE_NETWORKS", d.webhooks.allowPrivateNetworks),
    },
    tracing: tracingOf(env, "control-plane", (message) => new ConfigError(message)),
  };
  if (config.leaseTtlMs > config.maxLeaseTtlMs) throw new ConfigError("ADMISSION_LEASE_TTL_MS must not exceed ADMISSION_MAX_LEASE_TTL_MS (a lease's whole lifetime)");
  if (config.httpHeadersTimeoutMs > config.httpRequestTimeoutMs) throw new ConfigError("ADMISSION_HTTP_HEADERS_TIMEOUT_MS must not exceed ADMISSION_HTTP_REQUEST_TIMEOUT_MS");
  return config;
}

/** ADMISSION_TLS_CERT_FILE and _KEY_FILE (both or neither), and ADMISSION_TLS_CLIENT_CA_FILE for mTLS. */
function serverTls(env: NodeJS.ProcessEnv): ServerTls | undefined {
  const certFile = env.ADMISSION_TLS_CERT_FILE || undefined;
  const keyFile = env.ADMISSION_TLS_KEY_FILE || undefined;
  const clientCaFile = env.ADMISSION_TLS_CLIENT_CA_FILE || undefined;
  if (!certFile && !keyFile) {
    if (clientCaFile) throw new ConfigError("ADMISSION_TLS_CLIENT_CA_FILE needs ADMISSION_TLS_CERT_FILE and ADMISSION_TLS_KEY_FILE (mTLS is TLS with client certificates)");
    return undefined;
  }
  if (!certFile || !keyFile) throw new ConfigError("ADMISSION_TLS_CERT_FILE and ADMISSION_TLS_KEY_FILE must be set together");
  return pem(() => ({
    ...readKeyPair({ variable: "ADMISSION_TLS_CERT_FILE", path: certFile }, { variable: "ADMISSION_TLS_KEY_FILE", path: keyFile }),
    clientCaPem: clientCaFile ? readCertificates("ADMISSION_TLS_CLIENT_CA_FILE", clientCaFile) : undefined,
  }));
}

/** Runs a PEM file reader; its error becomes a ConfigError. */
function pem<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof PemFileError) throw new ConfigError(err.message);
    throw err;
  }
}

function list(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter(Boolean);
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) throw new ConfigError(`${name} must be an integer between ${min} and ${max}, got "${raw}"`);
  return value;
}

function flag(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (["1", "true", "yes"].includes(raw.toLowerCase())) return true;
  if (["0", "false", "no"].includes(raw.toLowerCase())) return false;
  throw new ConfigError(`${name} must be 1 or 0, got "${raw}"`);
}

function failurePolicy(raw: string | undefined): FailurePolicy {
  if (!raw) return FailurePolicy.FAIL_CLOSED;
  const name = raw.toUpperCase().replace(/^FAILURE_POLICY_/, "");
  if (name === "FAIL_CLOSED") return FailurePolicy.FAIL_CLOSED;
  if (name === "FAIL_OPEN") return FailurePolicy.FAIL_OPEN;
  throw new ConfigError(`ADMISSION_FAILURE_POLICY must be FAIL_CLOSED or FAIL_OPEN, got "${raw}"`);
}

function thresholds(raw: string): number[] {
  const values = list(raw).map(Number);
  if (values.length === 0 || values.some((v) => !(v > 0 && v <= 1))) throw new ConfigError("ADMISSION_ALERT_THRESHOLDS must be fractions in (0, 1], e.g. 0.8,1");
  return values.sort((a, b) => a - b);
}

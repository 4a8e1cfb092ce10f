import { readFileSync } from "node:fs";
import type { ProviderApi } from "../control-plane/llm-request.js";
import { PemFileError, readCertificates, readKeyPair } from "../control-plane/pem-files.js";
import { tracingOf, type TracingConfig } from "../control-plane/tracing.js";
import type { ControlPlaneTls } from "./control-plane-client.js";

/**
 * A provider: one speaking OpenAI's API (OpenAI, Gemini's or xAI's compatible
 * endpoints, Ollama, the mock) or Anthropic's (Anthropic, the mock).
 */
export interface ProviderConfig {
  readonly name: string;
  /** e.g. https://api.openai.com/v1; requests go to baseUrl + the path after /v1. */
  readonly baseUrl: string;
  /** The API it speaks (default "openai"): requests of the other API's routes are never sent to it. */
  readonly api?: ProviderApi;
  /** Sent as `Authorization: Bearer` (OpenAI's API) or `x-api-key` (Anthropic's); empty for none. Never logged, never shown to clients. */
  readonly apiKey: string;
  /** Extra headers the provider needs (lowercase names). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** What the data plane does with a request when the control plane cannot be reached. */
export type FailurePolicy = "FAIL_CLOSED" | "FAIL_OPEN";

/** A path prefix bound to a task: `/draft/v1/chat/completions` runs as LLM2_DRAFT. */
export interface TaskRoute {
  readonly prefix: string;
  readonly task: string;
}

/**
 * Everything the data plane is configured with. Read from the environment
 * here and nowhere else (provider keys included, resolved from `apiKeyEnv`).
 */
export interface DataPlaneConfig {
  readonly host: string;
  /** 0 picks an ephemeral port. */
  readonly port: number;
  /** host:port of the control plane's gRPC endpoint. */
  readonly controlPlaneAddr: string;
  /** TLS (and mTLS) to the control plane; plaintext when absent. */
  readonly controlPlaneTls?: ControlPlaneTls;
  /** Providers by name (a model's `provider` in the bundle names one); undefined: the built-in mock provider, started in-process. */
  readonly providers: readonly ProviderConfig[] | undefined;
  readonly failurePolicy: FailurePolicy;
  /** Request bodies above this are answered 413 without being read further. */
  readonly maxBodyBytes: number;
  /** Task when neither the `x-llm-task` header nor a task route names one; empty: the request is refused. */
  readonly defaultTask: string;
  readonly taskRoutes: readonly TaskRoute[];
  /** Where undeliverable Settles wait, fsync'd, for the control plane. */
  readonly spoolDir: string;
  readonly admitTimeoutMs: number;
  readonly settleTimeoutMs: number;
  /** Time a client has to send its whole request (headers and body); a trickled body is cut off with 408 after it. */
  readonly requestTimeoutMs: number;
  /** Time a client has to send its request headers. */
  readonly headersTimeoutMs: number;
  /** Upstream socket inactivity after which the provider call is abandoned. */
  readonly upstreamTimeoutMs: number;
  /** Session stream reconnect backoff. */
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  /** Spool replay backoff. */
  readonly replayMinMs: number;
  readonly replayMaxMs: number;
  /** FAIL_OPEN: how long after its last admission a credential may still be served while the control plane is unreachable. */
  readonly failOpenTtlMs: number;
  /** FAIL_OPEN: credentials remembered at most (least recently admitted forgotten first). */
  readonly failOpenMaxCredentials: number;
  /** Where `GET /metrics` listens: its own port, off the proxy's (the series name tenants). 0 picks an ephemeral port. */
  readonly metricsHost: string;
  readonly metricsPort: number;
  readonly logLevel: string;
  /** OpenTelemetry export (the standard OTEL_* variables); undefined: tracing off. */
  readonly tracing?: TracingConfig;
}

export class DataPlaneConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DataPlaneConfigError";
  }
}

/** The API a provider speaks. */
export function providerApi(provider: ProviderConfig): ProviderApi {
  return provider.api ?? "openai";
}

/** The built-in mock provider's names, for each API it speaks (models in the demo bundle use them). */
export const mockProviderName = "mock";
export const mockAnthropicProviderName = "mock-anthropic";

export const defaultDataPlaneConfig: DataPlaneConfig = {
  host: "0.0.0.0",
  port: 8080,
  controlPlaneAddr: "127.0.0.1:50051",
  providers: undefined,
  failurePolicy: "FAIL_CLOSED",
  maxBodyBytes: 4 * 1024 * 1024,
  defaultTask: "",
  taskRoutes: [],
  spoolDir: "./.spool/data-plane",
  admitTimeoutMs: 2_000,
  settleTimeoutMs: 5_000,
  requestTimeoutMs: 30_000,
  headersTimeoutMs: 10_000,
  upstreamTimeoutMs: 600_000,
  reconnectMinMs: 100,
  reconnectMaxMs: 5_000,
  replayMinMs: 1_000,
  replayMaxMs: 30_000,
  failOpenTtlMs: 300_000,
  failOpenMaxCredentials: 100_000,
  metricsHost: "127.0.0.1",
  metricsPort: 9465,
  logLevel: "info",
};

/**
 * Environment variables (all optional):
 *
 * | variable | meaning | default |
 * |---|---|---|
 * | `PROXY_PORT`, `PROXY_HOST` | where the proxy listens | `8080`, `0.0.0.0` |
 * | `CONTROL_PLANE_ADDR` | control plane gRPC `host:port`, or a target naming several replicas (`dns:///name:port`, `ipv4:a:port,b:port`) | `127.0.0.1:50051` |
 * | `CONTROL_PLANE_TLS` | `1`: TLS to the control plane (implied by any of the next three) | `0` |
 * | `CONTROL_PLANE_CA_FILE` | PEM CAs the control plane's certificate must chain to | the system's roots |
 * | `CONTROL_PLANE_CERT_FILE`, `CONTROL_PLANE_KEY_FILE` | mTLS: this client's certificate chain and key (both or neither) | none |
 * | `CONTROL_PLANE_TLS_SERVER_NAME` | name the control plane's certificate must carry, when not the address's host | the host |
 * | `PROVIDERS_FILE` | JSON `{"providers":[{"name","baseUrl","api"?,"apiKeyEnv"?,"headers"?}]}`; `api` is `"openai"` (default) or `"anthropic"` | built-in mock provider |
 * | `PROXY_FAILURE_POLICY` | control plane unreachable: `FAIL_CLOSED` (503) or `FAIL_OPEN` | `FAIL_CLOSED` |
 * | `PROXY_MAX_BODY_BYTES` | request body limit (413 above) | 4 MiB |
 * | `PROXY_DEFAULT_TASK` | task when no header or task route names one | none (400) |
 * | `PROXY_TASK_ROUTES` | `/draft=LLM2_DRAFT,/prior-art=LLM1_PRIOR_ART`: `/draft/v1/...` runs as that task | none |
 * | `PROXY_SPOOL_DIR` | settle spool directory | `./.spool/data-plane` |
 * | `PROXY_ADMIT_TIMEOUT_MS`, `PROXY_SETTLE_TIMEOUT_MS` | per-call deadlines to the control plane | 2000, 5000 |
 * | `PROXY_REQUEST_TIMEOUT_MS` | a client's whole request (headers and body) must arrive within this, else 408 | 30000 |
 * | `PROXY_HEADERS_TIMEOUT_MS` | a client's request headers must arrive within this (at most the request timeout), else 408 | 10000 |
 * | `PROXY_UPSTREAM_TIMEOUT_MS` | provider socket inactivity limit | 600000 |
 * | `PROXY_RECONNECT_MIN_MS`, `PROXY_RECONNECT_MAX_MS` | Session stream reconnect backoff | 100, 5000 |
 * | `PROXY_REPLAY_MIN_MS`, `PROXY_REPLAY_MAX_MS` | spool replay backoff | 1000, 30000 |
 * | `PROXY_FAIL_OPEN_TTL_MS` | FAIL_OPEN: a credential is served during an outage only on what it was admitted for here within this | 300000 |
 * | `PROXY_FAIL_OPEN_MAX_CREDENTIALS` | FAIL_OPEN: credentials remembered (as keyed digests) at most | 100000 |
 * | `PROXY_METRICS_HOST`, `PROXY_METRICS_PORT` | where `GET /metrics` listens (not on the proxy's port) | `127.0.0.1`, `9465` |
 * | `LOG_LEVEL` | pino level | `info` |
 */
export function loadDataPlaneConfig(env: NodeJS.ProcessEnv): DataPlaneConfig {
  const d = defaultDataPlaneConfig;
  const providersFile = env.PROVIDERS_FILE || undefined;
  const providers = providersFile ? readProvidersFile(providersFile, env) : undefined;
  if (env.PROXY_FAIL_OPEN_PROVIDER) {
    throw new DataPlaneConfigError("PROXY_FAIL_OPEN_PROVIDER is no longer read: FAIL_OPEN serves a credential only on the routes it was admitted for (PROXY_FAIL_OPEN_TTL_MS); unset it");
  }
  const config: DataPlaneConfig = {
    host: env.PROXY_HOST || d.host,
    port: int(env, "PROXY_PORT", d.port, 0, 65535),
    controlPlaneAddr: address(env.CONTROL_PLANE_ADDR || d.controlPlaneAddr),
    controlPlaneTls: readControlPlaneTls(
      {
        enabled: env.CONTROL_PLANE_TLS ? flag("CONTROL_PLANE_TLS", env.CONTROL_PLANE_TLS) : undefined,
        caFile: env.CONTROL_PLANE_CA_FILE, certFile: env.CONTROL_PLANE_CERT_FILE, keyFile: env.CONTROL_PLANE_KEY_FILE, serverName: env.CONTROL_PLANE_TLS_SERVER_NAME,
      },
      { enabled: "CONTROL_PLANE_TLS", caFile: "CONTROL_PLANE_CA_FILE", certFile: "CONTROL_PLANE_CERT_FILE", keyFile: "CONTROL_PLANE_KEY_FILE", serverName: "CONTROL_PLANE_TLS_SERVER_NAME" },
    ),
    providers,
    failurePolicy: failurePolicy(env.PROXY_FAILURE_POLICY),
    maxBodyBytes: int(env, "PROXY_MAX_BODY_BYTES", d.maxBodyBytes, 1024, 1024 * 1024 * 1024),
    defaultTask: task("PROXY_DEFAULT_TASK", env.PROXY_DEFAULT_TASK || d.defaultTask),
    taskRoutes: env.PROXY_TASK_ROUTES ? parseTaskRoutes(env.PROXY_TASK_ROUTES) : d.taskRoutes,
    spoolDir: env.PROXY_SPOOL_DIR || d.spoolDir,
    admitTimeoutMs: int(env, "PROXY_ADMIT_TIMEOUT_MS", d.admitTimeoutMs, 10, 600_000),
    settleTimeoutMs: int(env, "PROXY_SETTLE_TIMEOUT_MS", d.settleTimeoutMs, 10, 600_000),
    requestTimeoutMs: int(env, "PROXY_REQUEST_TIMEOUT_MS", d.requestTimeoutMs, 100, 3_600_000),
    headersTimeoutMs: int(env, "PROXY_HEADERS_TIMEOUT_MS", d.headersTimeoutMs, 100, 3_600_000),
    upstreamTimeoutMs: int(env, "PROXY_UPSTREAM_TIMEOUT_MS", d.upstreamTimeoutMs, 100, 3_600_000),
    reconnectMinMs: int(env, "PROXY_RECONNECT_MIN_MS", d.reconnectMinMs, 1, 600_000),
    reconnectMaxMs: int(env, "PROXY_RECONNECT_MAX_MS", d.reconnectMaxMs, 1, 600_000),
    replayMinMs: int(env, "PROXY_REPLAY_MIN_MS", d.replayMinMs, 1, 3_600_000),
    replayMaxMs: int(env, "PROXY_REPLAY_MAX_MS", d.replayMaxMs, 1, 3_600_000),
    failOpenTtlMs: int(env, "PROXY_FAIL_OPEN_TTL_MS", d.failOpenTtlMs, 1_000, 86_400_000),
    failOpenMaxCredentials: int(env, "PROXY_FAIL_OPEN_MAX_CREDENTIALS", d.failOpenMaxCredentials, 1, 10_000_000),
    metricsHost: env.PROXY_METRICS_HOST || d.metricsHost,
    metricsPort: int(env, "PROXY_METRICS_PORT", d.metricsPort, 0, 65535),
    logLevel: env.LOG_LEVEL || d.logLevel,
    tracing: tracingOf(env, "data-plane", (message) => new DataPlaneConfigError(message)),
  };
  if (config.reconnectMinMs > config.reconnectMaxMs) throw new DataPlaneConfigError("PROXY_RECONNECT_MIN_MS must not exceed PROXY_RECONNECT_MAX_MS");
  if (config.headersTimeoutMs > config.requestTimeoutMs) throw new DataPlaneConfigError("PROXY_HEADERS_TIMEOUT_MS must not exceed PROXY_REQUEST_TIMEOUT_MS");
  if (config.metricsPort !== 0 && config.metricsPort === config.port) throw new DataPlaneConfigError(`PROXY_METRICS_PORT must differ from PROXY_PORT (${config.port}): /metrics is not served on the proxy's port`);
  if (config.replayMinMs > config.replayMaxMs) throw new DataPlaneConfigError("PROXY_REPLAY_MIN_MS must not exceed PROXY_REPLAY_MAX_MS");
  return config;
}

/** Parses a providers file; each provider's key is read from the variable its `apiKeyEnv` names. */
export function readProvidersFile(path: string, env: NodeJS.ProcessEnv): ProviderConfig[] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new DataPlaneConfigError(`PROVIDERS_FILE ${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
  return parseProviders(raw, env, `PROVIDERS_FILE ${path}`);
}

export function parseProviders(raw: unknown, env: NodeJS.ProcessEnv, where = "providers"): ProviderConfig[] {
  const list = (raw as { providers?: unknown } | null)?.providers;
  if (!Array.isArray(list) || list.length === 0) throw new DataPlaneConfigError(`${where}: expected {"providers": [{"name", "baseUrl", "apiKeyEnv"}, ...]}`);
  const seen = new Set<string>();
  return list.map((entry: unknown, i) => {
    const p = entry as Record<string, unknown>;
    const at = `${where}: providers[${i}]`;
    if (typeof p?.name !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(p.name)) throw new DataPlaneConfigError(`${at}.name must be 1-64 letters, digits, "_", "-" or "."`);
    if (seen.has(p.name)) throw new DataPlaneConfigError(`${at}: provider "${p.name}" is listed twice`);
    seen.add(p.name);
    if (typeof p.baseUrl !== "string") throw new DataPlaneConfigError(`${at}.baseUrl is required`);
    let url: URL;
    try {
      url = new URL(p.baseUrl);
    } catch {
      throw new DataPlaneConfigError(`${at}.baseUrl "${p.baseUrl}" is not a URL`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new DataPlaneConfigError(`${at}.baseUrl must be http or https`);
    const api = p.api ?? "openai";
    if (api !== "openai" && api !== "anthropic") throw new DataPlaneConfigError(`${at}.api must be "openai" or "anthropic", got ${JSON.stringify(api).slice(0, 50)}`);
    let apiKey = "";
    if (p.apiKeyEnv !== undefined) {
      if (typeof p.apiKeyEnv !== "string" || !p.apiKeyEnv) throw new DataPlaneConfigError(`${at}.apiKeyEnv must name an environment variable`);
      apiKey = env[p.apiKeyEnv] ?? "";
      if (!apiKey) throw new DataPlaneConfigError(`${at}: environment variable ${p.apiKeyEnv} (the key of provider "${p.name}") is not set`);
    }
    const headers: Record<string, string> = {};
    if (p.headers !== undefined) {
      if (typeof p.headers !== "object" || p.headers === null) throw new DataPlaneConfigError(`${at}.headers must be an object of strings`);
      for (const [k, v] of Object.entries(p.headers)) {
        if (typeof v !== "string" || !/^[A-Za-z0-9-]+$/.test(k) || /[\r\n]/.test(v)) throw new DataPlaneConfigError(`${at}.headers.${k} must be a single-line string`);
        headers[k.toLowerCase()] = v;
      }
    }
    return { name: p.name, baseUrl: url.href.replace(/\/+$/, ""), api, apiKey, headers };
  });
}

export function parseTaskRoutes(raw: string): TaskRoute[] {
  const routes = raw.split(",").map((s) => s.trim()).filter(Boolean).map((entry) => {
    const [prefix, name, extra] = entry.split("=");
    if (!prefix || !name || extra !== undefined || !/^\/[A-Za-z0-9_\-/]*[A-Za-z0-9_-]$/.test(prefix)) {
      throw new DataPlaneConfigError(`PROXY_TASK_ROUTES: "${entry}" must look like /prefix=TASK`);
    }
    if (prefix === "/v1" || prefix.startsWith("/v1/")) throw new DataPlaneConfigError(`PROXY_TASK_ROUTES: prefix "${prefix}" would shadow /v1`);
    return { prefix, task: task("PROXY_TASK_ROUTES", name) };
  });
  // Longest prefix first, so /draft/long wins over /draft.
  return routes.sort((a, b) => b.prefix.length - a.prefix.length);
}

/** Where a gateway's TLS settings to the control plane come from (environment variables, a Kong plugin's fields). */
export interface ControlPlaneTlsSettings<T> {
  /** Undefined: TLS when any file or the server name is given. */
  readonly enabled?: T;
  readonly caFile?: T;
  readonly certFile?: T;
  readonly keyFile?: T;
  readonly serverName?: T;
}

/**
 * TLS to the control plane, its files read and checked now (a missing file, one
 * without a certificate, a key that is not the certificate's: an error naming
 * the setting). `names` name each setting in messages.
 */
export function readControlPlaneTls(given: ControlPlaneTlsSettings<string | boolean>, names: Required<ControlPlaneTlsSettings<string>>): ControlPlaneTls | undefined {
  const text = (v: string | boolean | undefined) => (typeof v === "string" && v !== "" ? v : undefined);
  const caFile = text(given.caFile);
  const certFile = text(given.certFile);
  const keyFile = text(given.keyFile);
  const serverName = text(given.serverName);
  const implied = caFile !== undefined || certFile !== undefined || keyFile !== undefined || serverName !== undefined;
  if (given.enabled === false && implied) throw new DataPlaneConfigError(`${names.enabled} is off, but ${[caFile && names.caFile, certFile && names.certFile, keyFile && names.keyFile, serverName && names.serverName].filter(Boolean).join(", ")} asks for TLS`);
  if (given.enabled !== true && !implied) return undefined;
  if ((certFile === undefined) !== (keyFile === undefined)) throw new DataPlaneConfigError(`${names.certFile} and ${names.keyFile} must be set together (mTLS)`);
  if (serverName !== undefined && !/^[A-Za-z0-9.-]{1,253}$/.test(serverName)) throw new DataPlaneConfigError(`${names.serverName} must be a DNS name, got "${serverName}"`);
  try {
    return {
      caPem: caFile ? readCertificates(names.caFile, caFile) : undefined,
      ...(certFile && keyFile ? readKeyPair({ variable: names.certFile, path: certFile }, { variable: names.keyFile, path: keyFile }) : {}),
      serverName,
    };
  } catch (err) {
    if (err instanceof PemFileError) throw new DataPlaneConfigError(err.message);
    throw err;
  }
}

const taskPattern = /^[A-Za-z0-9_.-]{1,64}$/;

/** A task code as sent by clients and operators. */
export function isTaskCode(value: string): boolean {
  return taskPattern.test(value);
}

function task(name: string, value: string): string {
  if (value && !isTaskCode(value)) throw new DataPlaneConfigError(`${name}: "${value}" is not a task code (1-64 letters, digits, "_", "-", ".")`);
  return value;
}

/** host:port, or a gRPC target: dns: (every address of a name), ipv4:/ipv6: (a list), unix:. */
function address(value: string): string {
  if (!/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/.test(value) && !/^(unix|dns|ipv4|ipv6):\S+$/.test(value)) {
    throw new DataPlaneConfigError(`CONTROL_PLANE_ADDR must be host:port or a gRPC target (dns:///name:port, ipv4:a:port,b:port, unix:path), got "${value}"`);
  }
  return value;
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) throw new DataPlaneConfigError(`${name} must be an integer between ${min} and ${max}, got "${raw}"`);
  return value;
}

function flag(name: string, raw: string): boolean {
  if (["1", "true", "yes"].includes(raw.toLowerCase())) return true;
  if (["0", "false", "no"].includes(raw.toLowerCase())) return false;
  throw new DataPlaneConfigError(`${name} must be 1 or 0, got "${raw}"`);
}

function failurePolicy(raw: string | undefined): FailurePolicy {
  if (!raw) return "FAIL_CLOSED";
  const name = raw.toUpperCase().replace(/^FAILURE_POLICY_/, "");
  if (name === "FAIL_CLOSED" || name === "FAIL_OPEN") return name;
  throw new DataPlaneConfigError(`PROXY_FAILURE_POLICY must be FAIL_CLOSED or FAIL_OPEN, got "${raw}"`);
}

import { readFileSync } from "node:fs";

export class DataPlaneConfigError extends Error {}

/** A provider from PROVIDERS_FILE; its key is read from the variable apiKeyEnv names. */
export interface ProviderConfig {
  readonly name: string;
  readonly baseUrl: string;
  readonly apiKey: string;
}

export interface DataPlaneConfig {
  readonly host: string;
  readonly port: number;
  readonly controlPlaneAddr: string;
  /** Undefined: the built-in mock provider. */
  readonly providers: ProviderConfig[] | undefined;
  readonly failurePolicy: "FAIL_CLOSED" | "FAIL_OPEN";
  readonly maxBodyBytes: number;
  readonly defaultTask: string;
  readonly spoolDir: string;
  readonly admitTimeoutMs: number;
  readonly upstreamTimeoutMs: number;
  readonly logLevel: string;
}

export function loadDataPlaneConfig(env: NodeJS.ProcessEnv): DataPlaneConfig {
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const v = Number(raw);
    if (!Number.isInteger(v) || v < min || v > max) throw new DataPlaneConfigError(`${name} must be an integer between ${min} and ${max}, got "${raw}"`);
    return v;
  };
  const policy = (env.PROXY_FAILURE_POLICY || "FAIL_CLOSED").toUpperCase();
  if (policy !== "FAIL_CLOSED" && policy !== "FAIL_OPEN") throw new DataPlaneConfigError(`PROXY_FAILURE_POLICY must be FAIL_CLOSED or FAIL_OPEN, got "${policy}"`);
  return {
    host: env.PROXY_HOST || "0.0.0.0",
    port: int("PROXY_PORT", 8080, 0, 65535),
    controlPlaneAddr: env.CONTROL_PLANE_ADDR || "127.0.0.1:50051",
    providers: env.PROVIDERS_FILE ? readProviders(env.PROVIDERS_FILE, env) : undefined,
    failurePolicy: policy,
    maxBodyBytes: int("PROXY_MAX_BODY_BYTES", 4 * 1024 * 1024, 1024, 512 * 1024 * 1024),
    defaultTask: env.PROXY_DEFAULT_TASK ?? "",
    spoolDir: env.PROXY_SPOOL_DIR || "./.spool-proxy",
    admitTimeoutMs: int("PROXY_ADMIT_TIMEOUT_MS", 2_000, 10, 60_000),
    upstreamTimeoutMs: int("PROXY_UPSTREAM_TIMEOUT_MS", 600_000, 100, 3_600_000),
    logLevel: env.LOG_LEVEL || "info",
  };
}

/** PROVIDERS_FILE: {"providers": [{"name", "baseUrl", "apiKeyEnv"}]}. */
export function readProviders(path: string, env: NodeJS.ProcessEnv): ProviderConfig[] {
  const parsed = JSON.parse(readFileSync(path, "utf8")) as { providers?: Array<{ name?: string; baseUrl?: string; apiKeyEnv?: string }> };
  if (!Array.isArray(parsed.providers)) throw new DataPlaneConfigError(`${path}: expected {"providers": [...]}`);
  return parsed.providers.map((p, i) => {
    if (!p.name || !p.baseUrl) throw new DataPlaneConfigError(`${path}: providers[${i}] needs name and baseUrl`);
    const url = new URL(p.baseUrl);
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new DataPlaneConfigError(`${path}: providers[${i}].baseUrl must be http(s)`);
    return { name: p.name, baseUrl: p.baseUrl.replace(/\/+$/, ""), apiKey: p.apiKeyEnv ? env[p.apiKeyEnv] ?? "" : "" };
  });
}

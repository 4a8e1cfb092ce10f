import { readFileSync } from "node:fs";
export class DataPlaneConfigError extends Error {
    constructor(message) {
        super(message);
        this.name = "DataPlaneConfigError";
    }
}
/** The built-in mock provider's name (models in the demo bundle use it). */
export const mockProviderName = "mock";
export const defaultDataPlaneConfig = {
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
    failOpenProvider: "",
    logLevel: "info",
};
/**
 * Environment variables (all optional):
 *
 * | variable | meaning | default |
 * |---|---|---|
 * | `PROXY_PORT`, `PROXY_HOST` | where the proxy listens | `8080`, `0.0.0.0` |
 * | `CONTROL_PLANE_ADDR` | control plane gRPC `host:port`, or a target naming several replicas (`dns:///name:port`, `ipv4:a:port,b:port`) | `127.0.0.1:50051` |
 * | `PROVIDERS_FILE` | JSON `{"providers":[{"name","baseUrl","apiKeyEnv"?,"headers"?}]}` | built-in mock provider |
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
 * | `PROXY_FAIL_OPEN_PROVIDER` | FAIL_OPEN, route unknown: provider to send the request to | first provider |
 * | `LOG_LEVEL` | pino level | `info` |
 */
export function loadDataPlaneConfig(env) {
    const d = defaultDataPlaneConfig;
    const providersFile = env.PROVIDERS_FILE || undefined;
    const providers = providersFile ? readProvidersFile(providersFile, env) : undefined;
    const failOpenProvider = env.PROXY_FAIL_OPEN_PROVIDER || "";
    if (failOpenProvider && providers && !providers.some((p) => p.name === failOpenProvider)) {
        throw new DataPlaneConfigError(`PROXY_FAIL_OPEN_PROVIDER "${failOpenProvider}" is not in ${providersFile}`);
    }
    const config = {
        host: env.PROXY_HOST || d.host,
        port: int(env, "PROXY_PORT", d.port, 0, 65535),
        controlPlaneAddr: address(env.CONTROL_PLANE_ADDR || d.controlPlaneAddr),
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
        failOpenProvider,
        logLevel: env.LOG_LEVEL || d.logLevel,
    };
    if (config.reconnectMinMs > config.reconnectMaxMs)
        throw new DataPlaneConfigError("PROXY_RECONNECT_MIN_MS must not exceed PROXY_RECONNECT_MAX_MS");
    if (config.headersTimeoutMs > config.requestTimeoutMs)
        throw new DataPlaneConfigError("PROXY_HEADERS_TIMEOUT_MS must not exceed PROXY_REQUEST_TIMEOUT_MS");
    if (config.replayMinMs > config.replayMaxMs)
        throw new DataPlaneConfigError("PROXY_REPLAY_MIN_MS must not exceed PROXY_REPLAY_MAX_MS");
    return config;
}
/** Parses a providers file; each provider's key is read from the variable its `apiKeyEnv` names. */
export function readProvidersFile(path, env) {
    let raw;
    try {
        raw = JSON.parse(readFileSync(path, "utf8"));
    }
    catch (err) {
        throw new DataPlaneConfigError(`PROVIDERS_FILE ${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
    return parseProviders(raw, env, `PROVIDERS_FILE ${path}`);
}
export function parseProviders(raw, env, where = "providers") {
    const list = raw?.providers;
    if (!Array.isArray(list) || list.length === 0)
        throw new DataPlaneConfigError(`${where}: expected {"providers": [{"name", "baseUrl", "apiKeyEnv"}, ...]}`);
    const seen = new Set();
    return list.map((entry, i) => {
        const p = entry;
        const at = `${where}: providers[${i}]`;
        if (typeof p?.name !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(p.name))
            throw new DataPlaneConfigError(`${at}.name must be 1-64 letters, digits, "_", "-" or "."`);
        if (seen.has(p.name))
            throw new DataPlaneConfigError(`${at}: provider "${p.name}" is listed twice`);
        seen.add(p.name);
        if (typeof p.baseUrl !== "string")
            throw new DataPlaneConfigError(`${at}.baseUrl is required`);
        let url;
        try {
            url = new URL(p.baseUrl);
        }
        catch {
            throw new DataPlaneConfigError(`${at}.baseUrl "${p.baseUrl}" is not a URL`);
        }
        if (url.protocol !== "http:" && url.protocol !== "https:")
            throw new DataPlaneConfigError(`${at}.baseUrl must be http or https`);
        let apiKey = "";
        if (p.apiKeyEnv !== undefined) {
            if (typeof p.apiKeyEnv !== "string" || !p.apiKeyEnv)
                throw new DataPlaneConfigError(`${at}.apiKeyEnv must name an environment variable`);
            apiKey = env[p.apiKeyEnv] ?? "";
            if (!apiKey)
                throw new DataPlaneConfigError(`${at}: environment variable ${p.apiKeyEnv} (the key of provider "${p.name}") is not set`);
        }
        const headers = {};
        if (p.headers !== undefined) {
            if (typeof p.headers !== "object" || p.headers === null)
                throw new DataPlaneConfigError(`${at}.headers must be an object of strings`);
            for (const [k, v] of Object.entries(p.headers)) {
                if (typeof v !== "string" || !/^[A-Za-z0-9-]+$/.test(k) || /[\r\n]/.test(v))
                    throw new DataPlaneConfigError(`${at}.headers.${k} must be a single-line string`);
                headers[k.toLowerCase()] = v;
            }
        }
        return { name: p.name, baseUrl: url.href.replace(/\/+$/, ""), apiKey, headers };
    });
}
export function parseTaskRoutes(raw) {
    const routes = raw.split(",").map((s) => s.trim()).filter(Boolean).map((entry) => {
        const [prefix, name, extra] = entry.split("=");
        if (!prefix || !name || extra !== undefined || !/^\/[A-Za-z0-9_\-/]*[A-Za-z0-9_-]$/.test(prefix)) {
            throw new DataPlaneConfigError(`PROXY_TASK_ROUTES: "${entry}" must look like /prefix=TASK`);
        }
        if (prefix === "/v1" || prefix.startsWith("/v1/"))
            throw new DataPlaneConfigError(`PROXY_TASK_ROUTES: prefix "${prefix}" would shadow /v1`);
        return { prefix, task: task("PROXY_TASK_ROUTES", name) };
    });
    // Longest prefix first, so /draft/long wins over /draft.
    return routes.sort((a, b) => b.prefix.length - a.prefix.length);
}
const taskPattern = /^[A-Za-z0-9_.-]{1,64}$/;
/** A task code as sent by clients and operators. */
export function isTaskCode(value) {
    return taskPattern.test(value);
}
function task(name, value) {
    if (value && !isTaskCode(value))
        throw new DataPlaneConfigError(`${name}: "${value}" is not a task code (1-64 letters, digits, "_", "-", ".")`);
    return value;
}
/** host:port, or a gRPC target: dns: (every address of a name), ipv4:/ipv6: (a list), unix:. */
function address(value) {
    if (!/^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/.test(value) && !/^(unix|dns|ipv4|ipv6):\S+$/.test(value)) {
        throw new DataPlaneConfigError(`CONTROL_PLANE_ADDR must be host:port or a gRPC target (dns:///name:port, ipv4:a:port,b:port, unix:path), got "${value}"`);
    }
    return value;
}
function int(env, name, fallback, min, max) {
    const raw = env[name];
    if (raw === undefined || raw === "")
        return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max)
        throw new DataPlaneConfigError(`${name} must be an integer between ${min} and ${max}, got "${raw}"`);
    return value;
}
function failurePolicy(raw) {
    if (!raw)
        return "FAIL_CLOSED";
    const name = raw.toUpperCase().replace(/^FAILURE_POLICY_/, "");
    if (name === "FAIL_CLOSED" || name === "FAIL_OPEN")
        return name;
    throw new DataPlaneConfigError(`PROXY_FAILURE_POLICY must be FAIL_CLOSED or FAIL_OPEN, got "${raw}"`);
}
//# sourceMappingURL=config.js.map
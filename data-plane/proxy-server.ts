import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { create } from "@bufbuild/protobuf";
import { status as Code } from "@grpc/grpc-js";
import httpProxy from "http-proxy";
import type { Logger } from "pino";
import type { AdmitResponse, Meter, Route } from "../gen/admission/v1/admission_pb.js";
import { AdmitRequestSchema, DenyReason, Outcome, SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { LimitKind } from "../gen/admission/v1/policy_pb.js";
import { reasonMapping } from "../control-plane/deny-reasons.js";
import type { DataPlaneConfig, ProviderConfig } from "./config.js";
import { ControlPlaneError, type ControlPlaneClient } from "./control-plane-client.js";
import type { DataPlaneMetrics } from "./metrics.js";
import type { SettleSpool } from "./settle-spool.js";
import { countInputTokens, UsageReader } from "./usage-reader.js";

export interface ProxyDeps {
  readonly config: DataPlaneConfig;
  readonly providers: ReadonlyMap<string, ProviderConfig>;
  readonly controlPlane: ControlPlaneClient;
  readonly spool: SettleSpool;
  readonly metrics: DataPlaneMetrics;
  readonly logger: Logger;
}

/** One admitted request on its way through a provider. */
interface Flight {
  readonly requestId: string;
  readonly credential: string;
  readonly decision: AdmitResponse;
  readonly body: Record<string, unknown>;
  readonly path: string;
  readonly inputTokens: number;
  readonly startedAt: number;
  attempt: number;
  upstreamStartedAt: number;
  reader?: UsageReader;
  status?: number;
  settled: boolean;
}

const llmPaths = new Set(["/chat/completions", "/completions", "/embeddings"]);
const safeValue = /^[A-Za-z0-9._:/@-]{1,128}$/;
const hopByHop = new Set(["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization", "te", "trailer"]);

/**
 * The OpenAI-compatible reverse proxy: Admit before forwarding, route to the
 * decision's candidates (failing over before the first byte only), stream the
 * response through while reading its usage, Settle after every admitted request.
 */
export function createProxyServer(deps: ProxyDeps): Server {
  const { config, logger, metrics } = deps;
  const flights = new WeakMap<IncomingMessage, Flight>();
  const proxy = httpProxy.createProxyServer({ selfHandleResponse: true, proxyTimeout: config.upstreamTimeoutMs, changeOrigin: true });

  proxy.on("proxyRes", (proxyRes, req, res: ServerResponse) => {
    const flight = flights.get(req)!;
    const status = proxyRes.statusCode ?? 502;
    metrics.upstreamSeconds.observe({ status: String(status) }, (performance.now() - flight.upstreamStartedAt) / 1000);
    if (status >= 500 && flight.attempt + 1 < flight.decision.routes.length && !res.headersSent) {
      proxyRes.resume();
      logger.warn({ requestId: flight.requestId, status, provider: flight.decision.routes[flight.attempt]!.provider }, "provider failed before the first byte; trying the next route");
      flight.attempt++;
      forward(req, res, flight);
      return;
    }
    flight.status = status;
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(proxyRes.headers)) if (value !== undefined && !hopByHop.has(name)) headers[name] = value;
    Object.assign(headers, decisionHeaders(flight.decision, flight.requestId));
    res.writeHead(status, headers);
    const reader = new UsageReader(String(proxyRes.headers["content-type"] ?? "").includes("text/event-stream"));
    flight.reader = reader;
    proxyRes.on("data", (chunk: Buffer) => {
      reader.push(chunk);
      if (!res.write(chunk)) {
        proxyRes.pause();
        res.once("drain", () => proxyRes.resume());
      }
    });
    proxyRes.on("end", () => {
      reader.finish();
      res.end();
      settle(flight, status < 400 ? Outcome.SUCCESS : Outcome.UPSTREAM_ERROR);
    });
    proxyRes.on("error", () => {
      settle(flight, Outcome.UPSTREAM_ERROR);
      res.destroy();
    });
    proxyRes.on("aborted", () => {
      settle(flight, Outcome.UPSTREAM_ERROR);
      res.destroy();
    });
    res.on("close", () => {
      if (!res.writableFinished) {
        proxyRes.destroy();
        settle(flight, Outcome.CLIENT_ABORTED);
      }
    });
  });

  function forward(req: IncomingMessage, res: ServerResponse, flight: Flight): void {
    const route = flight.decision.routes[flight.attempt]!;
    const provider = deps.providers.get(route.provider);
    if (!provider) {
      logger.error({ provider: route.provider }, "route names a provider the data plane does not know");
      return failOver(req, res, flight, `provider "${route.provider}" is not configured`);
    }
    const body = rewriteBody(flight, route);
    const bytes = Buffer.from(JSON.stringify(body));
    flight.upstreamStartedAt = performance.now();
    metrics.overheadSeconds.observe((flight.upstreamStartedAt - flight.startedAt) / 1000);
    proxy.web(req, res, {
      target: `${provider.baseUrl}${flight.path}`,
      ignorePath: true,
      buffer: Readable.from([bytes]),
      headers: {
        "content-type": "application/json",
        "content-length": String(bytes.length),
        authorization: provider.apiKey ? `Bearer ${provider.apiKey}` : "",
        "x-request-id": flight.requestId,
      },
    }, (err) => {
      logger.warn({ requestId: flight.requestId, provider: route.provider, err: err.message }, "provider unreachable");
      failOver(req, res, flight, `provider "${route.provider}" unreachable`);
    });
  }

  function failOver(req: IncomingMessage, res: ServerResponse, flight: Flight, why: string): void {
    if (!res.headersSent && flight.attempt + 1 < flight.decision.routes.length) {
      flight.attempt++;
      forward(req, res, flight);
      return;
    }
    settle(flight, Outcome.UPSTREAM_ERROR);
    if (!res.headersSent) sendError(res, 502, "upstream_error", `no provider could serve the request: ${why}`, decisionHeaders(flight.decision, flight.requestId));
    else res.destroy();
  }

  /** Exactly once per admitted request, with what the provider reported or an estimate — never a silent zero. */
  function settle(flight: Flight, outcome: Outcome): void {
    if (flight.settled) return;
    flight.settled = true;
    const route = flight.decision.routes[flight.attempt];
    const reported = flight.reader?.reported();
    const reachedProvider = flight.reader !== undefined;
    const clientError = flight.status !== undefined && flight.status >= 400 && flight.status < 500;
    const inputTokens = reported?.inputTokens ?? (reachedProvider && !clientError ? flight.inputTokens : 0);
    const outputTokens = reported?.outputTokens ?? (flight.reader?.estimatedOutputTokens() ?? 0);
    const req = create(SettleRequestSchema, {
      reservationId: flight.decision.reservationId,
      inputTokens: BigInt(inputTokens),
      outputTokens: BigInt(outputTokens),
      provider: route?.provider ?? "",
      model: route?.model ?? "",
      outcome,
      latencyMs: BigInt(Math.round(performance.now() - flight.startedAt)),
      estimated: reported === undefined,
      credential: flight.credential,
    });
    metrics.tokens.inc({ tenant: flight.decision.tenant, model: route?.model ?? "", direction: "input" }, inputTokens);
    metrics.tokens.inc({ tenant: flight.decision.tenant, model: route?.model ?? "", direction: "output" }, outputTokens);
    if (!flight.decision.reservationId) return;
    deps.controlPlane.settle(req).catch(async (err: Error) => {
      logger.warn({ requestId: flight.requestId, err: err.message }, "settle not delivered; spooled");
      metrics.settlesSpooled.inc();
      await deps.spool.append(req).catch((spoolErr) => logger.error({ err: String(spoolErr), requestId: flight.requestId }, "settle spool write failed"));
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    res.on("finish", () => metrics.requests.inc({ status: String(res.statusCode) }));
    const url = new URL(req.url ?? "/", "http://proxy");
    const route = /^(?:\/tasks\/([A-Za-z0-9._-]{1,64}))?\/v1(\/.*)$/.exec(url.pathname);
    if (!route) return sendError(res, 404, "invalid_request_error", `unknown route ${url.pathname.slice(0, 200)}`);
    const [, routeTask, path] = route as unknown as [string, string | undefined, string];
    if (req.method === "GET" && path === "/models") return listModels(req, res);
    if (req.method !== "POST" || !llmPaths.has(path)) return sendError(res, 404, "invalid_request_error", `unknown route ${req.method} ${url.pathname.slice(0, 200)}`);

    const credential = /^Bearer\s+(\S+)$/i.exec(String(req.headers.authorization ?? ""))?.[1];
    if (!credential) return sendError(res, 401, "authentication_error", "missing 'Authorization: Bearer <API key or JWT>'", {}, "unauthenticated");
    const task = String(req.headers["x-llm-task"] ?? routeTask ?? config.defaultTask);
    if (!task) return sendError(res, 400, "invalid_request_error", "no task: send the x-llm-task header or use a /tasks/<TASK>/v1 route", {}, "invalid_request");
    if (!safeValue.test(task)) return sendError(res, 400, "invalid_request_error", "invalid x-llm-task header", {}, "invalid_request");
    const requestId = String(req.headers["x-request-id"] ?? "") || randomUUID();
    if (!/^[\x21-\x7e]{1,128}$/.test(requestId)) return sendError(res, 400, "invalid_request_error", "invalid x-request-id header", {}, "invalid_request");

    const raw = await readBody(req, config.maxBodyBytes);
    if (raw === "too_large") return sendError(res, 413, "invalid_request_error", `request body over ${config.maxBodyBytes} bytes`, {}, "request_too_large");
    if (raw === "aborted") return;
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(raw.toString("utf8"));
      if (!body || typeof body !== "object" || Array.isArray(body)) throw new Error("not an object");
    } catch {
      return sendError(res, 400, "invalid_request_error", "the body must be a JSON object", {}, "invalid_request");
    }
    const model = body.model === undefined ? "" : body.model;
    if (typeof model !== "string" || model.length > 128) return sendError(res, 400, "invalid_request_error", "model must be a string", {}, "invalid_request");
    const requestedMax = body.max_completion_tokens ?? body.max_tokens;
    if (requestedMax !== undefined && (!Number.isSafeInteger(requestedMax) || (requestedMax as number) < 0)) {
      return sendError(res, 400, "invalid_request_error", "max_tokens must be a non-negative integer", {}, "invalid_request");
    }
    const inputTokens = countInputTokens(body);
    const embeddings = path === "/embeddings";

    let decision: AdmitResponse;
    try {
      decision = await deps.controlPlane.admit(create(AdmitRequestSchema, {
        requestId,
        credential,
        task,
        model,
        inputTokens: BigInt(inputTokens),
        // An embedding produces no output tokens: reserve one, not the default.
        maxOutputTokens: BigInt(embeddings ? 1 : Math.min(Number(requestedMax ?? 0), 1_000_000_000)),
      }));
    } catch (err) {
      return controlPlaneDown(res, err, requestId);
    }
    if (!decision.allowed) return deny(res, decision, requestId);
    const flight: Flight = { requestId, credential, decision, body, path, inputTokens, startedAt: started, attempt: 0, upstreamStartedAt: 0, settled: false };
    flights.set(req, flight);
    forward(req, res, flight);
  }

  function controlPlaneDown(res: ServerResponse, err: unknown, requestId: string): void {
    const e = err instanceof ControlPlaneError ? err : new ControlPlaneError(Code.INTERNAL, String(err));
    if (e.code === Code.INVALID_ARGUMENT) return sendError(res, 400, "invalid_request_error", e.message, { "x-request-id": requestId }, "invalid_request");
    logger.error({ requestId, code: e.code, err: e.message }, "control plane unavailable");
    // FAIL_OPEN needs a decision to route with; without one the proxy cannot pick a provider safely.
    sendError(res, 503, "service_unavailable", "admission control unavailable; retry shortly", { "retry-after": "1", "x-request-id": requestId }, "unavailable");
  }

  function deny(res: ServerResponse, d: AdmitResponse, requestId: string): void {
    const m = d.deniedMeter;
    const headers = decisionHeaders(d, requestId);
    if (d.retryAfterMs > 0n) headers["retry-after"] = String(Math.max(1, Math.ceil(Number(d.retryAfterMs) / 1000)));
    sendError(res, d.httpStatus || 403, errorType(d.httpStatus), d.message, headers, reasonMapping(d.reason).code, {
      reason: DenyReason[d.reason],
      ...(m ? { limit: Number(m.limit), used: Number(m.used), remaining: Number(m.remaining), limit_kind: LimitKind[m.kind] } : {}),
      ...(d.retryAfterMs > 0n ? { retry_after_ms: Number(d.retryAfterMs) } : {}),
    });
  }

  async function listModels(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const credential = /^Bearer\s+(\S+)$/i.exec(String(req.headers.authorization ?? ""))?.[1];
    if (!credential) return sendError(res, 401, "authentication_error", "missing 'Authorization: Bearer <API key or JWT>'", {}, "unauthenticated");
    try {
      const policy = await deps.controlPlane.effectivePolicy(credential);
      const models = [...new Set(policy.tasks.filter((t) => t.allowed).flatMap((t) => t.routes.map((r) => r.model)))];
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ object: "list", data: models.map((id) => ({ id, object: "model", created: 0, owned_by: "admission" })) }));
    } catch (err) {
      const e = err as ControlPlaneError;
      if (e.code === Code.UNAUTHENTICATED) return sendError(res, 401, "authentication_error", e.message, {}, "unauthenticated");
      controlPlaneDown(res, err, "");
    }
  }

  return createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (req.method === "GET" && path === "/healthz") return void res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
    if (req.method === "GET" && path === "/readyz") {
      const ready = deps.controlPlane.connected();
      return void res.writeHead(ready ? 200 : 503, { "content-type": "application/json" }).end(JSON.stringify({ ready, checks: { controlPlane: ready ? "ok" : "not connected", settleSpool: deps.spool.pending() ? "replaying" : "empty" } }));
    }
    if (req.method === "GET" && path === "/metrics") {
      void metrics.registry.metrics().then((text) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(text));
      return;
    }
    handle(req, res).catch((err) => {
      logger.error({ err }, "proxy handler failed");
      if (!res.headersSent) sendError(res, 500, "api_error", "internal error");
      else res.destroy();
    });
  });
}

/** The client's body with the routed model, the clamped max tokens and usage requested on streams. */
function rewriteBody(flight: Flight, route: Route): Record<string, unknown> {
  const body: Record<string, unknown> = { ...flight.body, model: route.providerModel || route.model };
  if (flight.path !== "/embeddings") {
    const field = flight.body.max_completion_tokens !== undefined ? "max_completion_tokens" : "max_tokens";
    body[field] = Number(flight.decision.maxOutputTokens);
  }
  if (body.stream === true) body.stream_options = { ...(body.stream_options as object | undefined), include_usage: true };
  return body;
}

const headerKinds: Partial<Record<LimitKind, string>> = {
  [LimitKind.REQUESTS]: "requests",
  [LimitKind.TOKENS]: "tokens",
  [LimitKind.BUDGET_MICROS]: "budget-micros",
  [LimitKind.CONCURRENCY]: "concurrency",
};

/** x-ratelimit-{limit,remaining,reset}-{requests,tokens,budget-micros,concurrency}: the tightest meter of each kind. */
export function decisionHeaders(d: AdmitResponse, requestId: string): Record<string, string> {
  const headers: Record<string, string> = { "x-request-id": requestId };
  const tightest = new Map<string, Meter>();
  for (const m of d.meters) {
    const kind = headerKinds[m.kind];
    if (!kind) continue;
    const current = tightest.get(kind);
    if (!current || m.remaining < current.remaining) tightest.set(kind, m);
  }
  for (const [kind, m] of tightest) {
    headers[`x-ratelimit-limit-${kind}`] = String(m.limit);
    headers[`x-ratelimit-remaining-${kind}`] = String(m.remaining);
    headers[`x-ratelimit-reset-${kind}`] = `${(Number(m.resetMs) / 1000).toFixed(3)}s`;
  }
  if (d.warnings.length > 0) headers["x-admission-warnings"] = d.warnings.join("; ").replace(/[^\x20-\x7e]/g, "?").slice(0, 2000);
  return headers;
}

function errorType(status: number): string {
  switch (status) {
    case 401:
      return "authentication_error";
    case 402:
      return "insufficient_quota";
    case 403:
      return "permission_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable";
    default:
      return "invalid_request_error";
  }
}

/** An OpenAI-style error: {"error": {"message", "type", "code", "param", ...}}. */
function sendError(res: ServerResponse, status: number, type: string, message: string, headers: Record<string, string> = {}, code: string | null = null, extra: Record<string, unknown> = {}): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify({ error: { message, type, code, param: null, ...extra } }));
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | "too_large" | "aborted"> {
  return new Promise((resolve) => {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > maxBytes) {
      req.resume();
      return resolve("too_large");
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        req.removeAllListeners("data");
        req.resume();
        resolve("too_large");
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("aborted", () => resolve("aborted"));
    req.on("error", () => resolve("aborted"));
  });
}

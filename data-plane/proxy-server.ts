import { randomUUID } from "node:crypto";
import { Agent as HttpAgent, createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { Stream, type Duplex } from "node:stream";
import { parse as parseUrl, type Url } from "node:url";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { status as Code } from "@grpc/grpc-js";
import type { Tracer } from "@opentelemetry/api";
import httpProxy from "http-proxy";
import type { Logger } from "pino";
import type { AdmitResponse } from "../gen/admission/v1/admission_pb.js";
import { AdmitResponseSchema, Outcome } from "../gen/admission/v1/admission_pb.js";
import { isTaskCode, type DataPlaneConfig, type ProviderConfig } from "./config.js";
import { asControlPlaneError, type ControlPlaneError } from "./control-plane-error.js";
import type { ControlPlaneClient } from "./control-plane-client.js";
import type { AdmissionAsk } from "./admitted-credentials.js";
import type { FailOpen } from "./fail-open.js";
import { Flight } from "./flight.js";
import { LeaseRenewer } from "./lease-renewer.js";
import type { DataPlaneMetrics } from "./metrics.js";
import { answerClientError, parserRefusal } from "../control-plane/http-server.js";
import { admitRequestFor, clientCredential, countTokensPath, llmRoutes, parseLlmRequest, rewriteBody, type LlmRequest, type ProviderApi } from "../control-plane/llm-request.js";
import { clientErrorBody, refusalResponse, sendDenial, sendError, sendErrorResponse, streamErrorEvent, unavailableResponse } from "./error-response.js";
import { modelList, modelRoutes } from "./models-endpoint.js";
import { servableRoutes } from "./provider-routes.js";
import { decisionHeaders } from "./rate-limit-headers.js";
import { joinChunks, readBody } from "./read-body.js";
import { matchRoute } from "./routes.js";
import { RequestTrace } from "./request-trace.js";
import type { Settler } from "./settler.js";
import { clientHeaders, upstreamHeaders } from "./upstream-headers.js";
import type { UsageRecord } from "./provider-usage.js";
import { UsageFeed, UsageReader } from "./usage-reader.js";

export interface ProxyDeps {
  readonly config: DataPlaneConfig;
  readonly providers: ReadonlyMap<string, ProviderConfig>;
  readonly controlPlane: ControlPlaneClient;
  readonly settler: Settler;
  readonly failOpen: FailOpen;
  readonly metrics: DataPlaneMetrics;
  readonly logger: Logger;
  /** A trace per proxied request when tracing is on. */
  readonly tracer?: Tracer;
}

const requestIdPattern = /^[\x21-\x7e]{1,128}$/;
/** A successful non-streamed answer up to this size is held until it is known to be JSON. */
const maxHeldBytes = 8 * 1024 * 1024;

/**
 * The flight a request is on, kept on the request (http-proxy's events hand back only the request).
 * Not in a WeakMap: V8's young-generation GC holds only a WeakMap's keys weakly, not its values, so
 * every flight in one — and all it reaches — survived its first scavenge and was promoted (measured:
 * ~2.3 MB promoted and 10-12 ms per scavenge at saturation, against ~0.3 MB and 3 ms without).
 */
const flightOf = Symbol("flight");
/** A request passed through unmetered (Anthropic's count_tokens): the headers its answer carries. */
const passedOf = Symbol("passed");
type OnFlight = IncomingMessage & { [flightOf]?: Flight; [passedOf]?: Record<string, string> };

const unmeteredWarning = "control plane unreachable: allowed unmetered (FAIL_OPEN), usage recorded later";

/**
 * The reverse proxy for OpenAI's Chat Completions, Completions, Embeddings and
 * Responses APIs and Anthropic's Messages API: Admit before forwarding, route
 * to the decision's candidates whose provider speaks the request's API
 * (failing over before the first byte only), stream the response through
 * while reading its usage, Settle after every admitted request.
 */
export function createProxyServer(deps: ProxyDeps): Server {
  const { config, logger, metrics } = deps;
  const agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) };
  const upstreams = new Map([...deps.providers].map(([name, provider]) => [name, new Upstream(provider, provider.baseUrl.startsWith("https:") ? agents.https : agents.http)]));
  const proxy = httpProxy.createProxyServer({ selfHandleResponse: true, proxyTimeout: config.upstreamTimeoutMs, changeOrigin: true });

  proxy.on("proxyReq", (proxyReq, req) => {
    const flight = (req as OnFlight)[flightOf];
    if (flight) flight.proxyReq = proxyReq;
  });
  proxy.on("proxyRes", (proxyRes, req, res: ServerResponse) => {
    const passed = (req as OnFlight)[passedOf];
    if (passed) {
      res.writeHead(proxyRes.statusCode ?? 502, { ...clientHeaders(proxyRes.headers), ...passed });
      proxyRes.pipe(res);
      return;
    }
    const flight = (req as OnFlight)[flightOf];
    if (!flight || flight.done) {
      proxyRes.resume();
      return;
    }
    guarded(flight, res, () => relay(flight, proxyRes, req, res));
  });

  /** A bug while relaying must not take the process down nor leave the reservation open. */
  function guarded(flight: Flight, res: ServerResponse, step: () => void): void {
    try {
      step();
    } catch (err) {
      logger.error({ err, requestId: flight.init.requestId }, "relaying failed");
      flight.proxyRes?.destroy();
      settle(flight, Outcome.UPSTREAM_ERROR);
      sendError(res, 502, "the proxy failed relaying the provider's answer", { code: "upstream_error", api: flight.init.request.route.api });
    }
  }

  /** A 502 for an admitted request: the proxy could not get a usable answer from any provider. */
  function badGateway(res: ServerResponse, flight: Flight, message: string): void {
    sendError(res, 502, message, { headers: flight.init.headers, code: "upstream_error", api: flight.init.request.route.api });
  }

  /** The provider answered: fail over on a 5xx while nothing reached the client, else pass the answer through as it comes. */
  function relay(flight: Flight, proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse): void {
    const status = proxyRes.statusCode ?? 502;
    const route = flight.route!;
    metrics.upstreamSeconds.observe({ provider: route.provider, status: String(status) }, (performance.now() - flight.upstreamStartedAt) / 1000);
    if (status >= 500 && flight.attempt + 1 < flight.init.routes.length && !res.headersSent) {
      proxyRes.resume();
      endAttempt(flight, { status });
      logger.warn({ requestId: flight.init.requestId, status, provider: route.provider }, "provider failed before the first byte; trying the next route");
      metrics.failovers.inc({ provider: route.provider });
      flight.attempt++;
      forward(req, res, flight);
      return;
    }
    flight.status = status;
    flight.proxyRes = proxyRes;
    const sse = String(proxyRes.headers["content-type"] ?? "").includes("text/event-stream");
    const family = flight.init.request.route.family;
    const reader = new UsageReader(family, sse);
    const feed = new UsageFeed(reader, proxyRes.headers["content-encoding"]);
    flight.reader = reader;
    // A successful JSON answer is held until it is known to be JSON, so a provider's garbage becomes a clear 502;
    // one too large to hold (or a stream) passes through as it comes.
    let held: Buffer[] | undefined = !sse && status < 400 ? [] : undefined;
    let heldBytes = 0;
    const writeHead = () => {
      const headers = clientHeaders(proxyRes.headers);
      Object.assign(headers, flight.init.headers);
      headers["server-timing"] = flight.serverTiming();
      res.writeHead(status, headers);
    };
    const write = (chunk: Buffer) => {
      if (!res.write(chunk)) {
        proxyRes.pause();
        res.once("drain", () => proxyRes.resume());
      }
    };
    if (!held) writeHead();
    if (sse) res.flushHeaders(); // the client sees the stream start now, not with the first token
    proxyRes.on("data", (chunk: Buffer) => {
      feed.push(chunk);
      if (!held) return write(chunk);
      held.push(chunk);
      heldBytes += chunk.length;
      if (heldBytes > maxHeldBytes) {
        writeHead();
        for (const c of held) write(c);
        held = undefined;
      }
    });
    proxyRes.on("end", () => {
      if (!held) res.end();
      void feed.finish().then(() => {
        if (held && reader.unreadable()) {
          logger.warn({ requestId: flight.init.requestId, provider: route.provider, status }, "provider answered a body that is not JSON");
          settle(flight, Outcome.UPSTREAM_ERROR);
          return badGateway(res, flight, `provider "${route.provider}" answered a body that is not JSON`);
        }
        if (held && !res.destroyed) {
          writeHead();
          res.end(joinChunks(held, heldBytes));
        }
        settle(flight, status < 400 ? Outcome.SUCCESS : Outcome.UPSTREAM_ERROR);
      });
    });
    proxyRes.on("error", () => undefined); // reported by "close" below
    proxyRes.on("close", () => {
      if (proxyRes.complete || flight.done) return;
      // The provider went away mid-response: the client keeps what it got, told by an error event on a stream.
      if (!res.writableEnded && !res.destroyed) {
        if (sse) res.end(streamErrorEvent(family, "the provider stopped mid-stream"));
        else if (held) badGateway(res, flight, `provider "${route.provider}" stopped mid-answer`);
        else res.destroy();
      }
      void feed.finish().then(() => settle(flight, Outcome.UPSTREAM_ERROR));
    });
  }

  function forward(req: IncomingMessage, res: ServerResponse, flight: Flight): void {
    const route = flight.route!;
    const upstream = upstreams.get(route.provider);
    if (!upstream) {
      logger.error({ requestId: flight.init.requestId, provider: route.provider }, "route names a provider the data plane does not know");
      return failOver(req, res, flight, `provider "${route.provider}" is not configured`);
    }
    const body = rewriteBody(flight.init.request, { providerModel: route.providerModel || route.model, maxOutputTokens: flight.init.maxOutputTokens });
    // http-proxy copies the incoming headers: replace them with exactly what the provider may see.
    req.headers = upstreamHeaders(req.headers, upstream.provider, body.length, flight.init.requestId);
    if (flight.trace) flight.attemptSpan = flight.trace.attempt(route, upstream.provider, flight.attempt, flight.init.maxOutputTokens, req.headers);
    if (flight.upstreamStartedAt === 0) {
      flight.upstreamStartedAt = performance.now();
      metrics.overheadSeconds.observe((flight.upstreamStartedAt - flight.init.startedAt) / 1000);
    }
    proxy.web(req, res, {
      target: upstream.target(flight.init.request.route.path),
      ignorePath: true,
      buffer: new BodySource(body),
      agent: upstream.agent,
    }, (err: Error & { code?: string }) => {
      if (flight.done) return;
      logger.warn({ requestId: flight.init.requestId, provider: route.provider, err: err.code ?? err.message }, "provider unreachable");
      metrics.failovers.inc({ provider: route.provider });
      endAttempt(flight, { error: err.code ?? err.name });
      guarded(flight, res, () => failOver(req, res, flight, `provider "${route.provider}" unreachable (${err.code ?? err.message})`));
    });
  }

  function failOver(req: IncomingMessage, res: ServerResponse, flight: Flight, why: string): void {
    if (!res.headersSent && flight.attempt + 1 < flight.init.routes.length) {
      flight.attempt++;
      forward(req, res, flight);
      return;
    }
    settle(flight, Outcome.UPSTREAM_ERROR);
    badGateway(res, flight, `no provider could serve the request: ${why}`);
  }

  /** Ends the span of the attempt under way (one that failed over, or the one served). */
  function endAttempt(flight: Flight, result: { status: number } | { error: string }): void {
    if (!flight.attemptSpan) return;
    flight.trace!.attemptEnded(flight.attemptSpan, result);
    flight.attemptSpan = undefined;
  }

  /** Exactly once per flight: a Settle for an admitted request, held usage for an unadmitted one. */
  function settle(flight: Flight, outcome: Outcome): void {
    const settled = flight.finish(outcome);
    if (!settled) return;
    const { init } = flight;
    const rt = flight.trace;
    if (rt) {
      rt.usage(flight.attemptSpan, settled);
      endAttempt(flight, flight.status !== undefined ? { status: flight.status } : { error: Outcome[outcome] ?? "error" });
    }
    const { usage } = settled;
    const model = settled.route?.model ?? "";
    countSettledTokens(init.tenant, model, usage);
    logger.info({
      requestId: init.requestId, tenant: init.tenant, task: init.task, provider: settled.route?.provider, model, status: flight.status,
      outcome: Outcome[settled.outcome], ...usage, estimated: settled.estimated,
      latencyMs: settled.latencyMs, unmetered: !init.reservationId || undefined, ...rt?.logIds(),
    }, "request settled");
    if (!init.reservationId) {
      rt?.release();
      deps.failOpen.record({
        requestId: init.requestId, credential: init.credential, task: init.task, model: init.request.model, provider: settled.route?.provider ?? "",
        servedModel: model, ...usage, outcome: settled.outcome, latencyMs: settled.latencyMs, estimated: settled.estimated,
      });
      return;
    }
    const settleCall = rt?.settle();
    rt?.release();
    void deps.settler.settle({
      $typeName: "admission.v1.SettleRequest",
      reservationId: init.reservationId,
      inputTokens: BigInt(usage.inputTokens),
      outputTokens: BigInt(usage.outputTokens),
      provider: settled.route?.provider ?? "",
      model,
      outcome: settled.outcome,
      latencyMs: BigInt(Math.min(settled.latencyMs, 86_400_000)),
      estimated: settled.estimated,
      credential: init.credential,
      cacheReadTokens: BigInt(usage.cacheReadTokens),
      cacheWriteTokens: BigInt(usage.cacheWriteTokens),
      reasoningTokens: BigInt(usage.reasoningTokens),
    }, { requestId: init.requestId, tenant: init.tenant, trace: settleCall?.trace }).then((result) => {
      if (settleCall) rt!.settleEnded(settleCall, result);
    });
  }

  /** proxy_tokens_total: input and output, and the parts of them a provider reported (only when there are some, to keep series few). */
  function countSettledTokens(tenant: string, model: string, usage: UsageRecord): void {
    metrics.tokens.inc({ tenant, model, direction: "input" }, usage.inputTokens);
    metrics.tokens.inc({ tenant, model, direction: "output" }, usage.outputTokens);
    if (usage.cacheReadTokens > 0) metrics.tokens.inc({ tenant, model, direction: "cache_read" }, usage.cacheReadTokens);
    if (usage.cacheWriteTokens > 0) metrics.tokens.inc({ tenant, model, direction: "cache_write" }, usage.cacheWriteTokens);
    if (usage.reasoningTokens > 0) metrics.tokens.inc({ tenant, model, direction: "reasoning" }, usage.reasoningTokens);
  }

  async function handle(req: IncomingMessage, res: ServerResponse, rt: RequestTrace | undefined): Promise<void> {
    const startedAt = performance.now();
    // Our own id: the Admit idempotency key must not be a value the client can replay.
    const requestId = `dp-${randomUUID()}`;
    rt?.identify(requestId);
    const clientRequestId = typeof req.headers["x-request-id"] === "string" && requestIdPattern.test(req.headers["x-request-id"]) ? req.headers["x-request-id"] : undefined;
    let requestLog: Logger | undefined;
    // Made when something is logged with the request's ids: most requests log only their settle line.
    const log = (): Logger => (requestLog ??= logger.child({ requestId, ...(clientRequestId ? { clientRequestId } : {}), ...rt?.logIds() }));
    const base = { "x-request-id": requestId };
    const matched = matchRoute(new URL(req.url ?? "/", "http://proxy").pathname, config.taskRoutes);
    const route = matched && llmRoutes.get(matched.path);
    // Errors in the shape of the API asked for: Anthropic's for Messages and everything under it, OpenAI's for the rest.
    const api: ProviderApi = route?.api ?? (matched && /^\/messages(?:\/|$)/.test(matched.path) ? "anthropic" : "openai");
    const routeLabel = matched && (route || matched.path === "/models" || matched.path === countTokensPath) ? matched.path : "other";
    res.on("finish", () => metrics.requests.inc({ route: routeLabel, status: String(res.statusCode) }));
    rt?.route(routeLabel === "other" ? routeLabel : `/v1${routeLabel}`);
    if (!matched) return sendError(res, 404, `unknown route ${(req.url ?? "").split("?")[0]!.slice(0, 200)}`, { headers: base, code: "unknown_route" });
    if (matched.path === "/models") {
      if (req.method !== "GET") return sendError(res, 405, "use GET /v1/models", { headers: { ...base, allow: "GET" }, code: "method_not_allowed" });
      return listModels(req, res, base);
    }
    if (matched.path === countTokensPath) return passCountTokens(req, res, requestId);
    if (!route) return unknownRoute(res, matched.path, base, api);
    if (req.method !== "POST") return sendError(res, 405, `use POST /v1${matched.path}`, { headers: { ...base, allow: "POST" }, code: "method_not_allowed", api });

    const credential = clientCredential(req.headers.authorization, req.headers["x-api-key"]);
    if (!credential) return sendError(res, 401, missingCredential, { headers: base, code: "unauthenticated", api });
    const task = taskOf(req, matched.task);
    if (task === undefined) return sendError(res, 400, "invalid x-llm-task header: 1-64 letters, digits, '_', '-' or '.'", { headers: base, code: "invalid_request", param: "x-llm-task", api });
    if (!task) return sendError(res, 400, "no task: send the x-llm-task header or use a task route (/tasks/<TASK>/v1/...)", { headers: base, code: "invalid_request", param: "x-llm-task", api });

    const raw = await readBody(req, config.maxBodyBytes);
    if (raw === "aborted") return;
    if (raw === "too_large") return sendError(res, 413, `request body over ${config.maxBodyBytes} bytes`, { headers: base, code: "request_too_large", api });
    const request = parseLlmRequest(route, raw);
    if ("error" in request) return sendError(res, 400, request.error, { headers: base, code: "invalid_request", param: request.param, api });
    rt?.request(request, task);

    const ask = { path: route.path, task, model: request.model };
    const admitStarted = performance.now();
    const admitCall = rt?.admit();
    let decision: AdmitResponse;
    try {
      decision = await deps.controlPlane.admit(admitRequestFor(request, {
        requestId, credential, task, attributes: { route: route.path, ...(clientRequestId ? { client_request_id: clientRequestId } : {}) },
      }), admitCall?.trace);
    } catch (raw) {
      const err = asControlPlaneError(raw);
      if (admitCall) rt!.callFailed(admitCall, err.code);
      metrics.admitSeconds.observe({ result: "error" }, (performance.now() - admitStarted) / 1000);
      if (!err.unreachable) {
        deps.failOpen.denied(credential);
        return refused(res, err, base, api);
      }
      if (config.failurePolicy === "FAIL_OPEN") return unadmitted({ req, res, request, ask, credential, requestId, startedAt, log: log(), err, rt });
      log().error({ code: Code[err.code], err: err.message }, "control plane unreachable; denied (FAIL_CLOSED)");
      return sendErrorResponse(res, unavailableResponse(base, api));
    }
    if (admitCall) rt!.admitted(admitCall, decision);
    const admitMs = performance.now() - admitStarted;
    metrics.admitSeconds.observe({ result: decision.allowed ? "allowed" : "denied" }, admitMs / 1000);
    if (!decision.allowed) {
      deps.failOpen.denied(credential);
      log().info({ tenant: decision.tenant, task, status: decision.httpStatus, reason: decision.message }, "denied");
      return sendDenial(res, decision, requestId, api);
    }

    deps.failOpen.admitted(credential, ask, { tenant: decision.tenant, routes: decision.routes });
    const servable = servableRoutes(decision.routes, route, deps.providers, request.model);
    const flight = new Flight({
      requestId, credential, task, request, tenant: decision.tenant, reservationId: decision.reservationId, routes: "routes" in servable ? servable.routes : decision.routes,
      maxOutputTokens: Number(decision.maxOutputTokens), headers: decisionHeaders(decision, requestId), startedAt, admitMs,
    });
    if (rt) {
      flight.trace = rt;
      rt.hold();
    }
    if ("mismatch" in servable) {
      // Nothing admitted is left open: the reservation is released at once (no provider was called: nothing charged).
      log().info({ tenant: decision.tenant, task, route: route.path, reason: servable.mismatch }, "refused: no candidate speaks the route's API");
      settle(flight, Outcome.UPSTREAM_ERROR);
      return sendError(res, 400, servable.mismatch, { headers: flight.init.headers, code: "model_api_mismatch", param: "model", api });
    }
    if (decision.unmetered) log().warn({ tenant: decision.tenant }, "admitted unmetered: the control plane's counter store is down");
    takeOff(req, res, flight);
    if (flight.done) return;
    if (decision.leaseExpiresAt) {
      flight.renewer = new LeaseRenewer({ client: deps.controlPlane, reservationId: decision.reservationId, leaseExpiresAtMs: timestampMs(decision.leaseExpiresAt), logger, requestId, trace: rt?.carrier() });
    }
  }

  /** Starts the flight, unless the client left while it was being decided. */
  function takeOff(req: IncomingMessage, res: ServerResponse, flight: Flight): void {
    if (flight.init.routes.length === 0) {
      settle(flight, Outcome.UPSTREAM_ERROR);
      return badGateway(res, flight, "the decision carries no route");
    }
    if (res.destroyed || req.socket.destroyed) return settle(flight, Outcome.CLIENT_ABORTED);
    (req as OnFlight)[flightOf] = flight;
    res.on("close", () => {
      if (res.writableFinished || flight.done) return;
      flight.proxyRes?.destroy();
      flight.proxyReq?.destroy();
      settle(flight, Outcome.CLIENT_ABORTED);
    });
    guarded(flight, res, () => forward(req, res, flight));
  }

  /**
   * FAIL_OPEN: forward without a decision only a credential admitted here recently for this path, task and model, on that
   * admission's routes (those of the request's API); usage recorded when the link is back. Anything else gets the same 503 as FAIL_CLOSED.
   */
  function unadmitted(a: { req: IncomingMessage; res: ServerResponse; request: LlmRequest; ask: AdmissionAsk; credential: string; requestId: string; startedAt: number; log: Logger; err: ControlPlaneError; rt: RequestTrace | undefined }): void {
    const known = deps.failOpen.serve(a.credential, a.ask);
    const { api } = a.request.route;
    if (!known) {
      a.log.warn({ task: a.ask.task, err: a.err.message }, "control plane unreachable and the credential was not admitted here recently for this task and model; denied (FAIL_OPEN)");
      return sendErrorResponse(a.res, unavailableResponse({ "x-request-id": a.requestId }, api));
    }
    const servable = servableRoutes(known.routes, a.request.route, deps.providers, a.request.model);
    if ("mismatch" in servable) return sendError(a.res, 400, servable.mismatch, { headers: { "x-request-id": a.requestId }, code: "model_api_mismatch", param: "model", api });
    const { routes } = servable;
    a.log.warn({ tenant: known.tenant, task: a.ask.task, err: a.err.message }, "control plane unreachable; forwarded unmetered (FAIL_OPEN)");
    const view = create(AdmitResponseSchema, { allowed: true, unmetered: true, warnings: [unmeteredWarning] });
    const flight = new Flight({
      requestId: a.requestId, credential: a.credential, task: a.ask.task, request: a.request, tenant: known.tenant, reservationId: "", routes,
      maxOutputTokens: undefined, headers: decisionHeaders(view, a.requestId), startedAt: a.startedAt, admitMs: 0,
    });
    if (a.rt) {
      a.rt.unadmitted();
      flight.trace = a.rt;
      a.rt.hold();
    }
    takeOff(a.req, a.res, flight);
  }

  /** The control plane refused the call itself (malformed request, bad credential...). */
  function refused(res: ServerResponse, err: ControlPlaneError, headers: Record<string, string>, api: ProviderApi = "openai"): void {
    const answer = refusalResponse(err, headers, api);
    if (answer.status === 502) logger.error({ code: Code[err.code], err: err.message }, "control plane refused the call");
    sendErrorResponse(res, answer);
  }

  /**
   * Anthropic's count_tokens runs no model, so it is passed through unmetered:
   * no Admit, no Settle. The credential must still be one the control plane
   * knows, and the model one it may use on a provider of Anthropic's API (the
   * provider's key is never lent to anyone else).
   */
  async function passCountTokens(req: IncomingMessage, res: ServerResponse, requestId: string): Promise<void> {
    const headers = { "x-request-id": requestId };
    const api = "anthropic";
    if (req.method !== "POST") return sendError(res, 405, `use POST /v1${countTokensPath}`, { headers: { ...headers, allow: "POST" }, code: "method_not_allowed", api });
    const credential = clientCredential(req.headers.authorization, req.headers["x-api-key"]);
    if (!credential) return sendError(res, 401, missingCredential, { headers, code: "unauthenticated", api });
    const raw = await readBody(req, config.maxBodyBytes);
    if (raw === "aborted") return;
    if (raw === "too_large") return sendError(res, 413, `request body over ${config.maxBodyBytes} bytes`, { headers, code: "request_too_large", api });
    const route = llmRoutes.get("/messages")!;
    const request = parseLlmRequest(route, raw);
    if ("error" in request) return sendError(res, 400, request.error, { headers, code: "invalid_request", param: request.param, api });
    let candidates;
    try {
      candidates = modelRoutes(await deps.controlPlane.effectivePolicy(credential), request.model);
    } catch (raw) {
      const err = asControlPlaneError(raw);
      return err.unreachable ? sendErrorResponse(res, unavailableResponse(headers, api)) : refused(res, err, headers, api);
    }
    if (candidates.length === 0) return sendError(res, 403, `model "${request.model}" is not one this credential may use`, { headers, code: "model_not_allowed", param: "model", api });
    const servable = servableRoutes(candidates, route, deps.providers, request.model);
    if ("mismatch" in servable) return sendError(res, 400, servable.mismatch, { headers, code: "model_api_mismatch", param: "model", api });
    const target = servable.routes[0]!;
    const upstream = upstreams.get(target.provider);
    if (!upstream) return sendError(res, 502, `provider "${target.provider}" is not configured`, { headers, code: "upstream_error", api });
    const body = Buffer.from(JSON.stringify({ ...request.body, model: target.providerModel || target.model }));
    req.headers = upstreamHeaders(req.headers, upstream.provider, body.length, requestId);
    (req as OnFlight)[passedOf] = headers;
    proxy.web(req, res, { target: upstream.target(countTokensPath), ignorePath: true, buffer: new BodySource(body), agent: upstream.agent }, (err: Error & { code?: string }) => {
      sendError(res, 502, `provider "${target.provider}" unreachable (${err.code ?? err.message})`, { headers, code: "upstream_error", api });
    });
  }

  /** Every model the credential may use, whatever task the client's default headers name (SDKs send them on every call). */
  async function listModels(req: IncomingMessage, res: ServerResponse, headers: Record<string, string>): Promise<void> {
    const credential = clientCredential(req.headers.authorization, req.headers["x-api-key"]);
    if (!credential) return sendError(res, 401, missingCredential, { headers, code: "unauthenticated" });
    try {
      const body = JSON.stringify(modelList(await deps.controlPlane.effectivePolicy(credential)));
      res.writeHead(200, { ...headers, "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) });
      res.end(body);
    } catch (raw) {
      const err = asControlPlaneError(raw);
      if (!err.unreachable) return refused(res, err, headers);
      sendErrorResponse(res, unavailableResponse(headers));
    }
  }

  function taskOf(req: IncomingMessage, routeTask: string | undefined): string | undefined {
    const header = req.headers["x-llm-task"];
    if (header !== undefined) return typeof header === "string" && isTaskCode(header) ? header : undefined;
    return routeTask ?? config.defaultTask;
  }

  // Slow clients are cut off: the whole request within requestTimeoutMs, checked often enough to matter.
  const server = createServer({
    requestTimeout: config.requestTimeoutMs,
    headersTimeout: config.headersTimeoutMs,
    connectionsCheckingInterval: Math.min(1_000, config.headersTimeoutMs),
  }, (req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (req.method === "GET" && path === "/healthz") return void json(res, 200, { status: "ok" });
    if (req.method === "GET" && path === "/readyz") {
      const ready = deps.controlPlane.connected();
      const spooled = deps.settler.spooled();
      return void json(res, ready ? 200 : 503, {
        ready,
        checks: { controlPlane: ready ? "ok" : "not connected", settleSpool: spooled ? `${spooled} settles waiting for replay` : "empty", failOpen: deps.failOpen.size() ? `${deps.failOpen.size()} unadmitted requests waiting to be recorded` : "none" },
      });
    }
    let rt: RequestTrace | undefined;
    if (deps.tracer) {
      const trace = (rt = new RequestTrace(deps.tracer, req, path ?? ""));
      res.on("close", () => trace.release(res.statusCode));
    }
    handle(req, res, rt).catch((err) => {
      logger.error({ err }, "proxy handler failed");
      sendError(res, 500, "internal error", { code: "internal_error" });
    });
  });
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => answerClientError(socket, parserRefusal(err.code), clientErrorBody));
  server.on("close", () => {
    agents.http.destroy();
    agents.https.destroy();
    proxy.close();
  });
  return server;
}

const missingCredential = "missing credential: send 'Authorization: Bearer <API key or JWT>' or 'x-api-key: <API key>'";

/** A path under /v1 that is not served: Responses' stored-response routes are refused by name, anything else is unknown. */
function unknownRoute(res: ServerResponse, path: string, headers: Record<string, string>, api: ProviderApi): void {
  if (path.startsWith("/responses/")) {
    return sendError(res, 404, `/v1${path.slice(0, 200)} is not served: only POST /v1/responses is (the data plane does not keep which provider stored a response, so it cannot route GET, DELETE, cancel or input_items to it)`, {
      headers, code: "unsupported_route",
    });
  }
  sendError(res, 404, `unknown route ${path.slice(0, 200)}`, { headers, code: "unknown_route", api });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(JSON.stringify(body));
}

/** A provider and what reaches it: its agent, and its URL for each route parsed once (http-proxy parses a URL string on every request). */
class Upstream {
  private readonly targets = new Map<string, Url>();

  constructor(readonly provider: ProviderConfig, readonly agent: HttpAgent) {}

  target(path: string): Url {
    let target = this.targets.get(path);
    if (!target) this.targets.set(path, (target = parseUrl(new URL(this.provider.baseUrl + path).href)));
    return target;
  }
}

/** The rewritten body as http-proxy's `buffer`: piped, it ends the provider request with the whole body in one write. */
class BodySource extends Stream {
  constructor(private readonly body: Buffer) {
    super();
  }

  override pipe<T extends NodeJS.WritableStream>(destination: T): T {
    destination.end(this.body);
    return destination;
  }
}

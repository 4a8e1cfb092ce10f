import { randomUUID } from "node:crypto";
import { Agent as HttpAgent, createServer } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { Stream } from "node:stream";
import { parse as parseUrl } from "node:url";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { status as Code } from "@grpc/grpc-js";
import httpProxy from "http-proxy";
import { AdmitResponseSchema, Outcome } from "../gen/admission/v1/admission_pb.js";
import { isTaskCode } from "./config.js";
import { asControlPlaneError } from "./control-plane-error.js";
import { Flight } from "./flight.js";
import { LeaseRenewer } from "./lease-renewer.js";
import { modelList } from "./models-endpoint.js";
import { answerClientError, parserRefusal } from "../control-plane/http-server.js";
import { clientErrorBody, refusalResponse, sendDenial, sendError, sendErrorResponse, unavailableResponse } from "./openai-error.js";
import { admitRequestFor, llmPaths, parseLlmRequest, rewriteBody } from "./openai-request.js";
import { decisionHeaders } from "./rate-limit-headers.js";
import { joinChunks, readBody } from "./read-body.js";
import { matchRoute } from "./routes.js";
import { clientHeaders, upstreamHeaders } from "./upstream-headers.js";
import { UsageFeed, UsageReader } from "./usage-reader.js";
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
const unmeteredWarning = "control plane unreachable: allowed unmetered (FAIL_OPEN), usage recorded later";
/**
 * The OpenAI-compatible reverse proxy: Admit before forwarding, route to the
 * decision's candidates (failing over before the first byte only), stream the
 * response through while reading its usage, Settle after every admitted request.
 */
export function createProxyServer(deps) {
    const { config, logger, metrics } = deps;
    const agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) };
    const upstreams = new Map([...deps.providers].map(([name, provider]) => [name, new Upstream(provider, provider.baseUrl.startsWith("https:") ? agents.https : agents.http)]));
    const proxy = httpProxy.createProxyServer({ selfHandleResponse: true, proxyTimeout: config.upstreamTimeoutMs, changeOrigin: true });
    proxy.on("proxyReq", (proxyReq, req) => {
        const flight = req[flightOf];
        if (flight)
            flight.proxyReq = proxyReq;
    });
    proxy.on("proxyRes", (proxyRes, req, res) => {
        const flight = req[flightOf];
        if (!flight || flight.done) {
            proxyRes.resume();
            return;
        }
        guarded(flight, res, () => relay(flight, proxyRes, req, res));
    });
    /** A bug while relaying must not take the process down nor leave the reservation open. */
    function guarded(flight, res, step) {
        try {
            step();
        }
        catch (err) {
            logger.error({ err, requestId: flight.init.requestId }, "relaying failed");
            flight.proxyRes?.destroy();
            settle(flight, Outcome.UPSTREAM_ERROR);
            sendError(res, 502, "the proxy failed relaying the provider's answer", { code: "upstream_error" });
        }
    }
    /** A 502 for an admitted request: the proxy could not get a usable answer from any provider. */
    function badGateway(res, flight, message) {
        sendError(res, 502, message, { headers: flight.init.headers, code: "upstream_error" });
    }
    /** The provider answered: fail over on a 5xx while nothing reached the client, else pass the answer through as it comes. */
    function relay(flight, proxyRes, req, res) {
        const status = proxyRes.statusCode ?? 502;
        const route = flight.route;
        metrics.upstreamSeconds.observe({ provider: route.provider, status: String(status) }, (performance.now() - flight.upstreamStartedAt) / 1000);
        if (status >= 500 && flight.attempt + 1 < flight.init.routes.length && !res.headersSent) {
            proxyRes.resume();
            logger.warn({ requestId: flight.init.requestId, status, provider: route.provider }, "provider failed before the first byte; trying the next route");
            metrics.failovers.inc({ provider: route.provider });
            flight.attempt++;
            forward(req, res, flight);
            return;
        }
        flight.status = status;
        flight.proxyRes = proxyRes;
        const sse = String(proxyRes.headers["content-type"] ?? "").includes("text/event-stream");
        const reader = new UsageReader(sse);
        const feed = new UsageFeed(reader, proxyRes.headers["content-encoding"]);
        flight.reader = reader;
        // A successful JSON answer is held until it is known to be JSON, so a provider's garbage becomes a clear 502;
        // one too large to hold (or a stream) passes through as it comes.
        let held = !sse && status < 400 ? [] : undefined;
        let heldBytes = 0;
        const writeHead = () => {
            const headers = clientHeaders(proxyRes.headers);
            Object.assign(headers, flight.init.headers);
            headers["server-timing"] = flight.serverTiming();
            res.writeHead(status, headers);
        };
        const write = (chunk) => {
            if (!res.write(chunk)) {
                proxyRes.pause();
                res.once("drain", () => proxyRes.resume());
            }
        };
        if (!held)
            writeHead();
        if (sse)
            res.flushHeaders(); // the client sees the stream start now, not with the first token
        proxyRes.on("data", (chunk) => {
            feed.push(chunk);
            if (!held)
                return write(chunk);
            held.push(chunk);
            heldBytes += chunk.length;
            if (heldBytes > maxHeldBytes) {
                writeHead();
                for (const c of held)
                    write(c);
                held = undefined;
            }
        });
        proxyRes.on("end", () => {
            if (!held)
                res.end();
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
            if (proxyRes.complete || flight.done)
                return;
            // The provider went away mid-response: the client keeps what it got, told by an error event on a stream.
            if (!res.writableEnded && !res.destroyed) {
                if (sse)
                    res.end(`data: ${JSON.stringify({ error: { message: "the provider stopped mid-stream", type: "upstream_error", code: "upstream_error", param: null } })}\n\n`);
                else if (held)
                    badGateway(res, flight, `provider "${route.provider}" stopped mid-answer`);
                else
                    res.destroy();
            }
            void feed.finish().then(() => settle(flight, Outcome.UPSTREAM_ERROR));
        });
    }
    function forward(req, res, flight) {
        const route = flight.route;
        const upstream = upstreams.get(route.provider);
        if (!upstream) {
            logger.error({ requestId: flight.init.requestId, provider: route.provider }, "route names a provider the data plane does not know");
            return failOver(req, res, flight, `provider "${route.provider}" is not configured`);
        }
        const body = rewriteBody(flight.init.request, { providerModel: route.providerModel || route.model, maxOutputTokens: flight.init.maxOutputTokens });
        // http-proxy copies the incoming headers: replace them with exactly what the provider may see.
        req.headers = upstreamHeaders(req.headers, upstream.provider, body.length, flight.init.requestId);
        if (flight.upstreamStartedAt === 0) {
            flight.upstreamStartedAt = performance.now();
            metrics.overheadSeconds.observe((flight.upstreamStartedAt - flight.init.startedAt) / 1000);
        }
        proxy.web(req, res, {
            target: upstream.target(flight.init.request.path),
            ignorePath: true,
            buffer: new BodySource(body),
            agent: upstream.agent,
        }, (err) => {
            if (flight.done)
                return;
            logger.warn({ requestId: flight.init.requestId, provider: route.provider, err: err.code ?? err.message }, "provider unreachable");
            metrics.failovers.inc({ provider: route.provider });
            guarded(flight, res, () => failOver(req, res, flight, `provider "${route.provider}" unreachable (${err.code ?? err.message})`));
        });
    }
    function failOver(req, res, flight, why) {
        if (!res.headersSent && flight.attempt + 1 < flight.init.routes.length) {
            flight.attempt++;
            forward(req, res, flight);
            return;
        }
        settle(flight, Outcome.UPSTREAM_ERROR);
        badGateway(res, flight, `no provider could serve the request: ${why}`);
    }
    /** Exactly once per flight: a Settle for an admitted request, held usage for an unadmitted one. */
    function settle(flight, outcome) {
        const usage = flight.finish(outcome);
        if (!usage)
            return;
        const { init } = flight;
        const model = usage.route?.model ?? "";
        metrics.tokens.inc({ tenant: init.tenant, model, direction: "input" }, usage.inputTokens);
        metrics.tokens.inc({ tenant: init.tenant, model, direction: "output" }, usage.outputTokens);
        logger.info({
            requestId: init.requestId, tenant: init.tenant, task: init.task, provider: usage.route?.provider, model, status: flight.status,
            outcome: Outcome[usage.outcome], inputTokens: usage.inputTokens, outputTokens: usage.outputTokens, estimated: usage.estimated,
            latencyMs: usage.latencyMs, unmetered: !init.reservationId || undefined,
        }, "request settled");
        if (!init.reservationId) {
            deps.failOpen.record({
                requestId: init.requestId, credential: init.credential, task: init.task, model: init.request.model, provider: usage.route?.provider ?? "",
                servedModel: model, inputTokens: usage.inputTokens, outputTokens: usage.outputTokens, outcome: usage.outcome, latencyMs: usage.latencyMs, estimated: usage.estimated,
            });
            return;
        }
        void deps.settler.settle({
            $typeName: "admission.v1.SettleRequest",
            reservationId: init.reservationId,
            inputTokens: BigInt(usage.inputTokens),
            outputTokens: BigInt(usage.outputTokens),
            provider: usage.route?.provider ?? "",
            model,
            outcome: usage.outcome,
            latencyMs: BigInt(Math.min(usage.latencyMs, 86_400_000)),
            estimated: usage.estimated,
            credential: init.credential,
        }, { requestId: init.requestId, tenant: init.tenant });
    }
    async function handle(req, res) {
        const startedAt = performance.now();
        // Our own id: the Admit idempotency key must not be a value the client can replay.
        const requestId = `dp-${randomUUID()}`;
        const clientRequestId = typeof req.headers["x-request-id"] === "string" && requestIdPattern.test(req.headers["x-request-id"]) ? req.headers["x-request-id"] : undefined;
        let requestLog;
        // Made when something is logged with the request's ids: most requests log only their settle line.
        const log = () => (requestLog ??= logger.child({ requestId, ...(clientRequestId ? { clientRequestId } : {}) }));
        const base = { "x-request-id": requestId };
        const matched = matchRoute(new URL(req.url ?? "/", "http://proxy").pathname, config.taskRoutes);
        const routeLabel = matched && (llmPaths.has(matched.path) || matched.path === "/models") ? matched.path : "other";
        res.on("finish", () => metrics.requests.inc({ route: routeLabel, status: String(res.statusCode) }));
        if (!matched)
            return sendError(res, 404, `unknown route ${(req.url ?? "").split("?")[0].slice(0, 200)}`, { headers: base, code: "unknown_route" });
        if (matched.path === "/models") {
            if (req.method !== "GET")
                return sendError(res, 405, "use GET /v1/models", { headers: { ...base, allow: "GET" }, code: "method_not_allowed" });
            return listModels(req, res, base);
        }
        if (!llmPaths.has(matched.path))
            return sendError(res, 404, `unknown route ${matched.path.slice(0, 200)}`, { headers: base, code: "unknown_route" });
        if (req.method !== "POST")
            return sendError(res, 405, `use POST /v1${matched.path}`, { headers: { ...base, allow: "POST" }, code: "method_not_allowed" });
        const path = matched.path;
        const credential = bearer(req);
        if (!credential)
            return sendError(res, 401, "missing 'Authorization: Bearer <API key or JWT>'", { headers: base, code: "unauthenticated" });
        const task = taskOf(req, matched.task);
        if (task === undefined)
            return sendError(res, 400, "invalid x-llm-task header: 1-64 letters, digits, '_', '-' or '.'", { headers: base, code: "invalid_request", param: "x-llm-task" });
        if (!task)
            return sendError(res, 400, "no task: send the x-llm-task header or use a task route (/tasks/<TASK>/v1/...)", { headers: base, code: "invalid_request", param: "x-llm-task" });
        const raw = await readBody(req, config.maxBodyBytes);
        if (raw === "aborted")
            return;
        if (raw === "too_large")
            return sendError(res, 413, `request body over ${config.maxBodyBytes} bytes`, { headers: base, code: "request_too_large" });
        const request = parseLlmRequest(path, raw);
        if ("error" in request)
            return sendError(res, 400, request.error, { headers: base, code: "invalid_request", param: request.param });
        const admitStarted = performance.now();
        let decision;
        try {
            decision = await deps.controlPlane.admit(admitRequestFor(request, {
                requestId, credential, task, attributes: { route: path, ...(clientRequestId ? { client_request_id: clientRequestId } : {}) },
            }));
        }
        catch (raw) {
            const err = asControlPlaneError(raw);
            metrics.admitSeconds.observe({ result: "error" }, (performance.now() - admitStarted) / 1000);
            if (!err.unreachable)
                return refused(res, err, base);
            if (config.failurePolicy === "FAIL_OPEN")
                return unadmitted({ req, res, request, task, credential, requestId, startedAt, log: log(), err });
            log().error({ code: Code[err.code], err: err.message }, "control plane unreachable; denied (FAIL_CLOSED)");
            return sendErrorResponse(res, unavailableResponse(base));
        }
        const admitMs = performance.now() - admitStarted;
        metrics.admitSeconds.observe({ result: decision.allowed ? "allowed" : "denied" }, admitMs / 1000);
        if (!decision.allowed) {
            log().info({ tenant: decision.tenant, task, status: decision.httpStatus, reason: decision.message }, "denied");
            return sendDenial(res, decision, requestId);
        }
        deps.failOpen.remember(task, request.model, decision.routes);
        const flight = new Flight({
            requestId, credential, task, request, tenant: decision.tenant, reservationId: decision.reservationId, routes: decision.routes,
            maxOutputTokens: Number(decision.maxOutputTokens), headers: decisionHeaders(decision, requestId), startedAt, admitMs,
        });
        if (decision.unmetered)
            log().warn({ tenant: decision.tenant }, "admitted unmetered: the control plane's counter store is down");
        takeOff(req, res, flight);
        if (flight.done)
            return;
        if (decision.leaseExpiresAt) {
            flight.renewer = new LeaseRenewer({ client: deps.controlPlane, reservationId: decision.reservationId, leaseExpiresAtMs: timestampMs(decision.leaseExpiresAt), logger, requestId });
        }
    }
    /** Starts the flight, unless the client left while it was being decided. */
    function takeOff(req, res, flight) {
        if (flight.init.routes.length === 0) {
            settle(flight, Outcome.UPSTREAM_ERROR);
            return badGateway(res, flight, "the decision carries no route");
        }
        if (res.destroyed || req.socket.destroyed)
            return settle(flight, Outcome.CLIENT_ABORTED);
        req[flightOf] = flight;
        res.on("close", () => {
            if (res.writableFinished || flight.done)
                return;
            flight.proxyRes?.destroy();
            flight.proxyReq?.destroy();
            settle(flight, Outcome.CLIENT_ABORTED);
        });
        guarded(flight, res, () => forward(req, res, flight));
    }
    /** FAIL_OPEN: forward without a decision, on the last routes seen for this task and model; usage recorded when the link is back. */
    function unadmitted(a) {
        const routes = deps.failOpen.routesFor(a.task, a.request.model);
        if (!routes) {
            a.log.error({ err: a.err.message }, "control plane unreachable and no route known for this task and model; denied");
            return sendError(a.res, 503, "admission control unavailable and no known route for this model; retry shortly", {
                headers: { "x-request-id": a.requestId, "retry-after": "1" }, code: "unavailable",
            });
        }
        a.log.warn({ task: a.task, err: a.err.message }, "control plane unreachable; forwarded unmetered (FAIL_OPEN)");
        const view = create(AdmitResponseSchema, { allowed: true, unmetered: true, warnings: [unmeteredWarning] });
        takeOff(a.req, a.res, new Flight({
            requestId: a.requestId, credential: a.credential, task: a.task, request: a.request, tenant: "", reservationId: "", routes,
            maxOutputTokens: undefined, headers: decisionHeaders(view, a.requestId), startedAt: a.startedAt, admitMs: 0,
        }));
    }
    /** The control plane refused the call itself (malformed request, bad credential...). */
    function refused(res, err, headers) {
        const answer = refusalResponse(err, headers);
        if (answer.status === 502)
            logger.error({ code: Code[err.code], err: err.message }, "control plane refused the call");
        sendErrorResponse(res, answer);
    }
    /** Every model the credential may use, whatever task the client's default headers name (SDKs send them on every call). */
    async function listModels(req, res, headers) {
        const credential = bearer(req);
        if (!credential)
            return sendError(res, 401, "missing 'Authorization: Bearer <API key or JWT>'", { headers, code: "unauthenticated" });
        try {
            const body = JSON.stringify(modelList(await deps.controlPlane.effectivePolicy(credential)));
            res.writeHead(200, { ...headers, "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) });
            res.end(body);
        }
        catch (raw) {
            const err = asControlPlaneError(raw);
            if (!err.unreachable)
                return refused(res, err, headers);
            sendErrorResponse(res, unavailableResponse(headers));
        }
    }
    function taskOf(req, routeTask) {
        const header = req.headers["x-llm-task"];
        if (header !== undefined)
            return typeof header === "string" && isTaskCode(header) ? header : undefined;
        return routeTask ?? config.defaultTask;
    }
    // Slow clients are cut off: the whole request within requestTimeoutMs, checked often enough to matter.
    const server = createServer({
        requestTimeout: config.requestTimeoutMs,
        headersTimeout: config.headersTimeoutMs,
        connectionsCheckingInterval: Math.min(1_000, config.headersTimeoutMs),
    }, (req, res) => {
        const path = (req.url ?? "").split("?")[0];
        if (req.method === "GET" && path === "/healthz")
            return void json(res, 200, { status: "ok" });
        if (req.method === "GET" && path === "/readyz") {
            const ready = deps.controlPlane.connected();
            const spooled = deps.settler.spooled();
            return void json(res, ready ? 200 : 503, {
                ready,
                checks: { controlPlane: ready ? "ok" : "not connected", settleSpool: spooled ? `${spooled} settles waiting for replay` : "empty", failOpen: deps.failOpen.size() ? `${deps.failOpen.size()} unadmitted requests waiting to be recorded` : "none" },
            });
        }
        if (req.method === "GET" && path === "/metrics") {
            void metrics.registry.metrics().then((text) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(text));
            return;
        }
        handle(req, res).catch((err) => {
            logger.error({ err }, "proxy handler failed");
            sendError(res, 500, "internal error", { code: "internal_error" });
        });
    });
    server.on("clientError", (err, socket) => answerClientError(socket, parserRefusal(err.code), clientErrorBody));
    server.on("close", () => {
        agents.http.destroy();
        agents.https.destroy();
        proxy.close();
    });
    return server;
}
function bearer(req) {
    return /^Bearer\s+(\S{1,4096})\s*$/i.exec(String(req.headers.authorization ?? ""))?.[1];
}
function json(res, status, body) {
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
    res.end(JSON.stringify(body));
}
/** A provider and what reaches it: its agent, and its URL for each route parsed once (http-proxy parses a URL string on every request). */
class Upstream {
    provider;
    agent;
    targets = new Map();
    constructor(provider, agent) {
        this.provider = provider;
        this.agent = agent;
    }
    target(path) {
        let target = this.targets.get(path);
        if (!target)
            this.targets.set(path, (target = parseUrl(new URL(this.provider.baseUrl + path).href)));
        return target;
    }
}
/** The rewritten body as http-proxy's `buffer`: piped, it ends the provider request with the whole body in one write. */
class BodySource extends Stream {
    body;
    constructor(body) {
        super();
        this.body = body;
    }
    pipe(destination) {
        destination.end(this.body);
        return destination;
    }
}
//# sourceMappingURL=proxy-server.js.map
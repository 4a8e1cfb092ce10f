import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Outcome, SettleRequestSchema } from "../../gen/admission/v1/admission_pb.js";
import { rateLimitHeaderNames, rateLimitHeaders, upstreamDecisionHeaders } from "../../control-plane/rate-limit-headers.js";
import { isTaskCode } from "../../data-plane/config.js";
import { ControlPlaneClient } from "../../data-plane/control-plane-client.js";
import { asControlPlaneError } from "../../data-plane/control-plane-error.js";
import { denialResponse, errorResponse, refusalResponse, unavailableResponse } from "../../data-plane/openai-error.js";
import { admitRequestFor, llmPaths, parseLlmRequest, rewriteBody } from "../../data-plane/openai-request.js";
import { matchRoute } from "../../data-plane/routes.js";
import { UsageFeed, UsageReader } from "../../data-plane/usage-reader.js";
import { pdkBuffer } from "./pdk.js";
import { pluginConfig } from "./schema.js";
export { Schema } from "./schema.js";
export const Version = "0.1.0";
/**
 * Runs after authentication plugins and request-size-limiting (951), before
 * rate-limiting (910) and request-transformer (801) — which may then add the
 * provider's key once this plugin has removed the client's credential.
 */
export const Priority = 920;
/** The key of this plugin's per-request state in kong.ctx.shared. */
export const stateKey = "llm-admission";
const unmeteredWarning = "control plane unreachable: allowed unmetered (FAIL_OPEN), usage not recorded";
/** One gRPC client per control-plane address and settings, shared by every plugin instance (Kong starts one per config, and drops them without notice). */
const clients = new Map();
function clientFor(config) {
    const key = JSON.stringify([config.control_plane_address, config.tls, config.tls_ca_pem, config.admit_timeout_ms, config.settle_timeout_ms]);
    let client = clients.get(key);
    if (!client) {
        client = new ControlPlaneClient({
            address: config.control_plane_address,
            credentials: config.tls ? grpc.credentials.createSsl(config.tls_ca_pem ? Buffer.from(config.tls_ca_pem) : null) : grpc.credentials.createInsecure(),
            timeoutMs: config.admit_timeout_ms,
            settleTimeoutMs: config.settle_timeout_ms,
        });
        clients.set(key, client);
    }
    return client;
}
/** Closes every control-plane client (tests; a plugin server shutting down). */
export function closeControlPlaneClients() {
    for (const client of clients.values())
        client.close();
    clients.clear();
}
/** Reservations being settled by this process: a log phase run twice at once settles once. */
const settling = new Set();
/**
 * Admission control for LLM traffic through Kong (kong-js-pluginserver).
 * access: Admit before the request is proxied — a denial ends it with the
 * decision's status, OpenAI-style JSON body, Retry-After and x-ratelimit-*;
 * an admitted request goes upstream with the reservation headers, without the
 * client's credential, and with its body rewritten (routed model, clamped
 * max tokens, usage asked for on streams). response (buffered proxying):
 * the provider's usage read from its JSON or SSE answer, x-ratelimit-* for
 * the client. log: Settle, exactly once, whatever happened to the request.
 */
export class Plugin {
    config;
    client;
    constructor(config = {}) {
        this.config = pluginConfig(config);
        this.client = clientFor(this.config);
    }
    async access(kong) {
        const requestId = `kong-${randomUUID()}`;
        try {
            await this.admit(kong, requestId);
        }
        catch (err) {
            // A bug or a PDK failure must not let the request through as it came (with the client's credential).
            await kong.log.err(`llm-admission: access failed: ${err instanceof Error ? err.message : String(err)}`).catch(() => null);
            await exit(kong, errorResponse(500, "admission control failed on this request", { headers: { "x-request-id": requestId }, code: "internal_error" })).catch(() => null);
        }
    }
    async response(kong) {
        try {
            await this.readAnswer(kong);
        }
        catch (err) {
            // The log phase then settles without the provider's usage (the prompt, estimated).
            await kong.log.err(`llm-admission: reading the provider's answer failed: ${err instanceof Error ? err.message : String(err)}`).catch(() => null);
        }
    }
    async log(kong) {
        const state = await readState(kong);
        if (!state?.reservationId || state.settled || settling.has(state.reservationId))
            return;
        settling.add(state.reservationId);
        try {
            state.settled = true;
            // Not fatal: a second log phase would send a duplicate Settle, which the control plane ignores.
            await writeState(kong, state).catch(() => undefined);
            const usage = state.upstream ? fromUpstream(state, state.upstream) : await withoutUpstream(kong, state);
            await this.settle(kong, create(SettleRequestSchema, {
                reservationId: state.reservationId,
                inputTokens: BigInt(usage.inputTokens),
                outputTokens: BigInt(usage.outputTokens),
                provider: state.provider,
                model: state.model,
                outcome: usage.outcome,
                latencyMs: BigInt(Math.min(usage.latencyMs, 86_400_000)),
                estimated: usage.estimated,
            }));
        }
        finally {
            settling.delete(state.reservationId);
        }
    }
    /** The response phase: the client's headers; the provider's status and usage kept for the log phase. */
    async readAnswer(kong) {
        const state = await readState(kong);
        if (!state)
            return;
        // The provider account's own rate limits stay behind; the client sees its own.
        for (const name of rateLimitHeaderNames)
            if (!(name in state.responseHeaders))
                await kong.response.clearHeader(name);
        if (Object.keys(state.responseHeaders).length > 0)
            await kong.response.setHeaders(state.responseHeaders);
        if (!state.reservationId)
            return;
        const status = (await kong.service.response.getStatus()) ?? 502;
        const contentType = (await kong.service.response.getHeader("content-type")) ?? "";
        const contentEncoding = (await kong.service.response.getHeader("content-encoding")) ?? undefined;
        const body = pdkBuffer(await kong.service.response.getRawBody()) ?? Buffer.alloc(0);
        const reader = new UsageReader(contentType.toLowerCase().includes("text/event-stream"));
        const feed = new UsageFeed(reader, contentEncoding);
        feed.push(body);
        await feed.finish();
        const reported = reader.reported();
        // The tokenizer runs over the generated text only when the provider reported no usage.
        const estimatedOutputTokens = reported ? 0 : reader.estimatedOutputTokens();
        state.upstream = { status, reported, estimatedOutputTokens, latencyMs: Math.max(0, Date.now() - state.forwardedAt) };
        await writeState(kong, state);
    }
    async admit(kong, requestId) {
        const base = { "x-request-id": requestId };
        const rawPath = await kong.request.getPath();
        const matched = matchRoute(rawPath, []);
        if (!matched || !llmPaths.has(matched.path)) {
            return exit(kong, errorResponse(404, `not an LLM route admission control meters: ${rawPath.slice(0, 200)}`, { headers: base, code: "unknown_route" }));
        }
        const path = matched.path;
        if ((await kong.request.getMethod()) !== "POST")
            return exit(kong, errorResponse(405, `use POST /v1${path}`, { headers: { ...base, allow: "POST" }, code: "method_not_allowed" }));
        const credential = /^Bearer\s+(\S{1,4096})\s*$/i.exec((await kong.request.getHeader("authorization")) ?? "")?.[1];
        if (!credential)
            return exit(kong, errorResponse(401, "missing 'Authorization: Bearer <API key or JWT>'", { headers: base, code: "unauthenticated" }));
        const taskHeader = await kong.request.getHeader("x-llm-task");
        if (taskHeader !== null && taskHeader !== undefined && !isTaskCode(taskHeader)) {
            return exit(kong, errorResponse(400, "invalid x-llm-task header: 1-64 letters, digits, '_', '-' or '.'", { headers: base, code: "invalid_request", param: "x-llm-task" }));
        }
        const task = taskHeader || matched.task || this.config.default_task;
        if (!task)
            return exit(kong, errorResponse(400, "no task: send the x-llm-task header (or set the plugin's default_task)", { headers: base, code: "invalid_request", param: "x-llm-task" }));
        let raw = pdkBuffer(await kong.request.getRawBody());
        if (raw === undefined) {
            // Lua nil: the body was larger than Kong keeps in memory (client_body_buffer_size), or there is none.
            if (Number((await kong.request.getHeader("content-length")) ?? 0) > 0) {
                return exit(kong, errorResponse(413, "request body larger than the gateway buffers (raise nginx_http_client_body_buffer_size)", { headers: base, code: "request_too_large" }));
            }
            raw = Buffer.alloc(0);
        }
        if (raw.length > this.config.max_body_bytes)
            return exit(kong, errorResponse(413, `request body over ${this.config.max_body_bytes} bytes`, { headers: base, code: "request_too_large" }));
        const request = parseLlmRequest(path, raw);
        if ("error" in request)
            return exit(kong, errorResponse(400, request.error, { headers: base, code: "invalid_request", param: request.param }));
        let decision;
        try {
            decision = await this.client.admit(admitRequestFor(request, { requestId, credential, task, attributes: { gateway: "kong", route: path } }));
        }
        catch (rawErr) {
            const err = asControlPlaneError(rawErr);
            if (!err.unreachable) {
                const answer = refusalResponse(err, base);
                if (answer.status === 502)
                    await kong.log.err(`llm-admission: control plane refused Admit: ${grpc.status[err.code]} ${err.message}`);
                return exit(kong, answer);
            }
            if (this.config.failure_policy === "FAIL_OPEN") {
                await kong.log.warn(`llm-admission: control plane unreachable (${err.message}); forwarded unmetered (FAIL_OPEN)`);
                await writeState(kong, {
                    requestId, reservationId: "", tenant: "", provider: "", model: request.model, inputTokens: request.inputTokens,
                    responseHeaders: { "x-admission-warnings": unmeteredWarning }, forwardedAt: Date.now(),
                });
                await kong.service.request.clearHeader("authorization");
                return;
            }
            await kong.log.err(`llm-admission: control plane unreachable (${err.message}); denied (FAIL_CLOSED)`);
            return exit(kong, unavailableResponse(base));
        }
        if (!decision.allowed)
            return exit(kong, denialResponse(decision, requestId));
        const route = decision.routes[0];
        // Saved first: whatever happens next, the log phase finds the reservation and settles it.
        await writeState(kong, {
            requestId,
            reservationId: decision.reservationId,
            tenant: decision.tenant,
            provider: route?.provider ?? "",
            model: route?.model ?? "",
            inputTokens: request.inputTokens,
            responseHeaders: rateLimitHeaders(decision),
            forwardedAt: Date.now(),
        });
        const body = rewriteBody(request, { providerModel: route ? route.providerModel || route.model : request.model, maxOutputTokens: Number(decision.maxOutputTokens) });
        await kong.service.request.setHeaders({
            ...upstreamDecisionHeaders(decision),
            "x-request-id": requestId,
            "content-type": "application/json",
            // Usage is read from the buffered answer: it must not come compressed.
            "accept-encoding": "identity",
        });
        // The provider must never see the client's credential.
        await kong.service.request.clearHeader("authorization");
        await kong.service.request.setRawBody(body.toString("utf8"));
    }
    /** Settle, retried while the control plane is unreachable (idempotent on the reservation id); otherwise the lease expires and is charged its estimate. */
    async settle(kong, req) {
        for (let attempt = 0;; attempt++) {
            try {
                await this.client.settle(req);
                return;
            }
            catch (raw) {
                const err = asControlPlaneError(raw);
                if (!err.unreachable || attempt >= 2) {
                    await kong.log.err(`llm-admission: settle of ${req.reservationId} failed (${grpc.status[err.code]}: ${err.message}); its lease will expire and be charged its estimate`);
                    return;
                }
                await new Promise((resolve) => setTimeout(resolve, 200 * 4 ** attempt));
            }
        }
    }
}
/**
 * The provider answered: what it reported, or — when it worked (status < 400)
 * and reported nothing — the tokenizer's count of the prompt and of the text
 * it generated. A failed answer charges nothing.
 */
function fromUpstream(state, up) {
    const worked = up.status < 400;
    return {
        inputTokens: up.reported?.inputTokens ?? (worked ? state.inputTokens : 0),
        outputTokens: up.reported?.outputTokens ?? (worked ? up.estimatedOutputTokens : 0),
        estimated: up.reported === undefined && worked,
        outcome: worked ? Outcome.SUCCESS : Outcome.UPSTREAM_ERROR,
        latencyMs: up.latencyMs,
    };
}
/**
 * No answer was read: Kong could not reach the provider or timed out
 * (source "error"), a later plugin ended the request ("exit"), or the client
 * left. Nothing is charged, unless the provider did answer with a success
 * (then the prompt, estimated).
 */
async function withoutUpstream(kong, state) {
    const source = await kong.response.getSource();
    const status = (await kong.response.getStatus()) ?? 0;
    const latencyMs = Math.max(0, Date.now() - state.forwardedAt);
    if (source === "service" && status > 0 && status < 400) {
        return { inputTokens: state.inputTokens, outputTokens: 0, estimated: true, outcome: Outcome.SUCCESS, latencyMs };
    }
    const outcome = status === 504 ? Outcome.TIMEOUT : status === 499 ? Outcome.CLIENT_ABORTED : Outcome.UPSTREAM_ERROR;
    return { inputTokens: 0, outputTokens: 0, estimated: false, outcome, latencyMs };
}
function exit(kong, answer) {
    return kong.response.exit(answer.status, answer.body, answer.headers).then(() => undefined);
}
async function readState(kong) {
    const raw = await kong.ctx.shared.get(stateKey);
    if (typeof raw !== "string" || raw === "")
        return undefined;
    try {
        return JSON.parse(raw);
    }
    catch {
        return undefined;
    }
}
async function writeState(kong, state) {
    await kong.ctx.shared.set(stateKey, JSON.stringify(state));
}
//# sourceMappingURL=admission-plugin.js.map
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { AdmitResponseSchema, DenyReason } from "../../gen/admission/v1/admission_pb.js";
import { HeaderValueOption_HeaderAppendAction } from "../../gen/envoy/config/core/v3/base_pb.js";
import { Authorization, CheckResponseSchema } from "../../gen/envoy/service/auth/v3/external_auth_pb.js";
import { reasonMapping } from "../deny-reasons.js";
import { deadlineMs } from "../in-flight-limit.js";
import { RpcError } from "../rpc-error.js";
import { denialBody, rateLimitHeaders, upstreamDecisionHeaders } from "../rate-limit-headers.js";
import { countInputTokens } from "../token-counter.js";
import { grpcServiceDefinition, MalformedRequest } from "./service-definition.js";
/** Largest body parsed for model and token counts (Envoy's with_request_body max_request_bytes should be at most this). */
const maxBodyChars = 4 * 1024 * 1024;
/**
 * Envoy's ext_authz Check over the decision engine. The credential comes from
 * `authorization`, the task from `x-llm-task` or the route's context_extensions
 * (`task`), model and max tokens from `x-llm-model` / `x-llm-max-tokens` or the
 * buffered JSON body; input tokens are counted from the body. Allowed: headers
 * for the upstream (reservation id, tenant, user, clamped max tokens, routed
 * model) and x-ratelimit-* for the client. Denied: the design's HTTP status, a
 * JSON body, Retry-After, and the matching google.rpc code. A Check is never
 * settled by Envoy: its lease expires and is charged its estimate, unless the
 * upstream or a later filter settles `x-llm-reservation-id` with Settle.
 */
export function checkHandler(engine) {
    return async (req) => {
        const http = req.attributes?.request?.http;
        const headers = http?.headers ?? {};
        const extensions = req.attributes?.contextExtensions ?? {};
        const credential = /^Bearer\s+(\S+)$/i.exec(headers.authorization ?? "")?.[1] ?? "";
        const task = headers["x-llm-task"] || extensions.task || extensions["x-llm-task"] || "";
        const body = parseBody(http?.body || (http?.rawBody?.length ? Buffer.from(http.rawBody).toString("utf8") : ""));
        const model = headers["x-llm-model"] ?? (typeof body.json?.model === "string" ? body.json.model : "");
        const maxTokens = integer(headers["x-llm-max-tokens"]) ?? integer(body.json?.max_completion_tokens) ?? integer(body.json?.max_tokens) ?? 0;
        const inputTokens = integer(headers["x-llm-input-tokens"]) ?? body.inputTokens;
        if (!credential)
            return deny(DenyReason.UNAUTHENTICATED, 401, "missing 'authorization: Bearer <API key or JWT>'");
        if (!task)
            return deny(DenyReason.INVALID_REQUEST, 400, "no task: send x-llm-task or set the route's context_extensions task");
        if (maxTokens < 0 || inputTokens < 0)
            return deny(DenyReason.INVALID_REQUEST, 400, "token counts must not be negative");
        // Messages on this path are literals, as create() would build them: create() is measurable per Check.
        const decision = await engine.admit({
            $typeName: "admission.v1.AdmitRequest",
            requestId: http?.id && /^[\x21-\x7e]{1,128}$/.test(http.id) ? http.id : "",
            credential,
            task: task.slice(0, 65),
            model: model.slice(0, 129),
            inputTokens: BigInt(Math.min(inputTokens, 1_000_000_000)),
            maxOutputTokens: BigInt(Math.min(maxTokens, 1_000_000_000)),
            files: 0n,
            agentSteps: 0n,
            apiCalls: 0n,
            attributes: { gateway: "envoy", path: (http?.path ?? "").slice(0, 200) },
        });
        return decision.allowed ? allow(decision) : denied(decision);
    };
}
/**
 * Registers envoy.service.auth.v3.Authorization, under the shared in-flight
 * limit (shed calls answer RESOURCE_EXHAUSTED: Envoy then applies its
 * failure_mode_allow); RPC counts in the control plane's metrics.
 */
export function addExtAuthz(server, deps) {
    const check = checkHandler(deps.engine);
    const { metrics } = deps;
    server.addService(grpcServiceDefinition(Authorization, { tolerateMalformedRequests: true }), {
        check: (call, callback) => {
            const request = call.request;
            if (request instanceof MalformedRequest) {
                metrics.rpcs.inc({ method: "Check", code: "INVALID_ARGUMENT" });
                return callback({ code: grpc.status.INVALID_ARGUMENT, details: request.message });
            }
            const refused = deps.limit.enter({ deadlineMs: deadlineMs(call.getDeadline()), cancelled: call.cancelled });
            const answered = refused ? Promise.reject(refused) : check(call.request).finally(() => deps.limit.leave());
            answered.then((res) => {
                metrics.rpcs.inc({ method: "Check", code: "OK" });
                callback(null, res);
            }, (err) => {
                if (err instanceof RpcError) {
                    metrics.rpcs.inc({ method: "Check", code: grpc.status[err.code] });
                    return callback({ code: err.code, details: err.message });
                }
                metrics.rpcs.inc({ method: "Check", code: "INTERNAL" });
                deps.logger.error({ err }, "unexpected error in Check");
                callback({ code: grpc.status.INTERNAL, details: "internal error" });
            });
        },
    });
}
function parseBody(text) {
    if (!text)
        return { inputTokens: 0 };
    if (text.length > maxBodyChars)
        return { inputTokens: Math.ceil(text.length / 4) };
    try {
        const json = JSON.parse(text);
        if (json && typeof json === "object" && !Array.isArray(json))
            return { json, inputTokens: countInputTokens(endpointOf(json), json) };
    }
    catch {
        // Not JSON, or truncated by Envoy (allow_partial_message): estimate from its size.
    }
    return { inputTokens: Math.ceil(text.length / 4) };
}
/**
 * Which OpenAI endpoint a body is for, by its shape (routes name paths in many
 * ways): its input tokens are then counted exactly as the data plane counts them.
 */
function endpointOf(body) {
    if (Array.isArray(body.messages))
        return "/chat/completions";
    return body.prompt === undefined && body.input !== undefined ? "/embeddings" : "/completions";
}
function integer(value) {
    const n = typeof value === "string" && value !== "" ? Number(value) : value;
    return typeof n === "number" && Number.isSafeInteger(n) ? n : undefined;
}
const noBytes = new Uint8Array(0);
function headers(values) {
    const options = [];
    for (const key in values) {
        options.push({
            $typeName: "envoy.config.core.v3.HeaderValueOption",
            header: { $typeName: "envoy.config.core.v3.HeaderValue", key, value: values[key], rawValue: noBytes },
            appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            keepEmptyValue: false,
        });
    }
    return options;
}
function allow(d) {
    return {
        $typeName: "envoy.service.auth.v3.CheckResponse",
        status: { $typeName: "google.rpc.Status", code: grpc.status.OK, message: "", details: [] },
        httpResponse: {
            case: "okResponse",
            value: {
                $typeName: "envoy.service.auth.v3.OkHttpResponse",
                headers: headers(upstreamDecisionHeaders(d)),
                // The upstream (the provider) must never see the client's credential.
                headersToRemove: ["authorization"],
                responseHeadersToAdd: headers(rateLimitHeaders(d)),
            },
        },
    };
}
function denied(d) {
    const mapping = reasonMapping(d.reason);
    const responseHeaders = { "content-type": "application/json", ...rateLimitHeaders(d) };
    return create(CheckResponseSchema, {
        status: { code: mapping.grpcCode, message: d.message },
        httpResponse: {
            case: "deniedResponse",
            value: { status: { code: d.httpStatus }, headers: headers(responseHeaders), body: denialBody(d, mapping.code) },
        },
    });
}
function deny(reason, httpStatus, message) {
    return denied(create(AdmitResponseSchema, { allowed: false, reason, httpStatus, message }));
}
//# sourceMappingURL=ext-authz.js.map
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { trace, type Tracer } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { AdmitRequest, AdmitResponse } from "../../gen/admission/v1/admission_pb.js";
import { AdmitResponseSchema, DenyReason } from "../../gen/admission/v1/admission_pb.js";
import type { HeaderValueOption } from "../../gen/envoy/config/core/v3/base_pb.js";
import { HeaderValueOption_HeaderAppendAction } from "../../gen/envoy/config/core/v3/base_pb.js";
import type { CheckRequest, CheckResponse } from "../../gen/envoy/service/auth/v3/external_auth_pb.js";
import { Authorization, CheckResponseSchema } from "../../gen/envoy/service/auth/v3/external_auth_pb.js";
import type { DecisionEngine } from "../decide.js";
import { reasonMapping } from "../deny-reasons.js";
import { deadlineMs, type InFlightLimit } from "../in-flight-limit.js";
import type { Metrics } from "../metrics.js";
import { clientCredential, llmRouteOf, llmRoutes, parseJsonObject, readLlmBody, reservedOutputTokens, type LlmRoute, type ProviderApi } from "../llm-request.js";
import { RpcError } from "../rpc-error.js";
import { rpcSpan, setAdmitAttributes } from "../tracing.js";
import { denialBody, rateLimitHeaders, upstreamDecisionHeaders } from "../rate-limit-headers.js";
import { grpcServiceDefinition, MalformedRequest } from "./service-definition.js";

/** Largest body parsed for model and token counts (Envoy's with_request_body max_request_bytes should be at most this). */
const maxBodyChars = 4 * 1024 * 1024;

/**
 * Envoy's ext_authz Check over the decision engine. The credential comes from
 * `authorization` (Bearer) or `x-api-key`, the task from `x-llm-task` or the
 * route's context_extensions (`task`), model and max tokens from `x-llm-model`
 * / `x-llm-max-tokens` or the buffered JSON body, which is read as the data
 * plane reads it (llm-request.ts: the route its path names — Chat Completions,
 * Completions, Embeddings, Responses, Messages — or, on another path, the one
 * its shape is); input tokens are counted from the body. Allowed: headers for
 * the upstream (reservation id, tenant, user, clamped max tokens, routed
 * model), without the client's credential, and x-ratelimit-* for the client.
 * Denied: the design's HTTP status, a JSON body in the request API's error
 * shape, Retry-After, and the matching google.rpc code. A Check is never
 * settled by Envoy: its lease expires and is charged its estimate, unless the
 * upstream or a later filter settles `x-llm-reservation-id` with Settle.
 */
export function checkHandler(engine: DecisionEngine, tracer?: Tracer): (req: CheckRequest, caller?: { readonly cancelled: boolean }) => Promise<CheckResponse> {
  return async (req, caller) => {
    const http = req.attributes?.request?.http;
    const headers = http?.headers ?? {};
    const extensions = req.attributes?.contextExtensions ?? {};
    const credential = clientCredential(headers.authorization, headers["x-api-key"]) ?? "";
    const task = headers["x-llm-task"] || extensions.task || extensions["x-llm-task"] || "";
    const body = readBody(http?.body || (http?.rawBody?.length ? Buffer.from(http.rawBody).toString("utf8") : ""), http?.path ?? "", headers);
    const { api } = body;
    // Checked in the data plane's order: credential, task, then the body.
    if (!credential) return deny(DenyReason.UNAUTHENTICATED, 401, "missing credential: send 'authorization: Bearer <API key or JWT>' or 'x-api-key: <API key>'", api);
    if (!task) return deny(DenyReason.INVALID_REQUEST, 400, "no task: send x-llm-task or set the route's context_extensions task", api);
    if ("invalid" in body) return deny(DenyReason.INVALID_REQUEST, 400, body.invalid, api);
    const model = headers["x-llm-model"] ?? body.model;
    const maxTokens = integer(headers["x-llm-max-tokens"]) ?? body.maxOutputTokens;
    const inputTokens = integer(headers["x-llm-input-tokens"]) ?? body.inputTokens;

    if (maxTokens < 0 || inputTokens < 0) return deny(DenyReason.INVALID_REQUEST, 400, "token counts must not be negative", api);
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
    } satisfies AdmitRequest, caller);
    const span = tracer && trace.getActiveSpan();
    if (span) {
      span.setAttributes({ "admission.task": task.slice(0, 65), "gen_ai.request.model": model.slice(0, 129) });
      setAdmitAttributes(span, decision);
    }
    return decision.allowed ? allow(decision) : denied(decision, api);
  };
}

/**
 * Registers envoy.service.auth.v3.Authorization, under the shared in-flight
 * limit (shed calls answer RESOURCE_EXHAUSTED: Envoy then applies its
 * failure_mode_allow); RPC counts in the control plane's metrics.
 */
export function addExtAuthz(server: grpc.Server, deps: { engine: DecisionEngine; metrics: Metrics; limit: InFlightLimit; logger: Logger; tracer?: Tracer }): void {
  const { tracer } = deps;
  const decide = checkHandler(deps.engine, tracer);
  // A child of Envoy's span: from the call's metadata, else the checked request's own headers.
  const check = !tracer ? decide : (req: CheckRequest, call: grpc.ServerUnaryCall<CheckRequest, CheckResponse>) => rpcSpan(tracer, {
    service: Authorization.typeName,
    method: "Check",
    header: (name) => {
      const value = call.metadata.get(name)[0];
      return value !== undefined ? String(value) : req.attributes?.request?.http?.headers[name];
    },
  }, () => decide(req, call));
  const { metrics } = deps;
  server.addService(grpcServiceDefinition(Authorization, { tolerateMalformedRequests: true }), {
    check: (call: grpc.ServerUnaryCall<CheckRequest, CheckResponse>, callback: grpc.sendUnaryData<CheckResponse>) => {
      const request: unknown = call.request;
      if (request instanceof MalformedRequest) {
        metrics.rpcs.inc({ method: "Check", code: "INVALID_ARGUMENT" });
        return callback({ code: grpc.status.INVALID_ARGUMENT, details: request.message });
      }
      const refused = deps.limit.enter({ deadlineMs: deadlineMs(call.getDeadline()), cancelled: call.cancelled });
      const answered = refused ? Promise.reject(refused) : check(call.request, call).finally(() => deps.limit.leave());
      answered.then(
        (res) => {
          metrics.rpcs.inc({ method: "Check", code: "OK" });
          callback(null, res);
        },
        (err) => {
          if (err instanceof RpcError) {
            metrics.rpcs.inc({ method: "Check", code: grpc.status[err.code] });
            return callback({ code: err.code, details: err.message });
          }
          metrics.rpcs.inc({ method: "Check", code: "INTERNAL" });
          deps.logger.error({ err }, "unexpected error in Check");
          callback({ code: grpc.status.INTERNAL, details: "internal error" });
        },
      );
    },
  } as grpc.UntypedServiceImplementation);
}

/** What a Check's body says: model, reserved output cap and input tokens, in the request API's error shape; or why it is refused. */
type CheckBody = { api: ProviderApi } & ({ model: string; maxOutputTokens: number; inputTokens: number } | { invalid: string });

/**
 * The buffered body read as the data plane reads it. Empty: nothing from it.
 * Not JSON, or truncated by Envoy (allow_partial_message), or too long to
 * parse: input estimated from its size. JSON of the wrong shape: refused.
 */
function readBody(text: string, path: string, headers: Record<string, string>): CheckBody {
  const pathRoute = llmRouteOf(path);
  const api = pathRoute?.api ?? (headers["anthropic-version"] !== undefined ? "anthropic" : "openai");
  if (!text) return { api, model: "", maxOutputTokens: 0, inputTokens: 0 };
  const bySize = { api, model: "", maxOutputTokens: 0, inputTokens: Math.ceil(text.length / 4) };
  if (text.length > maxBodyChars) return bySize;
  const parsed = parseJsonObject(text);
  if (!("json" in parsed)) return parsed.notJson ? bySize : { api, invalid: parsed.error };
  const route = pathRoute ?? routeOfBody(parsed.json, api);
  const request = readLlmBody(route, parsed.json);
  if ("error" in request) return { api: route.api, invalid: request.error };
  return { api: route.api, model: request.model, maxOutputTokens: reservedOutputTokens(request), inputTokens: request.inputTokens };
}

/** On a path that names no metered route (Envoy routes name paths in many ways): the route the body's shape is. */
function routeOfBody(body: Record<string, unknown>, api: ProviderApi): LlmRoute {
  const path = api === "anthropic" ? "/messages"
    : Array.isArray(body.messages) ? "/chat/completions"
    : body.prompt !== undefined ? "/completions"
    : body.instructions !== undefined || body.max_output_tokens !== undefined || Array.isArray(body.input) && body.input.some((i) => typeof i === "object") ? "/responses"
    : body.input !== undefined ? "/embeddings" : "/completions";
  return llmRoutes.get(path)!;
}

function integer(value: unknown): number | undefined {
  const n = typeof value === "string" && value !== "" ? Number(value) : value;
  return typeof n === "number" && Number.isSafeInteger(n) ? n : undefined;
}

const noBytes = new Uint8Array(0);

function headers(values: Record<string, string>): HeaderValueOption[] {
  const options: HeaderValueOption[] = [];
  for (const key in values) {
    options.push({
      $typeName: "envoy.config.core.v3.HeaderValueOption",
      header: { $typeName: "envoy.config.core.v3.HeaderValue", key, value: values[key]!, rawValue: noBytes },
      appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
      keepEmptyValue: false,
    });
  }
  return options;
}

function allow(d: AdmitResponse): CheckResponse {
  return {
    $typeName: "envoy.service.auth.v3.CheckResponse",
    status: { $typeName: "google.rpc.Status", code: grpc.status.OK, message: "", details: [] },
    httpResponse: {
      case: "okResponse",
      value: {
        $typeName: "envoy.service.auth.v3.OkHttpResponse",
        headers: headers(upstreamDecisionHeaders(d)),
        // The upstream (the provider) must never see the client's credential, in either API's header.
        headersToRemove: ["authorization", "x-api-key"],
        responseHeadersToAdd: headers(rateLimitHeaders(d)),
      },
    },
  };
}

function denied(d: AdmitResponse, api: ProviderApi): CheckResponse {
  const mapping = reasonMapping(d.reason);
  const responseHeaders = { "content-type": "application/json", ...rateLimitHeaders(d) };
  return create(CheckResponseSchema, {
    status: { code: mapping.grpcCode, message: d.message },
    httpResponse: {
      case: "deniedResponse",
      value: { status: { code: d.httpStatus }, headers: headers(responseHeaders), body: denialBody(d, mapping.code, api) },
    },
  });
}

function deny(reason: DenyReason, httpStatus: number, message: string, api: ProviderApi): CheckResponse {
  return denied(create(AdmitResponseSchema, { allowed: false, reason, httpStatus, message }), api);
}


import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { AdmitResponse, SettleRequest } from "../../gen/admission/v1/admission_pb.js";
import { Outcome, SettleRequestSchema } from "../../gen/admission/v1/admission_pb.js";
import { admitRequestFor, clientCredential, llmRoutes, parseLlmRequest, rewriteBody, type LlmFamily } from "../../control-plane/llm-request.js";
import { rateLimitHeaderNames, rateLimitHeaders, upstreamDecisionHeaders } from "../../control-plane/rate-limit-headers.js";
import { isTaskCode } from "../../data-plane/config.js";
import { ControlPlaneClient } from "../../data-plane/control-plane-client.js";
import { asControlPlaneError } from "../../data-plane/control-plane-error.js";
import { denialResponse, errorResponse, refusalResponse, unavailableResponse, type ErrorResponse } from "../../data-plane/error-response.js";
import { noUsage } from "../../data-plane/provider-usage.js";
import { matchRoute } from "../../data-plane/routes.js";
import { settledUsage, UsageFeed, UsageReader, type SettledUsage } from "../../data-plane/usage-reader.js";
import { pdkBuffer, type KongPdk } from "./pdk.js";
import { pluginConfig, type PluginConfig } from "./schema.js";

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

/** What one request carries from access to response to log, as JSON in kong.ctx.shared. */
interface RequestState {
  readonly requestId: string;
  /** The api of the request and of the provider's answer. */
  readonly family: LlmFamily;
  /** Empty when the request went through unmetered (FAIL_OPEN): nothing to settle. */
  readonly reservationId: string;
  readonly tenant: string;
  readonly provider: string;
  readonly model: string;
  /** Counted with the tokenizer: charged when the provider worked and reported no usage. */
  readonly inputTokens: number;
  /** For the client: x-ratelimit-*, warnings. */
  readonly responseHeaders: Record<string, string>;
  readonly forwardedAt: number;
  /** Read in the response phase from the provider's answer: its status, and the usage to settle were it a success. */
  upstream?: { status: number; settled: SettledUsage; latencyMs: number };
  settled?: boolean;
}

const unmeteredWarning = "control plane unreachable: allowed unmetered (FAIL_OPEN), usage not recorded";

/** One gRPC client per control-plane address and settings, shared by every plugin instance (Kong starts one per config, and drops them without notice). */
const clients = new Map<string, ControlPlaneClient>();

function clientFor(config: PluginConfig): ControlPlaneClient {
  const key = JSON.stringify([config.control_plane_address, config.tls, config.admit_timeout_ms, config.settle_timeout_ms]);
  let client = clients.get(key);
  if (!client) {
    client = new ControlPlaneClient({
      address: config.control_plane_address,
      tls: config.tls,
      timeoutMs: config.admit_timeout_ms,
      settleTimeoutMs: config.settle_timeout_ms,
    });
    clients.set(key, client);
  }
  return client;
}

/** Closes every control-plane client (tests; a plugin server shutting down). */
export function closeControlPlaneClients(): void {
  for (const client of clients.values()) client.close();
  clients.clear();
}

/** Reservations being settled by this process: a log phase run twice at once settles once. */
const settling = new Set<string>();

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
  private readonly config: PluginConfig;
  private readonly client: ControlPlaneClient;

  constructor(config: Record<string, unknown> = {}) {
    this.config = pluginConfig(config);
    this.client = clientFor(this.config);
  }

  async access(kong: KongPdk): Promise<void> {
    const requestId = `kong-${randomUUID()}`;
    try {
      await this.admit(kong, requestId);
    } catch (err) {
      // A bug or a PDK failure must not let the request through as it came (with the client's credential).
      await kong.log.err(`llm-admission: access failed: ${err instanceof Error ? err.message : String(err)}`).catch(() => null);
      await exit(kong, errorResponse(500, "admission control failed on this request", { headers: { "x-request-id": requestId }, code: "internal_error" })).catch(() => null);
    }
  }

  async response(kong: KongPdk): Promise<void> {
    try {
      await this.readAnswer(kong);
    } catch (err) {
      // The log phase then settles without the provider's usage (the prompt, estimated).
      await kong.log.err(`llm-admission: reading the provider's answer failed: ${err instanceof Error ? err.message : String(err)}`).catch(() => null);
    }
  }

  async log(kong: KongPdk): Promise<void> {
    const state = await readState(kong);
    if (!state?.reservationId || state.settled || settling.has(state.reservationId)) return;
    settling.add(state.reservationId);
    try {
      state.settled = true;
      // Not fatal: a second log phase would send a duplicate Settle, which the control plane ignores.
      await writeState(kong, state).catch(() => undefined);
      const charged = state.upstream ? fromUpstream(state.upstream) : await withoutUpstream(kong, state);
      const { usage } = charged;
      await this.settle(kong, create(SettleRequestSchema, {
        reservationId: state.reservationId,
        inputTokens: BigInt(usage.inputTokens),
        outputTokens: BigInt(usage.outputTokens),
        cacheReadTokens: BigInt(usage.cacheReadTokens),
        cacheWriteTokens: BigInt(usage.cacheWriteTokens),
        reasoningTokens: BigInt(usage.reasoningTokens),
        provider: state.provider,
        model: state.model,
        outcome: charged.outcome,
        latencyMs: BigInt(Math.min(charged.latencyMs, 86_400_000)),
        estimated: charged.estimated,
      }));
    } finally {
      settling.delete(state.reservationId);
    }
  }

  /** The response phase: the client's headers; the provider's status and usage kept for the log phase. */
  private async readAnswer(kong: KongPdk): Promise<void> {
    const state = await readState(kong);
    if (!state) return;
    // The provider account's own rate limits stay behind; the client sees its own.
    for (const name of rateLimitHeaderNames) if (!(name in state.responseHeaders)) await kong.response.clearHeader(name);
    if (Object.keys(state.responseHeaders).length > 0) await kong.response.setHeaders(state.responseHeaders);
    if (!state.reservationId) return;

    const status = (await kong.service.response.getStatus()) ?? 502;
    const contentType = (await kong.service.response.getHeader("content-type")) ?? "";
    const contentEncoding = (await kong.service.response.getHeader("content-encoding")) ?? undefined;
    const body = pdkBuffer(await kong.service.response.getRawBody()) ?? Buffer.alloc(0);
    const reader = new UsageReader(state.family, contentType.toLowerCase().includes("text/event-stream"));
    const feed = new UsageFeed(reader, contentEncoding);
    feed.push(body);
    await feed.finish();
    // The tokenizer runs over the generated text only when the provider did not report all of its usage.
    const settled = settledUsage(reader, { countedInputTokens: state.inputTokens, worked: status < 400 });
    state.upstream = { status, settled, latencyMs: Math.max(0, Date.now() - state.forwardedAt) };
    await writeState(kong, state);
  }

  private async admit(kong: KongPdk, requestId: string): Promise<void> {
    const base = { "x-request-id": requestId };
    const rawPath = await kong.request.getPath();
    const matched = matchRoute(rawPath, []);
    const route = matched && llmRoutes.get(matched.path);
    if (!route) {
      return exit(kong, errorResponse(404, `not an LLM route admission control meters: ${rawPath.slice(0, 200)}`, { headers: base, code: "unknown_route" }));
    }
    const { api } = route;
    if ((await kong.request.getMethod()) !== "POST") return exit(kong, errorResponse(405, `use POST /v1${route.path}`, { headers: { ...base, allow: "POST" }, code: "method_not_allowed", api }));
    const credential = clientCredential(await kong.request.getHeader("authorization"), await kong.request.getHeader("x-api-key"));
    if (!credential) {
      return exit(kong, errorResponse(401, "missing credential: send 'Authorization: Bearer <API key or JWT>' or 'x-api-key: <API key>'", { headers: base, code: "unauthenticated", api }));
    }
    const taskHeader = await kong.request.getHeader("x-llm-task");
    if (taskHeader !== null && taskHeader !== undefined && !isTaskCode(taskHeader)) {
      return exit(kong, errorResponse(400, "invalid x-llm-task header: 1-64 letters, digits, '_', '-' or '.'", { headers: base, code: "invalid_request", param: "x-llm-task", api }));
    }
    const task = taskHeader || matched.task || this.config.default_task;
    if (!task) return exit(kong, errorResponse(400, "no task: send the x-llm-task header (or set the plugin's default_task)", { headers: base, code: "invalid_request", param: "x-llm-task", api }));

    let raw = pdkBuffer(await kong.request.getRawBody());
    if (raw === undefined) {
      // Lua nil: the body was larger than Kong keeps in memory (client_body_buffer_size), or there is none.
      if (Number((await kong.request.getHeader("content-length")) ?? 0) > 0) {
        return exit(kong, errorResponse(413, "request body larger than the gateway buffers (raise nginx_http_client_body_buffer_size)", { headers: base, code: "request_too_large", api }));
      }
      raw = Buffer.alloc(0);
    }
    if (raw.length > this.config.max_body_bytes) return exit(kong, errorResponse(413, `request body over ${this.config.max_body_bytes} bytes`, { headers: base, code: "request_too_large", api }));
    const request = parseLlmRequest(route, raw);
    if ("error" in request) return exit(kong, errorResponse(400, request.error, { headers: base, code: "invalid_request", param: request.param, api }));

    let decision: AdmitResponse;
    try {
      decision = await this.client.admit(admitRequestFor(request, { requestId, credential, task, attributes: { gateway: "kong", route: route.path } }));
    } catch (rawErr) {
      const err = asControlPlaneError(rawErr);
      if (!err.unreachable) {
        const answer = refusalResponse(err, base, api);
        if (answer.status === 502) await kong.log.err(`llm-admission: control plane refused Admit: ${grpc.status[err.code]} ${err.message}`);
        return exit(kong, answer);
      }
      if (this.config.failure_policy === "FAIL_OPEN") {
        await kong.log.warn(`llm-admission: control plane unreachable (${err.message}); forwarded unmetered (FAIL_OPEN)`);
        await writeState(kong, {
          requestId, family: route.family, reservationId: "", tenant: "", provider: "", model: request.model, inputTokens: request.inputTokens,
          responseHeaders: { "x-admission-warnings": unmeteredWarning }, forwardedAt: Date.now(),
        });
        await clearCredential(kong);
        return;
      }
      await kong.log.err(`llm-admission: control plane unreachable (${err.message}); denied (FAIL_CLOSED)`);
      return exit(kong, unavailableResponse(base, api));
    }
    if (!decision.allowed) return exit(kong, denialResponse(decision, requestId, api));

    const target = decision.routes[0];
    // Saved first: whatever happens next, the log phase finds the reservation and settles it.
    await writeState(kong, {
      requestId,
      family: route.family,
      reservationId: decision.reservationId,
      tenant: decision.tenant,
      provider: target?.provider ?? "",
      model: target?.model ?? "",
      inputTokens: request.inputTokens,
      responseHeaders: rateLimitHeaders(decision),
      forwardedAt: Date.now(),
    });
    const body = rewriteBody(request, { providerModel: target ? target.providerModel || target.model : request.model, maxOutputTokens: Number(decision.maxOutputTokens) });
    await kong.service.request.setHeaders({
      ...upstreamDecisionHeaders(decision),
      "x-request-id": requestId,
      "content-type": "application/json",
      // Usage is read from the buffered answer: it must not come compressed.
      "accept-encoding": "identity",
    });
    await clearCredential(kong);
    await kong.service.request.setRawBody(body.toString("utf8"));
  }

  /** Settle, retried while the control plane is unreachable (idempotent on the reservation id); otherwise the lease expires and is charged its estimate. */
  private async settle(kong: KongPdk, req: SettleRequest): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.settle(req);
        return;
      } catch (raw) {
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

interface ChargedUsage extends SettledUsage {
  readonly outcome: Outcome;
  readonly latencyMs: number;
}

/**
 * The provider answered: what it reported, or — when it worked (status < 400)
 * and did not report it all — the tokenizer's count of the prompt and of the
 * text it generated (settledUsage). A failed answer charges nothing.
 */
function fromUpstream(up: NonNullable<RequestState["upstream"]>): ChargedUsage {
  return { ...up.settled, outcome: up.status < 400 ? Outcome.SUCCESS : Outcome.UPSTREAM_ERROR, latencyMs: up.latencyMs };
}

/**
 * No answer was read: Kong could not reach the provider or timed out
 * (source "error"), a later plugin ended the request ("exit"), or the client
 * left. Nothing is charged, unless the provider did answer with a success
 * (then the prompt, estimated).
 */
async function withoutUpstream(kong: KongPdk, state: RequestState): Promise<ChargedUsage> {
  const source = await kong.response.getSource();
  const status = (await kong.response.getStatus()) ?? 0;
  const latencyMs = Math.max(0, Date.now() - state.forwardedAt);
  if (source === "service" && status > 0 && status < 400) {
    return { usage: { ...noUsage, inputTokens: state.inputTokens }, estimated: true, outcome: Outcome.SUCCESS, latencyMs };
  }
  const outcome = status === 504 ? Outcome.TIMEOUT : status === 499 ? Outcome.CLIENT_ABORTED : Outcome.UPSTREAM_ERROR;
  return { usage: noUsage, estimated: false, outcome, latencyMs };
}

/** The provider must never see the client's credential, in either API's header (request-transformer may then add the provider's key). */
async function clearCredential(kong: KongPdk): Promise<void> {
  await kong.service.request.clearHeader("authorization");
  await kong.service.request.clearHeader("x-api-key");
}

function exit(kong: KongPdk, answer: ErrorResponse): Promise<void> {
  return kong.response.exit(answer.status, answer.body, answer.headers).then(() => undefined);
}

async function readState(kong: KongPdk): Promise<RequestState | undefined> {
  const raw = await kong.ctx.shared.get(stateKey);
  if (typeof raw !== "string" || raw === "") return undefined;
  try {
    return JSON.parse(raw) as RequestState;
  } catch {
    return undefined;
  }
}

async function writeState(kong: KongPdk, state: RequestState): Promise<void> {
  await kong.ctx.shared.set(stateKey, JSON.stringify(state));
}

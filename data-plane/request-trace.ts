import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import { SpanKind, SpanStatusCode, trace, type Context, type Span, type Tracer } from "@opentelemetry/api";
import type { AdmitResponse, Route } from "../gen/admission/v1/admission_pb.js";
import { AdmissionService, Outcome } from "../gen/admission/v1/admission_pb.js";
import type { LlmRequest } from "../control-plane/llm-request.js";
import { callerContext, failed, grpcCodeName, setAdmitAttributes, traceCarrier, type TraceCarrier } from "../control-plane/tracing.js";
import type { ProviderConfig } from "./config.js";
import type { UsageRecord } from "./provider-usage.js";

/** GenAI operation names (gen_ai.operation.name) of the proxied APIs. */
const operations: Record<string, string> = {
  "/chat/completions": "chat",
  "/completions": "text_completion",
  "/embeddings": "embeddings",
  "/responses": "chat",
  "/messages": "chat",
};

/** A call to the control plane in its CLIENT span: its context goes with the call. */
export interface ControlPlaneCall {
  readonly trace: TraceCarrier;
  readonly span: Span;
}

/**
 * The trace of one proxied request: the SERVER span (a child of the client's
 * `traceparent` when it sent a valid one, else a new trace), and under it the
 * Admit call, one span per route attempt (failover shows as several) and the
 * Settle call. GenAI attributes after the semantic conventions; never the
 * credential, the prompt or the completion.
 */
export class RequestTrace {
  private readonly span: Span;
  private readonly context: Context;
  private readonly method: string;
  private operation = "chat";
  /** What keeps the span open: the response, and an admitted request's flight until it settles. */
  private holds = 1;
  private status = 0;

  constructor(private readonly tracer: Tracer, req: IncomingMessage, path: string) {
    const parent = callerContext((name) => header(req.headers, name));
    this.method = req.method ?? "GET";
    this.span = tracer.startSpan(this.method, {
      kind: SpanKind.SERVER,
      attributes: { "http.request.method": this.method, "url.path": path.slice(0, 256) },
    }, parent);
    this.context = trace.setSpan(parent, this.span);
  }

  /** The request span's context, for calls made on its behalf outside a span of their own (Renew). */
  carrier(): TraceCarrier {
    return traceCarrier(this.span);
  }

  /** The ids a log line about this request carries. */
  logIds(): { trace_id: string; span_id: string } {
    const { traceId, spanId } = this.span.spanContext();
    return { trace_id: traceId, span_id: spanId };
  }

  /** The proxy's own request id (x-request-id of the answer, and of the request's log lines). */
  identify(requestId: string): void {
    this.span.setAttribute("admission.request_id", requestId);
  }

  /** The route matched (low-cardinality: the span's name). */
  route(route: string): void {
    this.span.updateName(`${this.method} ${route}`);
    this.span.setAttribute("http.route", route);
  }

  /** What the client asked for (never its content). */
  request(request: LlmRequest, task: string): void {
    this.operation = operations[request.route.path] ?? "chat";
    this.span.setAttributes({ "gen_ai.operation.name": this.operation, "gen_ai.request.model": request.model, "admission.task": task, "admission.stream": request.stream });
    if (request.maxTokens > 0) this.span.setAttribute("gen_ai.request.max_tokens", request.maxTokens);
  }

  /** The Admit call's span; end it with admitted() or callFailed(). */
  admit(): ControlPlaneCall {
    return this.call("Admit");
  }

  admitted(call: ControlPlaneCall, decision: AdmitResponse): void {
    setAdmitAttributes(call.span, decision);
    call.span.end();
    setAdmitAttributes(this.span, decision);
  }

  /** A control-plane call that failed (unreachable, refused): its gRPC code. */
  callFailed(call: ControlPlaneCall, code: number): void {
    call.span.setAttribute("rpc.grpc.status_code", code);
    failed(call.span, undefined, grpcCodeName(code));
    call.span.end();
  }

  /** The request is served unadmitted (FAIL_OPEN, control plane unreachable). */
  unadmitted(): void {
    this.span.setAttribute("admission.decision", "unmetered_fail_open");
  }

  /**
   * One route attempt: a CLIENT span named after the operation and the model, its
   * context sent to the provider in `traceparent`. End it with attemptEnded().
   */
  attempt(route: Route, provider: ProviderConfig, attempt: number, maxOutputTokens: number | undefined, headers: IncomingHttpHeaders): Span {
    const model = route.providerModel || route.model;
    const span = this.tracer.startSpan(`${this.operation} ${model}`, {
      kind: SpanKind.CLIENT,
      attributes: {
        "gen_ai.operation.name": this.operation,
        "gen_ai.provider.name": provider.name,
        "gen_ai.request.model": model,
        "admission.route.model": route.model,
        "admission.route.attempt": attempt,
        ...(maxOutputTokens !== undefined ? { "gen_ai.request.max_tokens": maxOutputTokens } : {}),
        ...serverOf(provider.baseUrl),
      },
    }, this.context);
    const carrier = traceCarrier(span);
    if (carrier.traceparent) headers.traceparent = carrier.traceparent;
    if (carrier.tracestate) headers.tracestate = carrier.tracestate;
    return span;
  }

  /** The provider answered with `status`, or could not be reached (`error`: its code); a 5xx before the first byte fails over. */
  attemptEnded(span: Span, result: { status: number } | { error: string }): void {
    if ("status" in result) {
      span.setAttribute("http.response.status_code", result.status);
      if (result.status >= 400) failed(span, undefined, String(result.status));
    } else {
      failed(span, undefined, result.error);
    }
    span.end();
  }

  /** What the served attempt's provider reported (or what was estimated), on the attempt and the request. */
  usage(attemptSpan: Span | undefined, settled: { usage: UsageRecord; estimated: boolean; outcome: Outcome; route: Route | undefined }): void {
    const { usage } = settled;
    const attributes = {
      "gen_ai.usage.input_tokens": usage.inputTokens,
      "gen_ai.usage.output_tokens": usage.outputTokens,
      "gen_ai.usage.cache_read.input_tokens": usage.cacheReadTokens,
      "gen_ai.usage.cache_creation.input_tokens": usage.cacheWriteTokens,
      "gen_ai.usage.reasoning.output_tokens": usage.reasoningTokens,
      "admission.usage.estimated": settled.estimated,
    };
    const served = settled.route ? { "gen_ai.response.model": settled.route.providerModel || settled.route.model, "gen_ai.provider.name": settled.route.provider } : {};
    attemptSpan?.setAttributes({ ...attributes, ...served });
    this.span.setAttributes({ ...attributes, ...served, "admission.outcome": Outcome[settled.outcome] ?? String(settled.outcome) });
  }

  /** The Settle call's span; end it with settleEnded(). */
  settle(): ControlPlaneCall {
    return this.call("Settle");
  }

  settleEnded(call: ControlPlaneCall, result: "delivered" | "spooled" | "lost"): void {
    call.span.setAttribute("admission.settle.result", result);
    if (result === "lost") failed(call.span, undefined, "lost");
    call.span.end();
  }

  /** A flight took off: the span stays open until it settles (its usage is known then), released by release(). */
  hold(): void {
    this.holds++;
  }

  /** The response is done (`status`: what the client got), or a flight settled; the last release ends the span. */
  release(status?: number): void {
    if (status !== undefined) this.status = status;
    if (--this.holds !== 0) return;
    this.span.setAttribute("http.response.status_code", this.status);
    if (this.status >= 500) this.span.setStatus({ code: SpanStatusCode.ERROR, message: String(this.status) });
    this.span.end();
  }

  private call(method: string): ControlPlaneCall {
    const span = this.tracer.startSpan(`${AdmissionService.typeName}/${method}`, {
      kind: SpanKind.CLIENT,
      attributes: { "rpc.system": "grpc", "rpc.service": AdmissionService.typeName, "rpc.method": method },
    }, this.context);
    return { span, trace: traceCarrier(span) };
  }
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return typeof value === "string" ? value : undefined;
}

function serverOf(baseUrl: string): Record<string, string | number> {
  try {
    const url = new URL(baseUrl);
    return { "server.address": url.hostname, "server.port": Number(url.port) || (url.protocol === "https:" ? 443 : 80) };
  } catch {
    return {};
  }
}

import { context, createNoopMeter, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Meter, type MeterProvider, type Span, type TextMapGetter, type Tracer } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOffSampler, AlwaysOnSampler, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, TracerProvider, type Sampler,
} from "@opentelemetry/sdk-trace";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import type { Counter } from "prom-client";
import type { AdmitResponse, SettleResponse } from "../gen/admission/v1/admission_pb.js";
import { DenyReason, Outcome } from "../gen/admission/v1/admission_pb.js";

/**
 * OpenTelemetry tracing of both planes: spans made explicitly where a request's
 * steps are (nothing patched into http or gRPC), exported over OTLP HTTP/protobuf
 * by a bounded batch processor. Off — no tracer, no context manager, nothing on
 * the hot path but an `undefined` check — unless an OTLP endpoint is configured.
 */
export interface TracingConfig {
  /** Where spans are POSTed: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces. */
  readonly tracesUrl: string;
  /** OTEL_EXPORTER_OTLP_HEADERS / OTEL_EXPORTER_OTLP_TRACES_HEADERS (e.g. a collector's API key). */
  readonly headers: Readonly<Record<string, string>>;
  readonly serviceName: string;
  /** OTEL_RESOURCE_ATTRIBUTES. */
  readonly resourceAttributes: Readonly<Record<string, string>>;
  readonly sampler: { readonly name: SamplerName; readonly ratio: number };
  /** OTEL_BSP_*: the batch processor's queue bound, batch size, delay between exports, and export deadline. */
  readonly maxQueueSize: number;
  readonly maxExportBatchSize: number;
  readonly scheduleDelayMs: number;
  readonly exportTimeoutMs: number;
}

const samplerNames = ["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"] as const;
type SamplerName = (typeof samplerNames)[number];

export class TracingConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TracingConfigError";
  }
}

/**
 * The standard OTEL_* variables; undefined (tracing off) when no OTLP endpoint
 * is set or OTEL_SDK_DISABLED=true. A malformed value is refused with its name.
 */
export function loadTracingConfig(env: NodeJS.ProcessEnv, defaultServiceName: string): TracingConfig | undefined {
  if ((env.OTEL_SDK_DISABLED ?? "").trim().toLowerCase() === "true") return undefined;
  const tracesEndpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  const endpoint = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  if (!tracesEndpoint && !endpoint) return undefined;
  const tracesUrl = tracesEndpoint || `${endpoint!.replace(/\/+$/, "")}/v1/traces`;
  const name = tracesEndpoint ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" : "OTEL_EXPORTER_OTLP_ENDPOINT";
  let url: URL;
  try {
    url = new URL(tracesUrl);
  } catch {
    throw new TracingConfigError(`${name} "${tracesUrl}" is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new TracingConfigError(`${name} must be an http:// or https:// URL (OTLP over HTTP/protobuf), got "${url.protocol}"`);

  const samplerName = (env.OTEL_TRACES_SAMPLER?.trim() || "parentbased_always_on").toLowerCase();
  if (!(samplerNames as readonly string[]).includes(samplerName)) {
    throw new TracingConfigError(`OTEL_TRACES_SAMPLER must be one of ${samplerNames.join(", ")}, got "${env.OTEL_TRACES_SAMPLER}"`);
  }
  let ratio = 1;
  if (samplerName.endsWith("traceidratio") && env.OTEL_TRACES_SAMPLER_ARG?.trim()) {
    ratio = Number(env.OTEL_TRACES_SAMPLER_ARG);
    if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) throw new TracingConfigError(`OTEL_TRACES_SAMPLER_ARG must be a number between 0 and 1, got "${env.OTEL_TRACES_SAMPLER_ARG}"`);
  }
  const resourceAttributes = keyValues(env.OTEL_RESOURCE_ATTRIBUTES, "OTEL_RESOURCE_ATTRIBUTES");
  const config: TracingConfig = {
    tracesUrl: url.href,
    headers: { ...keyValues(env.OTEL_EXPORTER_OTLP_HEADERS, "OTEL_EXPORTER_OTLP_HEADERS"), ...keyValues(env.OTEL_EXPORTER_OTLP_TRACES_HEADERS, "OTEL_EXPORTER_OTLP_TRACES_HEADERS") },
    serviceName: env.OTEL_SERVICE_NAME?.trim() || resourceAttributes[ATTR_SERVICE_NAME] || defaultServiceName,
    resourceAttributes,
    sampler: { name: samplerName as SamplerName, ratio },
    maxQueueSize: count(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1_000_000),
    maxExportBatchSize: count(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1_000_000),
    scheduleDelayMs: count(env, "OTEL_BSP_SCHEDULE_DELAY", 5_000, 1, 3_600_000),
    exportTimeoutMs: count(env, "OTEL_BSP_EXPORT_TIMEOUT", 30_000, 1, 3_600_000),
  };
  if (config.maxExportBatchSize > config.maxQueueSize) throw new TracingConfigError("OTEL_BSP_MAX_EXPORT_BATCH_SIZE must not exceed OTEL_BSP_MAX_QUEUE_SIZE");
  return config;
}

/** loadTracingConfig with its error as the plane's configuration error. */
export function tracingOf(env: NodeJS.ProcessEnv, defaultServiceName: string, asConfigError: (message: string) => Error): TracingConfig | undefined {
  try {
    return loadTracingConfig(env, defaultServiceName);
  } catch (err) {
    throw err instanceof TracingConfigError ? asConfigError(err.message) : err;
  }
}

/** `k1=v1,k2=v2` with percent-encoded values (the W3C Baggage form the OTEL_* lists use). */
function keyValues(raw: string | undefined, name: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!raw?.trim()) return out;
  for (const part of raw.split(",")) {
    if (!part.trim()) continue;
    const eq = part.indexOf("=");
    const key = eq > 0 ? part.slice(0, eq).trim() : "";
    if (!key) throw new TracingConfigError(`${name}: "${part.trim().slice(0, 40)}" is not key=value`);
    try {
      out[key] = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      throw new TracingConfigError(`${name}: the value of "${key}" is not valid percent-encoding`);
    }
  }
  return out;
}

function count(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) throw new TracingConfigError(`${name} must be an integer between ${min} and ${max}, got "${raw}"`);
  return value;
}

/** A plane's tracing: its tracer (undefined when off) and the exporter's lifecycle. */
export interface Tracing {
  readonly tracer: Tracer | undefined;
  /** Exports what is queued (tests, and before a graceful exit). */
  flush(): Promise<void>;
  /** Exports what is queued, then stops; idempotent. */
  shutdown(): Promise<void>;
}

export const tracingOff: Tracing = { tracer: undefined, flush: async () => undefined, shutdown: async () => undefined };

/**
 * A tracer provider of its own per plane (each plane is its own service, even
 * when both run in one process), exporting through a bounded BatchSpanProcessor:
 * ending a span only queues it; a full queue or a failed export drops spans,
 * counted in `dropped` by reason — a collector that is down or slow never slows
 * or fails a request.
 */
export function startTracing(config: TracingConfig | undefined, dropped: Counter<"reason">, options: { activeContext?: boolean } = {}): Tracing {
  if (!config) return tracingOff;
  // Spans made in a call's async continuations find their parent (and log lines their ids). It costs every
  // promise of the process something (async hooks): the data plane, which passes its spans explicitly, goes without.
  if (options.activeContext !== false) context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const exporter = new OTLPTraceExporter({ url: config.tracesUrl, headers: { ...config.headers }, timeoutMillis: Math.min(config.exportTimeoutMs, 10_000) });
  const processor = new BatchSpanProcessor({
    exporter,
    maxQueueSize: config.maxQueueSize,
    maxExportBatchSize: config.maxExportBatchSize,
    scheduledDelayMillis: config.scheduleDelayMs,
    exportTimeoutMillis: config.exportTimeoutMs,
    selfObsMeterProvider: droppedSpansMeter(dropped),
  });
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ ...config.resourceAttributes, [ATTR_SERVICE_NAME]: config.serviceName }),
    sampler: samplerOf(config.sampler),
    spanProcessors: [processor],
  });
  const tracer = provider.getTracer("llm-admission");
  let stopping: Promise<void> | undefined;
  return {
    tracer,
    flush: () => bounded(provider.forceFlush()),
    // An unreachable collector holds a stopping process up by shutdownGraceMs at the most.
    shutdown: () => (stopping ??= bounded(provider.shutdown())),
  };
}

/** How long a flush or shutdown waits for the collector before giving up on what is queued. */
const shutdownGraceMs = 2_000;

function bounded(work: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const grace = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, shutdownGraceMs);
    timer.unref();
  });
  return Promise.race([work.catch(() => undefined), grace]).finally(() => clearTimeout(timer));
}

function samplerOf(s: TracingConfig["sampler"]): Sampler {
  switch (s.name) {
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "traceidratio":
      return new TraceIdRatioBasedSampler(s.ratio);
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(s.ratio) });
    default:
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
}

/**
 * The batch processor reports each span it finished with (`otel.sdk.processor.span.processed`)
 * through an OpenTelemetry meter, with `error.type` when it was dropped (`queue_full`, or
 * the export's error). Those land in the Prometheus counter; nothing else is metered.
 */
function droppedSpansMeter(dropped: Counter<"reason">): MeterProvider {
  const noop = createNoopMeter();
  const meter: Meter = Object.create(noop, {
    createCounter: {
      value: (name: string, options?: object) => {
        if (name !== "otel.sdk.processor.span.processed") return noop.createCounter(name, options);
        return {
          add(value: number, attributes?: Attributes) {
            const reason = attributes?.["error.type"];
            if (reason !== undefined && value > 0) dropped.inc({ reason: String(reason) }, value);
          },
        };
      },
    },
  });
  return { getMeter: () => meter };
}

const propagator = new W3CTraceContextPropagator();

/** The W3C trace context of a span, as sent to the control plane and to providers. */
export interface TraceCarrier {
  traceparent?: string;
  tracestate?: string;
}

/** The carrier of a span's context (`traceparent`, and `tracestate` when it has one). */
export function traceCarrier(span: Span): TraceCarrier {
  const carrier: TraceCarrier = {};
  propagator.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, {
    set: (c, key, value) => {
      (c as Record<string, string>)[key] = value;
    },
  });
  return carrier;
}

/** The caller's context from `traceparent`/`tracestate` read by `header`; ROOT_CONTEXT (a new trace) when absent or malformed. */
export function callerContext(header: (name: string) => string | undefined): Context {
  return propagator.extract(ROOT_CONTEXT, header, headerGetter);
}

const headerGetter: TextMapGetter<(name: string) => string | undefined> = {
  get: (header, key) => header(key),
  keys: () => ["traceparent", "tracestate"],
};

/**
 * Runs `fn` in a child span of the active one. Without a tracer, or outside any
 * trace (a background sweep), it just runs `fn`: no root spans for housekeeping.
 */
export function childSpan<T>(tracer: Tracer | undefined, name: string, fn: (span: Span | undefined) => Promise<T>, attributes?: Attributes): Promise<T> {
  if (!tracer) return fn(undefined);
  const parent = context.active();
  if (!trace.getSpan(parent)) return fn(undefined);
  const span = tracer.startSpan(name, { kind: SpanKind.INTERNAL, attributes }, parent);
  return context.with(trace.setSpan(parent, span), () => ended(span, fn(span)));
}

/** Ends the span when the promise settles, marked as an error (its type only) when it rejects. */
export function ended<T>(span: Span, result: Promise<T>): Promise<T> {
  return result.then(
    (value) => {
      span.end();
      return value;
    },
    (err: unknown) => {
      failed(span, err);
      span.end();
      throw err;
    },
  );
}

/**
 * Marks a span failed with the error's type (`error.type`): its name or gRPC code, never its
 * message or stack, which could carry what a caller sent.
 */
export function failed(span: Span, err: unknown, type?: string): void {
  const code = (err as { code?: unknown } | undefined)?.code;
  const name = type ?? (typeof code === "number" ? grpcCodeName(code) : err instanceof Error ? err.name : "error");
  span.setAttribute("error.type", name);
  span.setStatus({ code: SpanStatusCode.ERROR, message: name });
}

const grpcCodes = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

export function grpcCodeName(code: number): string {
  return grpcCodes[code] ?? String(code);
}

/**
 * The `admission.*` attributes of a decision, set the same way on the control
 * plane's Admit span and the data plane's: every field of an AdmitResponse that a
 * trace shows is named here and nowhere else.
 */
export function setAdmitAttributes(span: Span, d: AdmitResponse): void {
  span.setAttributes({
    "admission.decision": d.allowed ? (d.unmetered ? "unmetered" : "allowed") : "denied",
    "admission.tenant": d.tenant,
    "admission.user": d.user,
    "admission.key_id": d.keyId,
    "admission.reservation_id": reservationRef(d.reservationId),
    "admission.reserved_cost_micros": Number(d.reservedCostMicros),
    "admission.max_output_tokens": Number(d.maxOutputTokens),
  });
  if (!d.allowed) span.setAttributes({ "admission.reason": DenyReason[d.reason] ?? String(d.reason), "http.response.status_code": d.httpStatus });
  if (d.replayed) span.setAttribute("admission.replayed", true);
  if (d.degraded) span.setAttributes({ "admission.degraded": true, "admission.degraded_from": d.degradedFrom });
}

/** What a Settle recorded: the usage (GenAI names), its cost, outcome and whether it repeated an earlier one. */
export function setSettleAttributes(span: Span, r: SettleResponse): void {
  span.setAttributes({
    "admission.reservation_id": reservationRef(r.reservationId),
    "admission.actual_cost_micros": Number(r.costMicros),
    "admission.outcome": Outcome[r.outcome] ?? String(r.outcome),
    "admission.estimated": r.estimated,
    "admission.duplicate": r.duplicate,
    "gen_ai.usage.input_tokens": Number(r.inputTokens),
    "gen_ai.usage.output_tokens": Number(r.outputTokens),
    "gen_ai.usage.cache_read.input_tokens": Number(r.cacheReadTokens),
    "gen_ai.usage.cache_creation.input_tokens": Number(r.cacheWriteTokens),
    "gen_ai.usage.reasoning.output_tokens": Number(r.reasoningTokens),
  });
}

/**
 * A reservation id as a trace shows it: without its signature. The signed id settles the
 * reservation on its own (no credential needed), so it never leaves in an export.
 */
export function reservationRef(reservationId: string): string {
  const dot = reservationId.lastIndexOf(".");
  return dot > 0 ? reservationId.slice(0, dot) : reservationId;
}

/**
 * A server span for one call of `service`/`method`, a child of the caller's span
 * (its `traceparent`, read by `header`), active while `run` runs; marked with the
 * call's gRPC status. The span of a decision, a Session message or a PolicyService call.
 */
export function rpcSpan<T>(tracer: Tracer, call: { service: string; method: string; system?: string; header: (name: string) => string | undefined }, run: () => Promise<T>): Promise<T> {
  const parent = callerContext(call.header);
  const span = tracer.startSpan(`${call.service}/${call.method}`, {
    kind: SpanKind.SERVER,
    attributes: { "rpc.system": call.system ?? "grpc", "rpc.service": call.service, "rpc.method": call.method },
  }, parent);
  let result: Promise<T>;
  try {
    result = context.with(trace.setSpan(parent, span), run);
  } catch (err) {
    result = Promise.reject(err);
  }
  return result.then(
    (value) => {
      span.setAttribute("rpc.grpc.status_code", 0);
      span.end();
      return value;
    },
    (err: unknown) => {
      const code = (err as { code?: unknown } | undefined)?.code;
      span.setAttribute("rpc.grpc.status_code", typeof code === "number" ? code : 13);
      failed(span, err, typeof code === "number" ? undefined : "INTERNAL");
      span.end();
      throw err;
    },
  );
}

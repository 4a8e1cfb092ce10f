import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import pino from "pino";
import { createLogger } from "../control-plane/logger.js";
import { loadTracingConfig } from "../control-plane/tracing.js";
import { loadDataPlaneConfig } from "../data-plane/config.js";
import { startDataPlane, type RunningDataPlane } from "../data-plane/server.js";
import { admin, adminToken, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { freePort } from "./support/free-port.js";
import { unaryClient } from "./support/grpc-clients.js";
import { Authorization } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import type { Registry } from "prom-client";
import { scenario, secretOf } from "./support/scenario.js";

/**
 * The OpenTelemetry protobuf definitions, as protobufjs compiled them from the published
 * opentelemetry-proto files (otlp-transformer's generated root, from the release that still
 * shipped it): the export is decoded by the reference schema, not by the exporter's own encoder.
 */
const otlp = createRequire(import.meta.url)("otlp-proto-root/build/src/generated/root.js").opentelemetry.proto;
const ExportTraceServiceRequest = otlp.collector.trace.v1.ExportTraceServiceRequest;

interface ExportedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  statusCode: number;
  attributes: Record<string, string | number | boolean>;
}

const SERVER = 2;
const CLIENT = 3;

/** An OTLP/HTTP receiver: decodes each ExportTraceServiceRequest, keeps its spans and its raw bytes. */
class OtlpReceiver {
  server!: Server;
  url = "";
  spans: ExportedSpan[] = [];
  bodies: Buffer[] = [];
  contentTypes = new Set<string>();

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    assert.equal(req.url, "/v1/traces");
    this.contentTypes.add(String(req.headers["content-type"]));
    this.bodies.push(body);
    const decoded = ExportTraceServiceRequest.toObject(ExportTraceServiceRequest.decode(body), { longs: Number, bytes: Buffer, enums: Number, defaults: true });
    for (const rs of decoded.resourceSpans) {
      const resource = attributesOf(rs.resource.attributes);
      for (const ss of rs.scopeSpans) {
        for (const s of ss.spans) {
          this.spans.push({
            service: String(resource["service.name"]),
            traceId: Buffer.from(s.traceId).toString("hex"),
            spanId: Buffer.from(s.spanId).toString("hex"),
            parentSpanId: s.parentSpanId?.length ? Buffer.from(s.parentSpanId).toString("hex") : "",
            name: s.name,
            kind: s.kind,
            statusCode: s.status?.code ?? 0,
            attributes: attributesOf(s.attributes),
          });
        }
      }
    }
    res.writeHead(200, { "content-type": "application/x-protobuf" });
    res.end();
  }

  trace(traceId: string): ExportedSpan[] {
    return this.spans.filter((s) => s.traceId === traceId);
  }
}

function attributesOf(list: Array<{ key: string; value: Record<string, unknown> }>): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const { key, value } of list) {
    out[key] = (value.stringValue ?? value.intValue ?? value.boolValue ?? value.doubleValue) as string | number | boolean;
  }
  return out;
}

/** An OpenAI-compatible provider that reports usage with a cached part, fails when told, and keeps the trace headers it got. */
class TracedProvider {
  server!: Server;
  port = 0;
  failNext = 0;
  /** How long a stream waits before its last chunk. */
  streamDelayMs = 0;
  traceparents: string[] = [];

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.port = (this.server.address() as { port: number }).port;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let raw = "";
    for await (const chunk of req) raw += chunk;
    const body = JSON.parse(raw);
    this.traceparents.push(String(req.headers.traceparent ?? ""));
    if (this.failNext > 0) {
      this.failNext--;
      return void res.writeHead(503).end("overloaded");
    }
    const usage = { prompt_tokens: 321, completion_tokens: 54, total_tokens: 375, prompt_tokens_details: { cached_tokens: 200 }, completion_tokens_details: { reasoning_tokens: 10 } };
    if (!body.stream) {
      res.writeHead(200, { "content-type": "application/json" });
      return void res.end(JSON.stringify({ id: "c1", object: "chat.completion", created: 1, model: body.model, choices: [{ index: 0, message: { role: "assistant", content: completionText }, finish_reason: "stop" }], usage }));
    }
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write(`data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model: body.model, choices: [{ index: 0, delta: { content: completionText } }] })}\n\n`);
    if (this.streamDelayMs) await new Promise((r) => setTimeout(r, this.streamDelayMs));
    res.write(`data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", model: body.model, choices: [], usage })}\n\n`);
    res.end("data: [DONE]\n\n");
  }
}

const promptText = "PROMPT-TEXT-must-not-be-exported-7f3a";
const completionText = "COMPLETION-TEXT-must-not-be-exported-91bc";
const clientTraceId = "4bf92f3577b34da6a3ce929d0e0e4736";
const clientSpanId = "00f067aa0ba902b7";

/** A counter's value summed over its label sets (0 before any). */
async function counterTotal(registry: Registry, name: string): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  return (await metric.get()).values.reduce((sum, v) => sum + v.value, 0);
}

async function waitFor(check: () => boolean, what: string | (() => string), timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("OpenTelemetry tracing across both planes", () => {
  const receiver = new OtlpReceiver();
  const p1 = new TracedProvider();
  const p2 = new TracedProvider();
  const spoolDir = mkdtempSync(join(tmpdir(), "adm-otel-"));
  const logLines: Array<Record<string, unknown>> = [];
  let cp: TestControlPlane;
  let dp: RunningDataPlane;

  before(async () => {
    await receiver.start();
    await p1.start();
    await p2.start();
    const otelEnv = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: "20" };
    // Leases of a second: a stream held longer is renewed while it runs.
    cp = await startTestControlPlane({ config: { tracing: loadTracingConfig(otelEnv, "control-plane"), leaseTtlMs: 1_000 } });
    await cp.policy.applyBundle({
      bundle: scenario(
        { id: "tr", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 10_000_000 }], keys: [{ id: "ktr" }] },
        { id: "broke", limits: [{ kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 0 }], keys: [{ id: "kbr" }] },
      ),
    }, admin);
    const logs = new Writable({
      write(chunk, _enc, done) {
        for (const line of String(chunk).split("\n")) if (line) logLines.push(JSON.parse(line));
        done();
      },
    });
    dp = await startDataPlane({ ...loadDataPlaneConfig(otelEnv), host: "127.0.0.1", port: 0, metricsPort: 0, controlPlaneAddr: cp.address, spoolDir }, {
      logger: createLogger({ level: "info", service: "data-plane", destination: logs }),
      providers: [
        { name: "p1", baseUrl: `http://127.0.0.1:${p1.port}/v1`, apiKey: "sk-provider-one-secret" },
        { name: "p2", baseUrl: `http://127.0.0.1:${p2.port}/v1`, apiKey: "sk-provider-two-secret" },
      ],
    });
    await waitFor(() => dp.controlPlane.connected(), "the Session link");
  });

  after(async () => {
    await dp.close();
    await cp.close();
    for (const s of [receiver.server, p1.server, p2.server]) s.close();
    rmSync(spoolDir, { recursive: true, force: true });
  });

  async function send(options: { key?: string; stream?: boolean; headers?: Record<string, string> } = {}): Promise<{ status: number; requestId: string; text: string }> {
    const res = await fetch(`http://127.0.0.1:${dp.port}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${secretOf(options.key ?? "ktr")}`, "x-llm-task": "DRAFT", "content-type": "application/json", ...options.headers },
      body: JSON.stringify({ model: "m-pro", max_tokens: 100, stream: options.stream ?? false, messages: [{ role: "user", content: promptText }] }),
    });
    return { status: res.status, requestId: res.headers.get("x-request-id")!, text: await res.text() };
  }

  /** The request's trace once it holds `spans` spans: found by the data-plane span naming its request id. */
  async function traceOf(requestId: string, spans: number): Promise<{ root: ExportedSpan; all: ExportedSpan[] }> {
    let root: ExportedSpan | undefined;
    const found = () => (root ? receiver.trace(root.traceId).map((s) => `${s.service}:${s.name}`).join(", ") : "no request span");
    await waitFor(() => {
      root = receiver.spans.find((s) => s.attributes["admission.request_id"] === requestId);
      return root !== undefined && receiver.trace(root.traceId).length >= spans;
    }, () => `${spans} spans of ${requestId} (got ${found()})`);
    await new Promise((r) => setTimeout(r, 100)); // nothing more arrives
    return { root: root!, all: receiver.trace(root!.traceId) };
  }

  const one = (spans: ExportedSpan[], where: (s: ExportedSpan) => boolean, what: string): ExportedSpan => {
    const found = spans.filter(where);
    assert.equal(found.length, 1, `one ${what}, got ${found.map((s) => `${s.service}:${s.name}`).join(", ") || "none"}`);
    return found[0]!;
  };

  /** The spans of an admitted, served and settled request, with their parents checked. */
  function checkServed(all: ExportedSpan[], root: ExportedSpan, attempts: number): { upstream: ExportedSpan[]; cpAdmit: ExportedSpan; cpSettle: ExportedSpan } {
    const dpAdmit = one(all, (s) => s.service === "data-plane" && s.name === "admission.v1.AdmissionService/Admit", "data-plane Admit");
    assert.equal(dpAdmit.kind, CLIENT);
    assert.equal(dpAdmit.parentSpanId, root.spanId);
    const cpAdmit = one(all, (s) => s.service === "control-plane" && s.name === "admission.v1.AdmissionService/Admit", "control-plane Admit");
    assert.equal(cpAdmit.kind, SERVER);
    assert.equal(cpAdmit.parentSpanId, dpAdmit.spanId, "the decision is a child of the data plane's Admit call (context on the Session message)");
    const reserve = one(all, (s) => s.name === "counters.reserve", "counter-store reserve");
    assert.equal(reserve.parentSpanId, cpAdmit.spanId);
    const upstream = all.filter((s) => s.service === "data-plane" && s.name.startsWith("chat "));
    assert.equal(upstream.length, attempts, "one span per route attempt");
    for (const u of upstream) {
      assert.equal(u.parentSpanId, root.spanId);
      assert.equal(u.kind, CLIENT);
    }
    const dpSettle = one(all, (s) => s.service === "data-plane" && s.name === "admission.v1.AdmissionService/Settle", "data-plane Settle");
    assert.equal(dpSettle.parentSpanId, root.spanId);
    assert.equal(dpSettle.attributes["admission.settle.result"], "delivered");
    const cpSettle = one(all, (s) => s.service === "control-plane" && s.name === "admission.v1.AdmissionService/Settle", "control-plane Settle");
    assert.equal(cpSettle.parentSpanId, dpSettle.spanId);
    assert.equal(one(all, (s) => s.name === "counters.settle", "counter-store settle").parentSpanId, cpSettle.spanId);
    assert.equal(one(all, (s) => s.name === "ledger.append", "ledger write").parentSpanId, cpSettle.spanId);

    // The provider's usage, in GenAI names, on the request, the served attempt and the recorded Settle.
    const served = upstream.at(-1)!;
    for (const span of [root, served, cpSettle]) {
      assert.equal(span.attributes["gen_ai.usage.input_tokens"], 321, span.name);
      assert.equal(span.attributes["gen_ai.usage.output_tokens"], 54, span.name);
      assert.equal(span.attributes["gen_ai.usage.cache_read.input_tokens"], 200, span.name);
      assert.equal(span.attributes["gen_ai.usage.cache_creation.input_tokens"], 0, span.name);
    }
    assert.equal(root.attributes["gen_ai.operation.name"], "chat");
    assert.equal(root.attributes["gen_ai.request.model"], "m-pro");
    assert.equal(root.attributes["gen_ai.request.max_tokens"], 100);
    assert.equal(served.attributes["gen_ai.operation.name"], "chat");
    assert.equal(served.attributes["gen_ai.request.max_tokens"], 100, "the cap forwarded (within the plan's)");
    for (const span of [root, dpAdmit, cpAdmit]) {
      assert.equal(span.attributes["admission.tenant"], "tr", span.name);
      assert.equal(span.attributes["admission.key_id"], "ktr", span.name);
      assert.equal(span.attributes["admission.decision"], "allowed", span.name);
      assert.ok(Number(span.attributes["admission.reserved_cost_micros"]) > 0, span.name);
      assert.match(String(span.attributes["admission.reservation_id"]), /^r1\.[\w-]+$/, "the reservation id without its signature");
    }
    assert.equal(cpAdmit.attributes["admission.task"], "DRAFT");
    assert.equal(cpAdmit.attributes["admission.mode"], "ENFORCE");
    assert.equal(cpSettle.attributes["admission.actual_cost_micros"], 321 + 2 * 54);
    assert.equal(cpSettle.attributes["admission.outcome"], "SUCCESS");
    assert.equal(cpSettle.attributes["admission.tenant"], "tr");
    assert.equal(root.attributes["http.response.status_code"], 200);
    assert.equal(root.kind, SERVER);
    return { upstream, cpAdmit, cpSettle };
  }

  test("a chat request without a traceparent starts a trace holding every step of both planes", async () => {
    const r = await send();
    assert.equal(r.status, 200);
    const { root, all } = await traceOf(r.requestId, 9);
    assert.equal(root.parentSpanId, "", "a new trace");
    assert.equal(root.name, "POST /v1/chat/completions");
    const { upstream } = checkServed(all, root, 1);
    assert.equal(upstream[0]!.attributes["gen_ai.provider.name"], "p1");
    assert.equal(upstream[0]!.attributes["gen_ai.response.model"], "m-pro");
    assert.equal(p1.traceparents.at(-1), `00-${root.traceId}-${upstream[0]!.spanId}-01`, "the provider gets the attempt's context");
    assert.equal(all.length, 9, all.map((s) => s.name).join(", "));
    const settled = logLines.find((l) => l.msg === "request settled" && l.requestId === r.requestId);
    assert.equal(settled?.trace_id, root.traceId, "the log line carries the trace id");
    assert.equal(typeof settled?.span_id, "string");
  });

  test("a streamed request continues the client's trace (traceparent and tracestate)", async () => {
    const r = await send({ stream: true, headers: { traceparent: `00-${clientTraceId}-${clientSpanId}-01`, tracestate: "vendor=opaque" } });
    assert.equal(r.status, 200);
    assert.ok(r.text.includes("[DONE]"));
    const { root, all } = await traceOf(r.requestId, 9);
    assert.equal(root.traceId, clientTraceId);
    assert.equal(root.parentSpanId, clientSpanId);
    assert.equal(root.attributes["admission.stream"], true);
    checkServed(all, root, 1);
  });

  test("a stream that outlives its lease: each Renew is a child of the request's span", async () => {
    p1.streamDelayMs = 800;
    try {
      const r = await send({ stream: true });
      assert.equal(r.status, 200);
      const { root, all } = await traceOf(r.requestId, 11);
      const renew = all.filter((s) => s.service === "control-plane" && s.name === "admission.v1.AdmissionService/Renew");
      assert.ok(renew.length >= 1, all.map((s) => s.name).join(", "));
      for (const span of renew) {
        assert.equal(span.parentSpanId, root.spanId);
        assert.equal(span.attributes["admission.tenant"], "tr");
        assert.equal(all.filter((s) => s.name === "counters.renew" && s.parentSpanId === span.spanId).length, 1);
      }
      checkServed(all, root, 1);
    } finally {
      p1.streamDelayMs = 0;
    }
  });

  test("failover shows as one span per route attempt, the failed one marked", async () => {
    p1.failNext = 1;
    const r = await send({ headers: { traceparent: `00-${"ab".repeat(16)}-${"cd".repeat(8)}-01` } });
    assert.equal(r.status, 200);
    const { root, all } = await traceOf(r.requestId, 10);
    assert.equal(root.traceId, "ab".repeat(16));
    const { upstream } = checkServed(all, root, 2);
    const [first, second] = [...upstream].sort((a, b) => Number(a.attributes["admission.route.attempt"]) - Number(b.attributes["admission.route.attempt"]));
    assert.equal(first!.attributes["gen_ai.provider.name"], "p1");
    assert.equal(first!.attributes["http.response.status_code"], 503);
    assert.equal(first!.attributes["error.type"], "503");
    assert.equal(first!.statusCode, 2, "ERROR");
    assert.equal(second!.attributes["gen_ai.provider.name"], "p2");
    assert.equal(second!.attributes["gen_ai.response.model"], "m-pro-2");
    assert.equal(p2.traceparents.at(-1), `00-${"ab".repeat(16)}-${second!.spanId}-01`);
  });

  test("a denied request: the decision's span says why, and nothing is forwarded or settled", async () => {
    const calls = p1.traceparents.length + p2.traceparents.length;
    const r = await send({ key: "kbr", headers: { traceparent: `00-${"12".repeat(16)}-${"34".repeat(8)}-01` } });
    assert.equal(r.status, 402);
    const { root, all } = await traceOf(r.requestId, 4);
    assert.equal(root.traceId, "12".repeat(16));
    const cpAdmit = one(all, (s) => s.service === "control-plane" && s.name.endsWith("/Admit"), "control-plane Admit");
    for (const span of [root, cpAdmit]) {
      assert.equal(span.attributes["admission.decision"], "denied");
      assert.match(String(span.attributes["admission.reason"]), /BUDGET/);
    }
    assert.equal(root.attributes["http.response.status_code"], 402);
    assert.deepEqual(all.filter((s) => s.name.startsWith("chat ") || s.name.endsWith("/Settle")), []);
    assert.equal(p1.traceparents.length + p2.traceparents.length, calls);
  });

  test("a malformed traceparent starts a new trace and is not an error", async () => {
    const r = await send({ headers: { traceparent: `00-${"0".repeat(32)}-${clientSpanId}-01` } });
    assert.equal(r.status, 200);
    const { root, all } = await traceOf(r.requestId, 9);
    assert.notEqual(root.traceId, "0".repeat(32));
    assert.equal(root.parentSpanId, "");
    checkServed(all, root, 1);
    const garbled = await send({ headers: { traceparent: "not a traceparent at all" } });
    assert.equal(garbled.status, 200);
    assert.equal((await traceOf(garbled.requestId, 9)).root.parentSpanId, "");
  });

  test("a unary call takes its parent from the gRPC metadata; PolicyService calls have spans too", async () => {
    const traceId = "5e".repeat(16);
    const res = await cp.admission.admit({ credential: secretOf("ktr"), task: "DRAFT", model: "m-pro", inputTokens: 10n, maxOutputTokens: 10n }, { traceparent: `00-${traceId}-${"77".repeat(8)}-01` });
    assert.equal(res.allowed, true);
    await waitFor(() => receiver.trace(traceId).some((s) => s.name === "counters.reserve"), "the unary Admit's spans");
    const admit = one(receiver.trace(traceId), (s) => s.name.endsWith("/Admit"), "Admit");
    assert.equal(admit.parentSpanId, "77".repeat(8));
    await cp.policy.getUsage({ tenant: "tr" }, { ...admin, traceparent: `00-${"6f".repeat(16)}-${"88".repeat(8)}-01` });
    await waitFor(() => receiver.trace("6f".repeat(16)).length > 0, "the GetUsage span");
    assert.equal(receiver.trace("6f".repeat(16))[0]!.name, "admission.v1.PolicyService/GetUsage");
  });

  test("an ext_authz Check is a child of the checked request's traceparent when Envoy sends no metadata", async () => {
    const traceId = "9a".repeat(16);
    const authz = unaryClient(Authorization, cp.address);
    try {
      await authz.check({
        attributes: { request: { http: { method: "POST", path: "/v1/chat/completions", body: JSON.stringify({ model: "m-pro", max_tokens: 10, messages: [{ role: "user", content: promptText }] }), headers: {
          authorization: `Bearer ${secretOf("ktr")}`, "x-llm-task": "DRAFT", "content-type": "application/json", traceparent: `00-${traceId}-${"9b".repeat(8)}-01`,
        } } } },
      });
    } finally {
      authz.close();
    }
    await waitFor(() => receiver.trace(traceId).some((s) => s.name === "counters.reserve"), "the Check's spans");
    const check = one(receiver.trace(traceId), (s) => s.name === "envoy.service.auth.v3.Authorization/Check", "Check");
    assert.equal(check.parentSpanId, "9b".repeat(8));
    assert.equal(check.attributes["admission.decision"], "allowed");
    assert.equal(check.attributes["admission.tenant"], "tr");
  });

  test("the export is OTLP protobuf and holds no credential, provider key, admin token, prompt or completion", async () => {
    await dp.tracing.flush();
    await cp.cp.tracing.flush();
    assert.deepEqual([...receiver.contentTypes], ["application/x-protobuf"]);
    const exported = Buffer.concat(receiver.bodies).toString("latin1");
    for (const secret of [secretOf("ktr"), secretOf("kbr"), "sk-provider-one-secret", "sk-provider-two-secret", adminToken, promptText, completionText]) {
      assert.ok(!exported.includes(secret), `"${secret.slice(0, 12)}…" is not in the export`);
    }
    for (const span of receiver.spans) {
      for (const value of Object.values(span.attributes)) assert.doesNotMatch(String(value), /^r1\.[\w-]+\.[\w-]+$/, "no signed reservation id (it settles on its own)");
    }
    assert.equal(await counterTotal(dp.metrics.registry, "proxy_trace_spans_dropped_total"), 0);
  });
});

describe("tracing with an unreachable or stalled collector", () => {
  for (const kind of ["refused", "stalled"] as const) {
    test(`${kind}: every request is served; spans past the bounded queue are dropped and counted`, async () => {
      const spoolDir = mkdtempSync(join(tmpdir(), "adm-otel-down-"));
      let stalled: Server | undefined;
      let endpoint: string;
      if (kind === "refused") {
        endpoint = `http://127.0.0.1:${await freePort()}`;
      } else {
        stalled = createServer(() => undefined); // reads nothing, answers nothing
        await new Promise<void>((r) => stalled!.listen(0, "127.0.0.1", r));
        endpoint = `http://127.0.0.1:${(stalled.address() as { port: number }).port}`;
      }
      const otelEnv = { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: "10", OTEL_BSP_MAX_QUEUE_SIZE: "4", OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "2", OTEL_BSP_EXPORT_TIMEOUT: "60000" };
      const cp = await startTestControlPlane({ config: { tracing: loadTracingConfig(otelEnv, "control-plane") } });
      await cp.policy.applyBundle({ bundle: scenario({ id: "tr", keys: [{ id: "ktr" }] }) }, admin);
      const provider = new TracedProvider();
      await provider.start();
      const dp = await startDataPlane({ ...loadDataPlaneConfig(otelEnv), host: "127.0.0.1", port: 0, metricsPort: 0, controlPlaneAddr: cp.address, spoolDir }, {
        logger: pino({ level: "silent" }),
        providers: [{ name: "p1", baseUrl: `http://127.0.0.1:${provider.port}/v1`, apiKey: "" }, { name: "p2", baseUrl: `http://127.0.0.1:${provider.port}/v1`, apiKey: "" }],
      });
      try {
        for (let i = 0; i < 20; i++) {
          const res = await fetch(`http://127.0.0.1:${dp.port}/v1/chat/completions`, {
            method: "POST",
            headers: { authorization: `Bearer ${secretOf("ktr")}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
            body: JSON.stringify({ model: "m-pro", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
          });
          assert.equal(res.status, 200);
          await res.text();
        }
        const dropped = async () => (await counterTotal(dp.metrics.registry, "proxy_trace_spans_dropped_total")) + (await counterTotal(cp.cp.metrics.registry, "admission_trace_spans_dropped_total"));
        let total = 0;
        await waitFor(() => {
          void dropped().then((v) => (total = v));
          return total > 0;
        }, "dropped spans to be counted");
        assert.ok(total > 0);
      } finally {
        await dp.close();
        await cp.close();
        provider.server.close();
        stalled?.closeAllConnections();
        stalled?.close();
        rmSync(spoolDir, { recursive: true, force: true });
      }
    });
  }
});

describe("tracing configuration from the standard variables", () => {
  test("off without an endpoint or with OTEL_SDK_DISABLED; the traces endpoint wins over the base one", () => {
    assert.equal(loadTracingConfig({}, "svc"), undefined);
    assert.equal(loadTracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_SDK_DISABLED: "true" }, "svc"), undefined);
    assert.equal(loadTracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/" }, "svc")?.tracesUrl, "http://c:4318/v1/traces");
    assert.equal(loadTracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://t:4443/x" }, "svc")?.tracesUrl, "https://t:4443/x");
    const c = loadTracingConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_EXPORTER_OTLP_HEADERS: "api-key=s%3Dcret, x=1", OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=prod,service.name=from-attrs",
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25",
    }, "svc")!;
    assert.deepEqual(c.headers, { "api-key": "s=cret", x: "1" });
    assert.equal(c.serviceName, "from-attrs");
    assert.deepEqual(c.sampler, { name: "parentbased_traceidratio", ratio: 0.25 });
    assert.equal(loadTracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_SERVICE_NAME: "named" }, "svc")?.serviceName, "named");
  });

  test("a malformed value stops start-up naming the variable", () => {
    const base = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" };
    assert.throws(() => loadDataPlaneConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "grpc://c:4317" }), /OTEL_EXPORTER_OTLP_ENDPOINT must be an http/);
    assert.throws(() => loadDataPlaneConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "not a url" }), /OTEL_EXPORTER_OTLP_TRACES_ENDPOINT "not a url" is not a URL/);
    assert.throws(() => loadDataPlaneConfig({ ...base, OTEL_TRACES_SAMPLER: "sometimes" }), /OTEL_TRACES_SAMPLER must be one of/);
    assert.throws(() => loadDataPlaneConfig({ ...base, OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "2" }), /OTEL_TRACES_SAMPLER_ARG must be a number between 0 and 1/);
    assert.throws(() => loadDataPlaneConfig({ ...base, OTEL_BSP_MAX_QUEUE_SIZE: "-1" }), /OTEL_BSP_MAX_QUEUE_SIZE must be an integer/);
    assert.throws(() => loadDataPlaneConfig({ ...base, OTEL_EXPORTER_OTLP_HEADERS: "novalue" }), /OTEL_EXPORTER_OTLP_HEADERS: "novalue" is not key=value/);
  });
});

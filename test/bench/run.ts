/**
 * `npm run bench [-- --smoke] [-- --json]`: measures decisions and the proxy
 * against baselines run in the same process, on this machine, and prints
 * ratios. Not a test: numbers vary with the machine; ratios are what count.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import httpProxy from "http-proxy";
import { createServer } from "node:http";
import pino from "pino";
import { AdmissionService, AdmitRequestSchema, AdmitResponseSchema, type AdmitRequest } from "../../gen/admission/v1/admission_pb.js";
import { startControlPlane } from "../../control-plane/app.js";
import { defaultControlPlaneConfig } from "../../control-plane/config.js";
import { grpcServiceDefinition } from "../../control-plane/grpc/service-definition.js";
import { ControlPlaneClient } from "../../data-plane/control-plane-client.js";
import { loadDataPlaneConfig } from "../../data-plane/config.js";
import { startMockProvider } from "../../data-plane/mock-provider.js";
import { startDataPlane } from "../../data-plane/server.js";
import { scenario, secretOf } from "../support/scenario.js";

const smoke = process.argv.includes("--smoke");
const asJson = process.argv.includes("--json");
const durationMs = smoke ? 400 : 4_000;
const silent = pino({ level: "silent" });
const rows: Array<{ scenario: string; opsPerSec: number; p50Ms: number; p99Ms: number; p999Ms: number; baseline?: string; ratio?: number }> = [];

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]! : 0;
}

/** Runs `op` from `concurrency` workers for the duration; latencies in ms. */
async function load(name: string, concurrency: number, op: (i: number) => Promise<unknown>, baseline?: string): Promise<void> {
  const latencies: number[] = [];
  const end = performance.now() + durationMs;
  let i = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      const t0 = performance.now();
      await op(i++);
      latencies.push(performance.now() - t0);
    }
  }));
  latencies.sort((a, b) => a - b);
  const opsPerSec = Math.round(latencies.length / (durationMs / 1000));
  const base = baseline ? rows.find((r) => r.scenario === baseline) : undefined;
  rows.push({
    scenario: name, opsPerSec, p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99), p999Ms: percentile(latencies, 0.999),
    baseline, ratio: base ? opsPerSec / base.opsPerSec : undefined,
  });
}

/** A bare grpc-js server answering Admit with a constant response of a realistic size, unary and stream. */
async function echoServer(): Promise<{ address: string; close(): void }> {
  const server = new grpc.Server();
  const response = create(AdmitResponseSchema, { allowed: true, httpStatus: 200, reservationId: "r1.".padEnd(180, "x"), maxOutputTokens: 512n, tenant: "t", user: "u" });
  server.addService(grpcServiceDefinition(AdmissionService), {
    admit: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, response),
    session: (call: grpc.ServerDuplexStream<any, any>) => {
      call.on("data", (m: { id: bigint }) => call.write({ $typeName: "admission.v1.SessionResponse", id: m.id, result: { case: "admit", value: response } }));
      call.on("end", () => call.end());
    },
  } as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((r) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (_e, p) => r(p)));
  return { address: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
}

async function decisions(): Promise<void> {
  const echo = await echoServer();
  const echoUnary = new ControlPlaneClient({ address: echo.address, unary: true });
  const echoStream = new ControlPlaneClient({ address: echo.address });
  const req = create(AdmitRequestSchema, { credential: "x", task: "DRAFT", inputTokens: 100n, maxOutputTokens: 100n });
  await load("echo unary c64", 64, () => echoUnary.admit(req));
  await load("echo stream c64", 64, () => echoStream.admit(req));
  echoUnary.close();
  echoStream.close();
  echo.close();

  for (const backend of ["memory", ...(process.env.REDIS_URL ? ["redis"] : [])]) {
    const dir = mkdtempSync(join(tmpdir(), "adm-bench-"));
    const cp = await startControlPlane({
      ...defaultControlPlaneConfig, grpcHost: "127.0.0.1", grpcPort: 0, httpPort: 0, adminToken: "bench-admin-token-0000", dataDir: dir, spoolDir: join(dir, "spool"),
      logLevel: "silent", redisUrl: backend === "redis" ? process.env.REDIS_URL : undefined, redisKeyPrefix: `admbench-${process.pid}`,
    }, { logger: silent });
    // 8 meters per decision: requests (minute, day), tokens (minute, month), budget (day, month), concurrency, per-user tokens.
    await cp.policy.apply(scenario({
      id: "bench",
      limits: [
        { kind: "REQUESTS", window: "MINUTE", per: "KEY", value: 1e12 }, { kind: "REQUESTS", window: "DAY", per: "TENANT", value: 1e12 },
        { kind: "TOKENS", window: "MINUTE", per: "TENANT", value: 1e15 }, { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1e15 },
        { kind: "BUDGET_MICROS", window: "DAY", per: "TENANT", value: 1e15 }, { kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 1e15 },
        { kind: "CONCURRENCY", per: "TENANT", value: 1e9 }, { kind: "TOKENS", window: "DAY", per: "USER", value: 1e15 },
      ],
      keys: Array.from({ length: 64 }, (_, i) => ({ id: `bk${i}` })),
    }), { dryRun: false, actor: "bench" });
    const address = `127.0.0.1:${cp.grpcPort}`;
    const unary = new ControlPlaneClient({ address, unary: true });
    const session = new ControlPlaneClient({ address });
    const admit = (c: ControlPlaneClient, i: number) => c.admit({ ...req, credential: secretOf(`bk${i % 64}`) } as AdmitRequest);
    await load(`Admit unary ${backend} c1`, 1, (i) => admit(unary, i), undefined);
    await load(`Admit unary ${backend} c64`, 64, (i) => admit(unary, i), "echo unary c64");
    await load(`Admit Session ${backend} c64`, 64, (i) => admit(session, i), "echo stream c64");
    await load(`Admit+Settle Session ${backend} c64`, 64, async (i) => {
      const d = await admit(session, i);
      await session.settle({ $typeName: "admission.v1.SettleRequest", reservationId: d.reservationId, inputTokens: 100n, outputTokens: 50n, provider: "", model: "", outcome: 0, latencyMs: 0n, estimated: false, credential: "" });
    }, "echo stream c64");
    unary.close();
    session.close();
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function post(port: number, path: string, body: string, headers: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const r = request({ host: "127.0.0.1", port, path, method: "POST", headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers }, agent: keepAlive }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
    });
    r.on("error", reject);
    r.end(body);
  });
}
const keepAlive = new (await import("node:http")).Agent({ keepAlive: true, maxSockets: 256 });

async function dataPlane(): Promise<void> {
  const mock = await startMockProvider();
  const bare = httpProxy.createProxyServer({ target: `http://127.0.0.1:${mock.port}`, agent: keepAlive });
  const bareServer = createServer((req, res) => bare.web(req, res));
  await new Promise<void>((r) => bareServer.listen(0, "127.0.0.1", r));
  const barePort = (bareServer.address() as { port: number }).port;
  const dir = mkdtempSync(join(tmpdir(), "adm-bench-dp-"));
  const cp = await startControlPlane({ ...defaultControlPlaneConfig, grpcHost: "127.0.0.1", grpcPort: 0, httpPort: 0, adminToken: "bench-admin-token-0000", dataDir: dir, spoolDir: join(dir, "spool"), logLevel: "silent" }, { logger: silent });
  await cp.policy.apply(scenario({ id: "bench", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1e15 }], keys: [{ id: "bk" }] }), { dryRun: false, actor: "bench" });
  const dp = await startDataPlane({ ...loadDataPlaneConfig({}), host: "127.0.0.1", port: 0, controlPlaneAddr: `127.0.0.1:${cp.grpcPort}`, spoolDir: join(dir, "dp-spool"), logLevel: "silent" }, {
    logger: silent, providers: [{ name: "p1", baseUrl: mock.baseUrl, apiKey: "" }, { name: "p2", baseUrl: mock.baseUrl, apiKey: "" }],
  });
  const body = JSON.stringify({ model: "m-pro", max_tokens: 16, messages: [{ role: "user", content: "Draft a claim about a widget" }] });
  const auth = { authorization: `Bearer ${secretOf("bk")}`, "x-llm-task": "DRAFT" };
  await load("direct upstream c1", 1, () => post(mock.port, "/v1/chat/completions", body));
  await load("bare http-proxy c1", 1, () => post(barePort, "/v1/chat/completions", body), "direct upstream c1");
  await load("data plane c1", 1, () => post(dp.port, "/v1/chat/completions", body, auth), "direct upstream c1");
  await load("bare http-proxy c32", 32, () => post(barePort, "/v1/chat/completions", body));
  await load("data plane c32", 32, () => post(dp.port, "/v1/chat/completions", body, auth), "bare http-proxy c32");
  await dp.close();
  await cp.stop();
  bareServer.close();
  await mock.close();
  rmSync(dir, { recursive: true, force: true });
}

await decisions();
await dataPlane();
keepAlive.destroy();

if (asJson) {
  process.stdout.write(`${JSON.stringify({ machine: { cpus: (await import("node:os")).cpus().length, node: process.version }, durationMs, rows }, null, 2)}\n`);
} else {
  const fmt = (n: number) => n.toFixed(3);
  process.stdout.write(`| scenario | ops/s | p50 ms | p99 ms | p99.9 ms | vs baseline |\n|---|---:|---:|---:|---:|---|\n`);
  for (const r of rows) {
    process.stdout.write(`| ${r.scenario} | ${r.opsPerSec} | ${fmt(r.p50Ms)} | ${fmt(r.p99Ms)} | ${fmt(r.p999Ms)} | ${r.baseline ? `${r.ratio!.toFixed(2)}× ${r.baseline}` : ""} |\n`);
  }
  const direct = rows.find((r) => r.scenario === "direct upstream c1");
  const proxied = rows.find((r) => r.scenario === "data plane c1");
  if (direct && proxied) process.stdout.write(`\ndata plane added latency: p50 ${fmt(proxied.p50Ms - direct.p50Ms)} ms, p99 ${fmt(proxied.p99Ms - direct.p99Ms)} ms (vs a direct call to the same upstream)\n`);
}
process.exit(0);

/**
 * The benchmark's servers, each in its own process so that the load generator
 * (the parent) and the server under test, baseline or subject, get the same
 * CPU share. `spawn(role, options)` forks this module; the child starts the
 * role, reports what the parent needs (a port, figures) over IPC, and stops
 * gracefully on SIGTERM (so a --cpu-prof profile is written). The planes log
 * as deployed: at their default level (info: the data plane writes a line per
 * request), their stdout going to a file, as a container runtime's would; the
 * file is removed when the child stops.
 */
import { fork, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { Agent } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import httpProxy from "http-proxy";
import { startControlPlane } from "../../control-plane/app.js";
import { defaultControlPlaneConfig } from "../../control-plane/config.js";
import { grpcServiceDefinition } from "../../control-plane/grpc/service-definition.js";
import { meterKey } from "../../control-plane/meters.js";
import { loadTracingConfig } from "../../control-plane/tracing.js";
import { windowSpan } from "../../control-plane/windows.js";
import { defaultDataPlaneConfig } from "../../data-plane/config.js";
import { startMockProvider } from "../../data-plane/mock-provider.js";
import { startDataPlane } from "../../data-plane/server.js";
import { AdmissionService, AdmitResponseSchema, type SessionRequest } from "../../gen/admission/v1/admission_pb.js";
import { LimitKind, Per, Window } from "../../gen/admission/v1/policy_pb.js";
import { Authorization, CheckResponseSchema } from "../../gen/envoy/service/auth/v3/external_auth_pb.js";
import { benchBundle, type BenchSizes } from "./bundle.js";

export interface ControlPlaneRole {
  readonly sizes: BenchSizes;
  readonly redisUrl?: string;
  readonly redisKeyPrefix?: string;
  /** PostgreSQL for the ledger, config and audit; without it PGlite in memory. */
  readonly databaseUrl?: string;
  /** Tracing on, exporting to this OTLP endpoint (otherwise off). */
  readonly otlpEndpoint?: string;
}

export interface Roles {
  "control-plane": { options: ControlPlaneRole; info: { grpcPort: number; applyMs: number } };
  /**
   * A bare grpc-js server answering Admit (unary and Session) with `response`
   * (base64 AdmitResponse) and ext_authz Check with `check` (base64 CheckResponse).
   */
  echo: { options: { response: string; check: string }; info: { port: number } };
  "mock-upstream": { options: Record<string, never>; info: { port: number } };
  "bare-proxy": { options: { target: string }; info: { port: number } };
  "data-plane": { options: { controlPlaneAddr: string; upstream: string; otlpEndpoint?: string }; info: { port: number } };
  /** An OTLP/HTTP collector stand-in: reads each export whole and answers 200 (an empty ExportTraceServiceResponse). */
  "otlp-receiver": { options: Record<string, never>; info: { port: number } };
  /** Loads a bundle of `sizes` and creates `meters` meters through the counter store; reports RSS. */
  memory: { options: { sizes: BenchSizes; meters: number; databaseUrl?: string }; info: MemoryFigures };
}

export interface MemoryFigures {
  /** Started, no bundle yet. */
  readonly rssIdleMb: number;
  readonly rssBundleMb: number;
  readonly rssMetersMb: number;
  readonly meters: number;
  readonly applyMs: number;
  readonly metersMs: number;
}

export interface Child<I> {
  readonly info: I;
  readonly pid: number;
  /** Resident set size now (from /proc), in MB. */
  rssMb(): number;
  /** Bytes the child has written to its stdout (its log) so far. */
  logBytes(): number;
  stop(): Promise<void>;
}

const self = fileURLToPath(import.meta.url);

/** Starts a role in a child process; `cpuProfDir` writes a V8 CPU profile there on exit. */
export function spawn<R extends keyof Roles>(role: R, options: Roles[R]["options"], cpuProfDir?: string): Promise<Child<Roles[R]["info"]>> {
  return new Promise((resolve, reject) => {
    const execArgv = ["--expose-gc", ...(cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${cpuProfDir}`, `--cpu-prof-name=${role}-${Date.now()}.cpuprofile`] : [])];
    const logFile = join(tmpdir(), `adm-bench-${role}-${process.pid}-${Date.now()}.log`);
    const log = openSync(logFile, "w");
    const child: ChildProcess = fork(self, [`--role=${role}`, JSON.stringify(options)], { stdio: ["ignore", log, "inherit", "ipc"], execArgv });
    closeSync(log);
    const exited = new Promise<void>((r) => child.once("exit", () => (rmSync(logFile, { force: true }), r())));
    const early = (code: number | null) => reject(new Error(`bench ${role} process exited with ${code} before it was ready`));
    child.once("exit", early);
    child.once("message", (info) => {
      child.off("exit", early);
      resolve({
        info: info as Roles[R]["info"],
        pid: child.pid!,
        rssMb: () => rssOf(child.pid!),
        logBytes: () => statSync(logFile, { throwIfNoEntry: false })?.size ?? 0,
        stop: async () => {
          if (child.exitCode === null) child.kill("SIGTERM");
          await exited;
        },
      });
    });
  });
}

function rssOf(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return kb ? Number(kb) / 1024 : Number.NaN;
}

const rssMb = () => process.memoryUsage().rss / 1024 / 1024;

async function controlPlane(o: ControlPlaneRole) {
  const dir = mkdtempSync(join(tmpdir(), "adm-bench-"));
  const cp = await startControlPlane({
    ...defaultControlPlaneConfig, grpcHost: "127.0.0.1", grpcPort: 0, httpPort: 0, adminToken: "bench-admin-token-0000",
    dataDir: o.databaseUrl ? dir : "memory://", databaseUrl: o.databaseUrl, spoolDir: join(dir, "spool"),
    redisUrl: o.redisUrl, redisKeyPrefix: o.redisKeyPrefix ?? defaultControlPlaneConfig.redisKeyPrefix, shutdownGraceMs: 2_000,
    tracing: tracingTo(o.otlpEndpoint, "control-plane"),
  });
  const t0 = performance.now();
  await cp.policy.apply(benchBundle(o.sizes), { dryRun: false, actor: "bench" });
  const applyMs = performance.now() - t0;
  return { info: { grpcPort: cp.grpcPort, applyMs }, stop: async () => (await cp.stop(), rmSync(dir, { recursive: true, force: true })) };
}

async function echo(o: Roles["echo"]["options"]) {
  const response = fromBinary(AdmitResponseSchema, Buffer.from(o.response, "base64"));
  const checked = fromBinary(CheckResponseSchema, Buffer.from(o.check, "base64"));
  const server = new grpc.Server();
  server.addService(grpcServiceDefinition(Authorization), {
    check: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, checked),
  } as grpc.UntypedServiceImplementation);
  server.addService(grpcServiceDefinition(AdmissionService), {
    admit: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, response),
    session: (call: grpc.ServerDuplexStream<SessionRequest, unknown>) => {
      call.on("data", (m: SessionRequest) => call.write({ $typeName: "admission.v1.SessionResponse", id: m.id, result: { case: "admit", value: response } }));
      call.on("end", () => call.end());
    },
  } as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { info: { port }, stop: async () => server.forceShutdown() };
}

async function bareProxy(o: Roles["bare-proxy"]["options"]) {
  const agent = new Agent({ keepAlive: true, maxSockets: 1024 });
  const proxy = httpProxy.createProxyServer({ target: o.target, agent });
  proxy.on("error", (_err, _req, res) => {
    if ("writeHead" in res && !res.headersSent) res.writeHead(502);
    res.end();
  });
  const server = createServer((req, res) => proxy.web(req, res));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { info: { port: (server.address() as { port: number }).port }, stop: async () => (server.close(), agent.destroy()) };
}

async function dataPlane(o: Roles["data-plane"]["options"]) {
  const spoolDir = mkdtempSync(join(tmpdir(), "adm-bench-dp-"));
  const dp = await startDataPlane({ ...defaultDataPlaneConfig, host: "127.0.0.1", port: 0, metricsPort: 0, controlPlaneAddr: o.controlPlaneAddr, spoolDir, tracing: tracingTo(o.otlpEndpoint, "data-plane") }, {
    providers: [{ name: "p1", baseUrl: o.upstream, apiKey: "" }, { name: "p2", baseUrl: o.upstream, apiKey: "" }, { name: "p-anthropic", baseUrl: o.upstream, api: "anthropic", apiKey: "" }],
  });
  return { info: { port: dp.port }, stop: async () => (await dp.close(), rmSync(spoolDir, { recursive: true, force: true })) };
}

/** The standard variables' defaults (5 s batches of up to 512, a queue of 2,048), exporting to `endpoint`. */
function tracingTo(endpoint: string | undefined, service: string) {
  return endpoint ? loadTracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: endpoint }, service) : undefined;
}

async function otlpReceiver() {
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(200, { "content-type": "application/x-protobuf" }).end());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { info: { port: (server.address() as { port: number }).port }, stop: async () => void server.close() };
}

/** Ten meters per key (requests, tokens and budget in their windows), so `meters` / 10 keys get them. */
async function memory(o: Roles["memory"]["options"]) {
  const dir = mkdtempSync(join(tmpdir(), "adm-bench-"));
  const cp = await startControlPlane({
    ...defaultControlPlaneConfig, grpcHost: "127.0.0.1", grpcPort: 0, httpPort: 0, adminToken: "bench-admin-token-0000",
    dataDir: o.databaseUrl ? dir : "memory://", databaseUrl: o.databaseUrl, spoolDir: join(dir, "spool"),
  });
  global.gc?.();
  const rssIdleMb = rssMb();
  let t0 = performance.now();
  await cp.policy.apply(benchBundle(o.sizes), { dryRun: false, actor: "bench" });
  const applyMs = performance.now() - t0;
  global.gc?.();
  const rssBundleMb = rssMb();
  const windows: Array<[LimitKind, Window]> = [
    [LimitKind.REQUESTS, Window.MINUTE], [LimitKind.REQUESTS, Window.HOUR], [LimitKind.REQUESTS, Window.DAY], [LimitKind.REQUESTS, Window.MONTH],
    [LimitKind.TOKENS, Window.MINUTE], [LimitKind.TOKENS, Window.HOUR], [LimitKind.TOKENS, Window.DAY], [LimitKind.TOKENS, Window.MONTH],
    [LimitKind.BUDGET_MICROS, Window.DAY], [LimitKind.BUDGET_MICROS, Window.MONTH],
  ];
  const now = Date.now();
  const spans = windows.map(([, w]) => windowSpan(w, now));
  const leases = Math.ceil(o.meters / windows.length);
  t0 = performance.now();
  for (let i = 0; i < leases; i++) {
    const key = `bk${i % o.sizes.keys}-${Math.floor(i / o.sizes.keys)}`;
    const meters = windows.map(([kind, w], j) => ({
      key: meterKey(kind, w, "", Per.KEY, key, spans[j]!.startMs), unit: kind === LimitKind.REQUESTS ? "requests" as const : kind === LimitKind.TOKENS ? "tokens" as const : "cost" as const,
      limit: 1e15, enforce: true, expiresAtMs: spans[j]!.endMs + 120_000,
    }));
    const tenant = `bt${i % o.sizes.tenants}`;
    if (i < o.sizes.tenants) await cp.counters.rebuild(tenant, "bench/1:1:", []);
    const r = await cp.counters.reserve({ tenant, leaseId: `l${i}`, reservationId: `l${i}`, requestId: "", meters, amounts: { tokens: 1_000, costMicros: 1_000 }, leaseExpiresAtMs: now + 300_000, nowMs: now });
    if (r.status !== "reserved") throw new Error(`reserve: ${r.status}`);
    await cp.counters.settle({ tenant, leaseId: `l${i}`, nowMs: now, graceMs: 30_000, usage: { inputTokens: 400, outputTokens: 500, costMicros: 1_400, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, outcome: 1, estimated: false, provider: "p1", model: "m-pro", latencyMs: 900, settledAtMs: now } });
    await cp.counters.markRecorded(tenant, `l${i}`);
  }
  const metersMs = performance.now() - t0;
  global.gc?.();
  const info: MemoryFigures = { rssIdleMb, rssBundleMb, rssMetersMb: rssMb(), meters: leases * windows.length, applyMs, metersMs };
  return { info, stop: async () => (await cp.stop(), rmSync(dir, { recursive: true, force: true })) };
}

const starters: { [R in keyof Roles]: (o: Roles[R]["options"]) => Promise<{ info: Roles[R]["info"]; stop(): Promise<void> }> } = {
  "control-plane": controlPlane, echo, "mock-upstream": async () => {
    // Streams arrive chunk by chunk, as from a model generating, so time to first byte and total differ.
    const mock = await startMockProvider({ chunkDelayMs: 1 });
    return { info: { port: mock.port }, stop: () => mock.close() };
  },
  "bare-proxy": bareProxy, "data-plane": dataPlane, "otlp-receiver": otlpReceiver, memory,
};

const role = process.argv.find((a) => a.startsWith("--role="))?.slice(7) as keyof Roles | undefined;
if (role) {
  const running = await starters[role](JSON.parse(process.argv[3]!) as never);
  const stop = () => void running.stop().finally(() => process.exit(0));
  process.once("SIGTERM", stop);
  // The benchmark process went away (killed, crashed): do not outlive it.
  process.once("disconnect", stop);
  process.send!(running.info);
}

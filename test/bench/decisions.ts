/**
 * Decisions: Admit over Session and unary, Settle and ext_authz Check at
 * concurrency 1 and 64 against a control plane in its own process (in-memory
 * counters, then Redis), each row measured in slices alternating with its
 * baseline's: a bare grpc-js echo server answering the same Admit messages
 * with a real answer's bytes, and Check with a constant; Check at a fixed
 * rate; and a peer limiter (rate-limiter-flexible) on the same Redis.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import { RateLimiterRedis } from "rate-limiter-flexible";
import { ControlPlaneClient } from "../../data-plane/control-plane-client.js";
import { AdmitRequestSchema, AdmitResponseSchema, Outcome, SettleRequestSchema, type AdmitRequest } from "../../gen/admission/v1/admission_pb.js";
import { Authorization, CheckRequestSchema, CheckResponseSchema, type CheckResponse } from "../../gen/envoy/service/auth/v3/external_auth_pb.js";
import { scratchDatabase } from "../support/databases.js";
import { grpcFrame, RawGrpcClient } from "../support/raw-grpc.js";
import { deleteKeysWithPrefix } from "../support/redis-keys.js";
import { secretOf } from "../support/scenario.js";
import { bucketKeyCount, bucketKeyId, keyId, metersPerDecision } from "./bundle.js";
import { alternating, closedLoop, drain, latency, openLoop, withCpu, type Side } from "./load.js";
import { spawn, type Child, type Roles } from "./processes.js";
import { cpuMicrosPerOp, type Bench } from "./report.js";

const section = "Decisions (control plane)";
const concurrencies = [1, 64] as const;
/** ext_authz Check is measured at this fixed rate against the design's p99 target. */
const checkRate = 2_000;
const checkP99TargetMs = 2;

const chatBody = JSON.stringify({ model: "m-pro", max_tokens: 500, messages: [{ role: "user", content: "Draft an independent claim for a widget with a spring-biased latch." }] });

function admitRequests(keys: number, id: (i: number) => string = keyId): AdmitRequest[] {
  return Array.from({ length: keys }, (_, i) => create(AdmitRequestSchema, { credential: secretOf(id(i)), task: "DRAFT", model: "m-pro", inputTokens: 400n, maxOutputTokens: 500n }));
}

/** Check requests as gRPC frames, ready to send. */
function checkRequests(keys: number): Buffer[] {
  return Array.from({ length: keys }, (_, i) => grpcFrame(toBinary(CheckRequestSchema, create(CheckRequestSchema, {
    attributes: { request: { http: { method: "POST", path: "/v1/chat/completions", headers: { authorization: `Bearer ${secretOf(keyId(i))}`, "x-llm-task": "DRAFT", "content-type": "application/json" }, body: chatBody } } },
  }))));
}

const checkPath = `/${Authorization.typeName}/${Authorization.method.check.name}`;

/**
 * ext_authz Check as Envoy sends it: pre-encoded requests over plain HTTP/2. A
 * grpc-js client costs the load process ~3x the server's CPU per unary call,
 * which on two cores would measure the client; Envoy's is C++.
 */
function checkClient(address: string): { check(frame: Buffer): Promise<CheckResponse>; close(): void } {
  const raw = new RawGrpcClient(address);
  return {
    async check(frame) {
      const answer = await raw.call(checkPath, { body: frame, timeoutMs: 10_000 });
      if (answer.kind !== "status" || answer.grpcStatus !== 0 || !answer.messages[0]) throw new Error(`Check failed: ${JSON.stringify(answer)}`);
      return fromBinary(CheckResponseSchema, answer.messages[0]);
    },
    close: () => raw.close(),
  };
}

const settleOf = (reservationId: string) => create(SettleRequestSchema, { reservationId, inputTokens: 400n, outputTokens: 310n, provider: "p1", model: "m-pro", outcome: Outcome.SUCCESS, latencyMs: 900n });

export async function decisions(bench: Bench): Promise<void> {
  const backends: Array<"memory" | "redis"> = ["memory", ...(bench.redisUrl ? ["redis" as const] : [])];
  if (!bench.redisUrl) bench.report.add({ section, scenario: "Redis rows", skipped: "REDIS_URL not set" });
  // The baseline server runs through every row: each subject row alternates with its baseline.
  const echo: { server?: Child<Roles["echo"]["info"]> } = {};
  try {
    for (const backend of backends) await onBackend(bench, backend, echo);
  } finally {
    await echo.server?.stop();
  }
}

/** Each of these rows is measured in slices alternating with its baseline's (see `alternating`). */
const sliceMs = 1_000;

async function onBackend(bench: Bench, backend: "memory" | "redis", echo: { server?: Child<Roles["echo"]["info"]> }): Promise<void> {
  const { report, durationMs, sizes } = bench;
  const keyPrefix = `admbench:${randomBytes(4).toString("hex")}`;
  const db = bench.databaseUrl ? await scratchDatabase() : undefined;
  const cp = await spawn("control-plane", { sizes, databaseUrl: db?.url, ...(backend === "redis" ? { redisUrl: bench.redisUrl, redisKeyPrefix: keyPrefix } : {}) }, bench.cpuProfDir);
  const address = `127.0.0.1:${cp.info.grpcPort}`;
  const unary = new ControlPlaneClient({ address, unary: true });
  const session = new ControlPlaneClient({ address });
  const authz = checkClient(address);
  const admits = admitRequests(sizes.keys);
  const checks = checkRequests(sizes.keys);
  const admitVia = (client: ControlPlaneClient, reservations: string[]) => async (i: number) => {
    const r = await client.admit(admits[i % admits.length]!);
    if (!r.allowed) throw new Error(`denied: ${r.message}`);
    reservations.push(r.reservationId);
  };
  const settleVia = (client: ControlPlaneClient) => async (id: string) => {
    const r = await client.settle(settleOf(id));
    if (r.duplicate) throw new Error(`settled twice: ${id}`);
  };
  const checkVia = (client: ReturnType<typeof checkClient>) => async (i: number) => {
    const r = await client.check(checks[i % checks.length]!);
    if (r.status?.code) throw new Error(`Check denied: ${r.status.message}`);
  };
  let baseline: ReturnType<typeof baselineClients> | undefined;
  try {
    // The decision is the realistic one: every meter of the plan, checked in the answer.
    const sample = await unary.admit(admits[0]!);
    if (!sample.allowed || sample.meters.length < metersPerDecision) throw new Error(`expected an allowed decision with ${metersPerDecision} meters, got ${sample.allowed} with ${sample.meters.length}`);
    await unary.settle(settleOf(sample.reservationId));
    const note = `${sizes.tenants} tenants, ${sizes.keys} keys, ${sample.meters.length} meters per decision; bundle applied in ${(cp.info.applyMs / 1000).toFixed(1)} s`;
    report.add({ section, scenario: `control plane, ${backend} counters`, note });
    // The bare grpc-js server answers the same requests with a real answer's bytes.
    if (!echo.server) {
      const checked = await authz.check(checks[0]!);
      echo.server = await spawn("echo", { response: Buffer.from(toBinary(AdmitResponseSchema, sample)).toString("base64"), check: Buffer.from(toBinary(CheckResponseSchema, checked)).toString("base64") });
    }
    baseline = baselineClients(`127.0.0.1:${echo.server.info.port}`, admits);
    const echoPids = { echo: echo.server.pid };
    // On Redis, its server's CPU too (when it runs on this machine).
    const redisPid = backend === "redis" ? await localRedisPid(bench.redisUrl!) : undefined;
    const cpPids: Record<string, number> = { "control plane": cp.pid, ...(redisPid ? { redis: redisPid } : {}) };

    const warm: string[] = [];
    await closedLoop(64, bench.warmupMs, admitVia(session, warm));
    await closedLoop(64, bench.warmupMs, admitVia(unary, warm));
    await closedLoop(64, bench.warmupMs, checkVia(authz));
    await closedLoop(64, bench.warmupMs, baseline.admitVia(baseline.stream));
    await closedLoop(64, bench.warmupMs, baseline.admitVia(baseline.unary));
    await closedLoop(64, bench.warmupMs, checkVia(baseline.authz));
    await drain(warm, 64, settleVia(session));

    const slices = Math.max(2, Math.round(durationMs / sliceMs));
    const echoNote = `bare grpc-js, ${toBinary(AdmitResponseSchema, sample).length}-byte response; measured in ${slices} slices alternating with the row below`;
    for (const c of concurrencies) {
      const reservations: string[] = [];
      const [echoStream, viaSession] = await alternating(c, durationMs, slices, { op: baseline.admitVia(baseline.stream), pids: echoPids }, { op: admitVia(session, reservations), pids: cpPids });
      const streamRow = report.measured(section, `echo stream c${c}`, echoStream, { note: echoNote });
      report.measured(section, `Admit Session ${backend} c${c}`, viaSession, { versus: streamRow, atLeast: backend === "memory" ? 0.7 : 0.5 });
      const [echoUnary, viaUnary] = await alternating(c, durationMs, slices, { op: baseline.admitVia(baseline.unary), pids: echoPids }, { op: admitVia(unary, reservations), pids: cpPids });
      const unaryRow = report.measured(section, `echo unary c${c}`, echoUnary, { note: echoNote });
      report.measured(section, `Admit unary ${backend} c${c}`, viaUnary, { versus: unaryRow, ...(backend === "memory" ? { atLeast: 0.8 } : {}) });
      const settled = await withCpu(cpPids, () => drain(reservations, c, settleVia(session), durationMs));
      report.measured(section, `Settle Session ${backend} c${c}`, settled, {
        versus: streamRow, note: `reservations of the Admit rows above; ${db ? "ledger on PostgreSQL" : "ledger on PGlite in memory"}`,
      });
      await drain(settled.left, 64, settleVia(session));
      const [constant, checked] = await alternating(c, durationMs, slices, { op: checkVia(baseline.authz), pids: echoPids }, { op: checkVia(authz), pids: cpPids });
      const checkRow = report.measured(section, `constant Check c${c}`, constant, { note: "bare grpc-js answering Check with a constant allowed response; alternating with the row below" });
      report.measured(section, `ext_authz Check ${backend} c${c}`, checked, { versus: checkRow, note: "body parsed and tokens counted; leases expire (Envoy does not settle)" });
    }
    await checkAtFixedRate(bench, "constant Check", echoPids, checkVia(baseline.authz), false);
    await checkAtFixedRate(bench, `ext_authz Check ${backend}`, cpPids, checkVia(authz));

    if (backend === "redis") {
      const reservations: string[] = [];
      await peer(bench, keyPrefix, { op: admitVia(session, reservations), pids: cpPids }, redisPid);
      await drain(reservations, 64, settleVia(session));
    }
  } finally {
    baseline?.close();
    unary.close();
    session.close();
    authz.close();
    await cp.stop();
    await db?.drop();
    if (backend === "redis") await deleteRedisKeys(bench.redisUrl!, keyPrefix);
  }
}

/** Check at the design's fixed rate, with its p99 target. */
async function checkAtFixedRate(bench: Bench, scenario: string, pids: Record<string, number>, check: (i: number) => Promise<void>, targeted = true): Promise<void> {
  const rate = bench.smoke ? 200 : checkRate;
  let n = 0;
  const fixed = await withCpu(pids, () => openLoop(rate, bench.durationMs, async () => {
    const t0 = performance.now();
    await check(n++);
    return { ms: performance.now() - t0 };
  }));
  const l = latency(fixed.rows.map((r) => r.ms));
  bench.report.latencyRow(section, `${scenario} at ${rate} req/s`, { ...l, opsPerSec: fixed.opsPerSec }, {
    cpu: fixed.cpu, cpuMicrosPerOp: cpuMicrosPerOp(fixed.cpuSeconds, fixed.rows.length), ...(targeted ? { target: `p99 ≤ ${checkP99TargetMs} ms at ${checkRate} req/s`, ...(rate === checkRate ? { met: l.p99 <= checkP99TargetMs && !fixed.errors } : {}) } : {}),
    note: fixed.errors ? `${fixed.errors} errors (${fixed.firstError})` : undefined,
  });
}

/**
 * Clients of the bare grpc-js server (the echo role) answering Admit (unary and
 * Session) with a real Admit answer's bytes and ext_authz Check with a constant.
 */
function baselineClients(address: string, admits: readonly AdmitRequest[]) {
  const unary = new ControlPlaneClient({ address, unary: true });
  const stream = new ControlPlaneClient({ address });
  const authz = checkClient(address);
  return {
    unary, stream, authz,
    admitVia: (client: ControlPlaneClient) => (i: number) => client.admit(admits[i % admits.length]!),
    close() {
      unary.close();
      stream.close();
      authz.close();
    },
  };
}

/**
 * A peer on the same Redis: one request-rate limit per key with
 * rate-limiter-flexible (one Redis round trip from the load process), against
 * the control plane's full decision (every meter, lease, signed reservation)
 * over Session, the two measured in alternating slices.
 */
async function peer(bench: Bench, keyPrefix: string, admit: Side, redisPid: number | undefined): Promise<void> {
  const section = "Peer on the same Redis";
  const redis = new Redis(bench.redisUrl!, { enableOfflineQueue: true });
  const limiter = new RateLimiterRedis({ storeClient: redis, keyPrefix: `${keyPrefix}:rlflx`, points: 1e9, duration: 60 });
  const consume: Side = { op: (i) => limiter.consume(keyId(i % bench.sizes.keys)), pids: redisPid ? { redis: redisPid } : {} };
  try {
    await closedLoop(64, bench.warmupMs, consume.op);
    const slices = Math.max(2, Math.round(bench.durationMs / sliceMs));
    for (const c of concurrencies) {
      const [theirs, ours] = await alternating(c, bench.durationMs, slices, consume, admit);
      const row = bench.report.measured(section, `rate-limiter-flexible c${c}`, theirs, { note: `one REQUESTS/minute limit per key, RateLimiterRedis, in the load process; ${slices} slices alternating with the row below` });
      bench.report.measured(section, `Admit Session redis c${c} (full decision)`, ours, { versus: row, note: `${metersPerDecision} meters, a lease and a signed reservation per decision` });
    }
  } finally {
    redis.disconnect();
  }
}

/** The pid of the Redis server behind `url` when it runs on this machine (its /proc entry is there), else undefined. */
async function localRedisPid(url: string): Promise<number | undefined> {
  const redis = new Redis(url);
  try {
    const pid = Number(/process_id:(\d+)/.exec(await redis.info("server"))?.[1]);
    return pid && existsSync(`/proc/${pid}/stat`) && ["127.0.0.1", "localhost", "::1"].includes(new URL(url).hostname) ? pid : undefined;
  } finally {
    redis.disconnect();
  }
}

async function deleteRedisKeys(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url);
  try {
    await deleteKeysWithPrefix(redis, prefix);
  } finally {
    redis.disconnect();
  }
}

/**
 * Token buckets: Admit over Session for keys whose requests-per-key and tokens-per-tenant
 * limits are TOKEN_BUCKET, in slices alternating with the same number of keys on fixed
 * windows (the same nine meters otherwise), on memory and Redis. A bucket decision should
 * cost at most 10 % more: the bucket row at least 0.9x the fixed-window one.
 */
export async function tokenBuckets(bench: Bench): Promise<void> {
  const section = "Token buckets (control plane)";
  const backends: Array<"memory" | "redis"> = ["memory", ...(bench.redisUrl ? ["redis" as const] : [])];
  if (!bench.redisUrl) bench.report.add({ section, scenario: "Redis rows", skipped: "REDIS_URL not set" });
  for (const backend of backends) {
    const keyPrefix = `admbench:${randomBytes(4).toString("hex")}`;
    const cp = await spawn("control-plane", { sizes: bench.sizes, ...(backend === "redis" ? { redisUrl: bench.redisUrl, redisKeyPrefix: keyPrefix } : {}) }, bench.cpuProfDir);
    const session = new ControlPlaneClient({ address: `127.0.0.1:${cp.info.grpcPort}` });
    try {
      const redisPid = backend === "redis" ? await localRedisPid(bench.redisUrl!) : undefined;
      const pids: Record<string, number> = { "control plane": cp.pid, ...(redisPid ? { redis: redisPid } : {}) };
      const keys = bucketKeyCount(bench.sizes);
      const fixed = admitRequests(keys);
      const buckets = admitRequests(keys, bucketKeyId);
      const sample = await session.admit(buckets[0]!);
      const bucketMeters = sample.meters.filter((m) => m.burst > 0n).length;
      if (!sample.allowed || sample.meters.length !== metersPerDecision || bucketMeters !== 2) {
        throw new Error(`expected an allowed decision with ${metersPerDecision} meters, 2 of them buckets; got ${sample.allowed} with ${sample.meters.length} (${bucketMeters} buckets)`);
      }
      const reservations: string[] = [sample.reservationId];
      const admitOf = (requests: AdmitRequest[]) => async (i: number) => {
        const r = await session.admit(requests[i % requests.length]!);
        if (!r.allowed) throw new Error(`denied: ${r.message}`);
        reservations.push(r.reservationId);
      };
      await closedLoop(64, bench.warmupMs, admitOf(fixed));
      await closedLoop(64, bench.warmupMs, admitOf(buckets));
      const slices = Math.max(2, Math.round(bench.durationMs / sliceMs));
      for (const c of concurrencies) {
        const [viaWindows, viaBuckets] = await alternating(c, bench.durationMs, slices, { op: admitOf(fixed), pids }, { op: admitOf(buckets), pids });
        const row = bench.report.measured(section, `Admit Session ${backend} c${c} fixed windows`, viaWindows, {
          note: `${keys} keys, ${metersPerDecision} meters per decision; ${slices} slices alternating with the row below`,
        });
        bench.report.measured(section, `Admit Session ${backend} c${c} token buckets`, viaBuckets, { versus: row, atLeast: 0.9, note: `the same, 2 of the meters token buckets` });
        await drain(reservations.splice(0), 64, async (id) => void (await session.settle(settleOf(id))));
      }
    } finally {
      session.close();
      await cp.stop();
      if (backend === "redis") await deleteRedisKeys(bench.redisUrl!, keyPrefix);
    }
  }
}

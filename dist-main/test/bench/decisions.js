/**
 * Decisions: Admit over Session and unary, Settle and ext_authz Check at
 * concurrency 1 and 64 against a control plane in its own process (in-memory
 * counters, then Redis), each row measured in slices alternating with its
 * baseline's: a bare grpc-js echo server answering the same Admit messages
 * with a real answer's bytes, and Check with a constant; Check at a fixed
 * rate; and a peer limiter (rate-limiter-flexible) on the same Redis.
 */
import { randomBytes } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import { RateLimiterRedis } from "rate-limiter-flexible";
import { ControlPlaneClient } from "../../data-plane/control-plane-client.js";
import { AdmitRequestSchema, AdmitResponseSchema, Outcome, SettleRequestSchema } from "../../gen/admission/v1/admission_pb.js";
import { Authorization, CheckRequestSchema, CheckResponseSchema } from "../../gen/envoy/service/auth/v3/external_auth_pb.js";
import { scratchDatabase } from "../support/databases.js";
import { grpcFrame, RawGrpcClient } from "../support/raw-grpc.js";
import { deleteKeysWithPrefix } from "../support/redis-keys.js";
import { secretOf } from "../support/scenario.js";
import { keyId, metersPerDecision } from "./bundle.js";
import { alternating, closedLoop, drain, latency, openLoop, withCpu } from "./load.js";
import { spawn } from "./processes.js";
const section = "Decisions (control plane)";
const concurrencies = [1, 64];
/** ext_authz Check is measured at this fixed rate against the design's p99 target. */
const checkRate = 2_000;
const checkP99TargetMs = 2;
const chatBody = JSON.stringify({ model: "m-pro", max_tokens: 500, messages: [{ role: "user", content: "Draft an independent claim for a widget with a spring-biased latch." }] });
function admitRequests(keys) {
    return Array.from({ length: keys }, (_, i) => create(AdmitRequestSchema, { credential: secretOf(keyId(i)), task: "DRAFT", model: "m-pro", inputTokens: 400n, maxOutputTokens: 500n }));
}
/** Check requests as gRPC frames, ready to send. */
function checkRequests(keys) {
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
function checkClient(address) {
    const raw = new RawGrpcClient(address);
    return {
        async check(frame) {
            const answer = await raw.call(checkPath, { body: frame, timeoutMs: 10_000 });
            if (answer.kind !== "status" || answer.grpcStatus !== 0 || !answer.messages[0])
                throw new Error(`Check failed: ${JSON.stringify(answer)}`);
            return fromBinary(CheckResponseSchema, answer.messages[0]);
        },
        close: () => raw.close(),
    };
}
const settleOf = (reservationId) => create(SettleRequestSchema, { reservationId, inputTokens: 400n, outputTokens: 310n, provider: "p1", model: "m-pro", outcome: Outcome.SUCCESS, latencyMs: 900n });
export async function decisions(bench) {
    const backends = ["memory", ...(bench.redisUrl ? ["redis"] : [])];
    if (!bench.redisUrl)
        bench.report.add({ section, scenario: "Redis rows", note: "skipped: REDIS_URL not set" });
    // The baseline server runs through every row: each subject row alternates with its baseline.
    const echo = {};
    try {
        for (const backend of backends)
            await onBackend(bench, backend, echo);
    }
    finally {
        await echo.server?.stop();
    }
}
/** Each of these rows is measured in slices alternating with its baseline's (see `alternating`). */
const sliceMs = 1_000;
async function onBackend(bench, backend, echo) {
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
    const admitVia = (client, reservations) => async (i) => {
        const r = await client.admit(admits[i % admits.length]);
        if (!r.allowed)
            throw new Error(`denied: ${r.message}`);
        reservations.push(r.reservationId);
    };
    const settleVia = (client) => async (id) => {
        const r = await client.settle(settleOf(id));
        if (r.duplicate)
            throw new Error(`settled twice: ${id}`);
    };
    const checkVia = (client) => async (i) => {
        const r = await client.check(checks[i % checks.length]);
        if (r.status?.code)
            throw new Error(`Check denied: ${r.status.message}`);
    };
    let baseline;
    try {
        // The decision is the realistic one: every meter of the plan, checked in the answer.
        const sample = await unary.admit(admits[0]);
        if (!sample.allowed || sample.meters.length < metersPerDecision)
            throw new Error(`expected an allowed decision with ${metersPerDecision} meters, got ${sample.allowed} with ${sample.meters.length}`);
        await unary.settle(settleOf(sample.reservationId));
        const note = `${sizes.tenants} tenants, ${sizes.keys} keys, ${sample.meters.length} meters per decision; bundle applied in ${(cp.info.applyMs / 1000).toFixed(1)} s`;
        report.add({ section, scenario: `control plane, ${backend} counters`, note });
        // The bare grpc-js server answers the same requests with a real answer's bytes.
        if (!echo.server) {
            const checked = await authz.check(checks[0]);
            echo.server = await spawn("echo", { response: Buffer.from(toBinary(AdmitResponseSchema, sample)).toString("base64"), check: Buffer.from(toBinary(CheckResponseSchema, checked)).toString("base64") });
        }
        baseline = baselineClients(`127.0.0.1:${echo.server.info.port}`, admits);
        const echoPids = { echo: echo.server.pid };
        const cpPids = { "control plane": cp.pid };
        const warm = [];
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
            const reservations = [];
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
        if (backend === "redis")
            await peer(bench, keyPrefix);
    }
    finally {
        baseline?.close();
        unary.close();
        session.close();
        authz.close();
        await cp.stop();
        await db?.drop();
        if (backend === "redis")
            await deleteRedisKeys(bench.redisUrl, keyPrefix);
    }
}
/** Check at the design's fixed rate, with its p99 target. */
async function checkAtFixedRate(bench, scenario, pids, check, targeted = true) {
    const rate = bench.smoke ? 200 : checkRate;
    let n = 0;
    const fixed = await withCpu(pids, () => openLoop(rate, bench.durationMs, async () => {
        const t0 = performance.now();
        await check(n++);
        return { ms: performance.now() - t0 };
    }));
    const l = latency(fixed.rows.map((r) => r.ms));
    bench.report.latencyRow(section, `${scenario} at ${rate} req/s`, { ...l, opsPerSec: fixed.opsPerSec }, {
        cpu: fixed.cpu, ...(targeted ? { target: `p99 ≤ ${checkP99TargetMs} ms at ${checkRate} req/s`, ...(rate === checkRate ? { met: l.p99 <= checkP99TargetMs && !fixed.errors } : {}) } : {}),
        note: fixed.errors ? `${fixed.errors} errors (${fixed.firstError})` : undefined,
    });
}
/**
 * Clients of the bare grpc-js server (the echo role) answering Admit (unary and
 * Session) with a real Admit answer's bytes and ext_authz Check with a constant.
 */
function baselineClients(address, admits) {
    const unary = new ControlPlaneClient({ address, unary: true });
    const stream = new ControlPlaneClient({ address });
    const authz = checkClient(address);
    return {
        unary, stream, authz,
        admitVia: (client) => (i) => client.admit(admits[i % admits.length]),
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
 * the control plane's full decision (every meter, lease, signed reservation).
 */
async function peer(bench, keyPrefix) {
    const redis = new Redis(bench.redisUrl, { enableOfflineQueue: true });
    const limiter = new RateLimiterRedis({ storeClient: redis, keyPrefix: `${keyPrefix}:rlflx`, points: 1e9, duration: 60 });
    try {
        await closedLoop(64, bench.warmupMs, (i) => limiter.consume(keyId(i % bench.sizes.keys)));
        for (const c of concurrencies) {
            const m = await withCpu({}, () => closedLoop(c, bench.durationMs, (i) => limiter.consume(keyId(i % bench.sizes.keys))));
            bench.report.measured("Peer on the same Redis", `rate-limiter-flexible c${c}`, m, { note: "one REQUESTS/minute limit per key, RateLimiterRedis, in the load process" });
            const ours = bench.report.find(`Admit Session redis c${c}`);
            if (ours?.opsPerSec) {
                bench.report.add({
                    section: "Peer on the same Redis", scenario: `Admit Session redis c${c} (full decision)`, opsPerSec: ours.opsPerSec, p50: ours.p50, p99: ours.p99, p999: ours.p999,
                    baseline: `rate-limiter-flexible c${c}`, ratio: ours.opsPerSec / m.opsPerSec, cpu: ours.cpu, note: `${metersPerDecision} meters, a lease and a signed reservation per decision`,
                });
            }
        }
    }
    finally {
        redis.disconnect();
    }
}
async function deleteRedisKeys(url, prefix) {
    const redis = new Redis(url);
    try {
        await deleteKeysWithPrefix(redis, prefix);
    }
    finally {
        redis.disconnect();
    }
}
//# sourceMappingURL=decisions.js.map
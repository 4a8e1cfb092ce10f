/**
 * The data plane against a direct call to the same mock upstream and against
 * a bare http-proxy pass-through, each server in its own process: added
 * latency at a fixed rate (this process's own open-loop client, sub-millisecond
 * timing, time to first byte for streams) and throughput at saturation
 * (autocannon).
 */
import { Agent, request } from "node:http";
import autocannon from "autocannon";
import { scratchDatabase } from "../support/databases.js";
import { secretOf } from "../support/scenario.js";
import { keyId } from "./bundle.js";
import { drain, latency, openLoop, withCpu } from "./load.js";
import { spawn } from "./processes.js";
const section = "Data plane";
const rate = 500;
/** Saturation: autocannon connections. */
const connections = 64;
const addedP50TargetMs = 1;
const addedP99TargetMs = 5;
function body(stream) {
    return JSON.stringify({
        model: "m-pro", max_tokens: 64, messages: [{ role: "user", content: "Draft a claim about a widget with a hinge" }],
        ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
    });
}
/** One POST; resolves with the time to the first body byte and to the end, in ms. */
function post(agent, port, payload, headers) {
    const t0 = performance.now();
    return new Promise((resolve, reject) => {
        const r = request({ host: "127.0.0.1", port, path: "/v1/chat/completions", method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload), ...headers } }, (res) => {
            let ttfb = 0;
            res.on("data", () => (ttfb ||= performance.now() - t0));
            res.on("end", () => (res.statusCode === 200 ? resolve({ ttfb, total: performance.now() - t0 }) : reject(new Error(`status ${res.statusCode}`))));
            res.on("error", reject);
        });
        r.on("error", reject);
        r.end(payload);
    });
}
export async function dataPlane(bench) {
    const children = [];
    const db = bench.databaseUrl ? await scratchDatabase() : undefined;
    const agent = new Agent({ keepAlive: true, maxSockets: 256 });
    try {
        const mock = await spawn("mock-upstream", {});
        children.push(mock);
        const bare = await spawn("bare-proxy", { target: `http://127.0.0.1:${mock.info.port}` });
        children.push(bare);
        const cp = await spawn("control-plane", { sizes: bench.sizes, databaseUrl: db?.url }, bench.cpuProfDir);
        children.push(cp);
        const dp = await spawn("data-plane", { controlPlaneAddr: `127.0.0.1:${cp.info.grpcPort}`, upstream: `http://127.0.0.1:${mock.info.port}/v1` }, bench.cpuProfDir);
        children.push(dp);
        const ports = { direct: mock.info.port, "bare http-proxy": bare.info.port, "data plane": dp.info.port };
        const servers = {
            direct: { upstream: mock.pid }, "bare http-proxy": { proxy: bare.pid, upstream: mock.pid }, "data plane": { "data plane": dp.pid, "control plane": cp.pid, upstream: mock.pid },
        };
        let n = 0;
        // Every request on its own key, round robin over the bundle's keys.
        const headersFor = (path) => (path === "data plane" ? { authorization: `Bearer ${secretOf(keyId(n++ % bench.sizes.keys))}`, "x-llm-task": "DRAFT" } : {});
        // Steady state, as the decision rows: every key has been seen once (its plan and meters built), as on a replica that has been serving.
        const warm = await drain(Array.from({ length: bench.sizes.keys }, (_, i) => i), connections, () => post(agent, ports["data plane"], body(false), headersFor("data plane")));
        if (warm.errors)
            throw new Error(`warming the data plane: ${warm.errors} failed requests (${warm.firstError})`);
        const fixedRate = bench.smoke ? 100 : rate;
        for (const stream of [false, true]) {
            const kind = stream ? "streaming" : "non-streaming";
            const payload = body(stream);
            const fixed = {};
            // One path after the other: run together, the three would load the two cores with 1,500 req/s and measure that instead.
            for (const path of Object.keys(ports)) {
                await openLoop(fixedRate, bench.warmupMs, () => post(agent, ports[path], payload, headersFor(path)));
                const run = await withCpu(servers[path], () => openLoop(fixedRate, bench.durationMs, () => post(agent, ports[path], payload, headersFor(path))));
                if (run.errors)
                    throw new Error(`${path} ${kind}: ${run.errors} failed requests (${run.firstError})`);
                fixed[path] = { ttfb: run.rows.map((r) => r.ttfb), total: run.rows.map((r) => r.total) };
                const ttfb = latency(fixed[path].ttfb);
                bench.report.latencyRow(section, `${path}, ${kind}, ${fixedRate} req/s`, { ...latency(fixed[path].total), opsPerSec: run.opsPerSec }, {
                    cpu: run.cpu, ...(stream ? { note: `time to first byte p50 ${ttfb.p50.toFixed(3)} / p99 ${ttfb.p99.toFixed(3)} ms` } : {}),
                });
            }
            for (const over of ["direct", "bare http-proxy"]) {
                for (const measure of stream ? ["ttfb", "total"] : ["total"]) {
                    const a = latency(fixed["data plane"][measure]);
                    const b = latency(fixed[over][measure]);
                    const added = { p50: a.p50 - b.p50, p99: a.p99 - b.p99, p999: a.p999 - b.p999 };
                    const targeted = over === "direct";
                    bench.report.latencyRow(section, `added latency over ${over}, ${kind}${stream ? measure === "ttfb" ? ", first byte" : ", total" : ""}, ${fixedRate} req/s`, added, {
                        note: "difference of percentiles",
                        ...(targeted ? { target: `at ${rate} req/s: p50 ≤ ${addedP50TargetMs} ms, p99 ≤ ${addedP99TargetMs} ms`, ...(fixedRate === rate ? { met: added.p50 <= addedP50TargetMs && added.p99 <= addedP99TargetMs } : {}) } : {}),
                    });
                }
            }
            for (const path of Object.keys(ports)) {
                let rssMaxMb = 0;
                const sampler = path === "data plane" ? setInterval(() => (rssMaxMb = Math.max(rssMaxMb, dp.rssMb())), 100) : undefined;
                const logBytesBefore = dp.logBytes();
                const result = await withCpu(servers[path], () => autocannon({
                    url: `http://127.0.0.1:${ports[path]}/v1/chat/completions`, method: "POST", connections, duration: bench.durationMs / 1000, sampleInt: 100,
                    headers: { "content-type": "application/json" }, body: payload,
                    // Like the fixed-rate rows: each request on the next key of the bundle.
                    requests: [{ setupRequest: (req) => ({ ...req, headers: { ...req.headers, ...headersFor(path) } }) }],
                }));
                clearInterval(sampler);
                const failed = result.errors + result.timeouts + result.non2xx;
                const measured = { ops: result.requests.total, opsPerSec: result.requests.total / result.duration, errors: failed, firstError: failed ? `${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts` : undefined, p50: result.latency.p50, p99: result.latency.p99, p999: result.latency.p99_9, cpu: result.cpu };
                const logged = (dp.logBytes() - logBytesBefore) / Math.max(1, result.requests.total);
                const notes = [`autocannon, ${connections} connections, ms resolution`, ...(path === "data plane" ? [`data-plane RSS max ${rssMaxMb.toFixed(0)} MB, log ${logged.toFixed(0)} bytes per request`] : [])].join("; ");
                bench.report.measured(section, `${path}, ${kind}, saturation`, measured, path === "data plane"
                    ? { versus: `bare http-proxy, ${kind}, saturation`, atLeast: 0.6, note: notes }
                    : { versus: path === "bare http-proxy" ? `direct, ${kind}, saturation` : undefined, note: notes });
            }
        }
    }
    finally {
        agent.destroy();
        for (const c of children.reverse())
            await c.stop();
        await db?.drop();
    }
}
//# sourceMappingURL=data-plane.js.map
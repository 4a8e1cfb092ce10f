/**
 * `node dist/test/data-plane/overhead.js [--rate 500] [--seconds 10] [--in-process] [--profile]`
 *
 * Not a test: measures the data plane's added latency over a direct call to
 * the same upstream, in one run. Direct and proxied requests are interleaved
 * at the same fixed rate (open loop: a slow answer does not slow the
 * schedule), each timed from request start to the last byte of the answer.
 * The control plane and the data plane each run in their own process (as
 * deployed), this process runs the load and the mock provider; --in-process
 * puts all of it in one process instead; --profile writes a CPU profile of
 * the data plane's process to the current directory.
 */
import { fork } from "node:child_process";
import { Agent, request } from "node:http";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { startControlPlane } from "../../control-plane/app.js";
import { defaultControlPlaneConfig } from "../../control-plane/config.js";
import { parseProtoJson } from "../../control-plane/policy/proto-json.js";
import { BundleSchema } from "../../gen/admission/v1/policy_pb.js";
import { defaultDataPlaneConfig } from "../../data-plane/config.js";
import { startMockProvider } from "../../data-plane/mock-provider.js";
import { startDataPlane } from "../../data-plane/server.js";
import { bundleJson, secret } from "./support/stack.js";
const arg = (name, fallback) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const role = process.argv.find((a) => a.startsWith("--role="))?.slice(7);
const silent = pino({ level: "silent" });
async function controlPlane() {
    const cp = await startControlPlane({ ...defaultControlPlaneConfig, grpcHost: "127.0.0.1", grpcPort: 0, httpPort: 0, adminToken: "overhead-admin-token-0000", dataDir: "memory://", logLevel: "silent" }, { logger: silent });
    await cp.policy.apply(parseProtoJson(BundleSchema, bundleJson([{ id: "acme", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1e15 }] }])), { dryRun: false, actor: "overhead" });
    return { grpcPort: cp.grpcPort, stop: () => cp.stop() };
}
async function dataPlane(controlPlaneAddr, upstream) {
    const dp = await startDataPlane({ ...defaultDataPlaneConfig, host: "127.0.0.1", port: 0, controlPlaneAddr, spoolDir: `${process.env.TMPDIR ?? "/tmp"}/overhead-spool-${process.pid}`, logLevel: "silent" }, {
        logger: silent, providers: [{ name: "up-a", baseUrl: upstream, apiKey: "sk-upstream" }, { name: "up-b", baseUrl: upstream, apiKey: "sk-upstream" }],
    });
    return { port: dp.port, close: () => dp.close() };
}
/** A child process playing one role; resolves with what it reports once started. */
function child(args) {
    return new Promise((resolve, reject) => {
        const p = fork(fileURLToPath(import.meta.url), args, { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv: process.argv.includes("--profile") && args[0] === "--role=dp" ? ["--cpu-prof", "--cpu-prof-dir=."] : [] });
        p.once("message", (info) => resolve({ info: info, process: p }));
        p.once("exit", (code) => reject(new Error(`${args.join(" ")} exited with ${code}`)));
    });
}
if (role === "cp") {
    const cp = await controlPlane();
    process.once("SIGTERM", () => void cp.stop().then(() => process.exit(0)));
    process.send({ grpcPort: cp.grpcPort });
}
else if (role === "dp") {
    const dp = await dataPlane(process.argv[3], process.argv[4]);
    process.once("SIGTERM", () => void dp.close().then(() => process.exit(0)));
    process.send({ port: dp.port });
}
else {
    await measure();
}
async function measure() {
    const rate = arg("rate", 500);
    const seconds = arg("seconds", 10);
    const inProcess = process.argv.includes("--in-process");
    const mock = await startMockProvider();
    const children = [];
    let proxyPort;
    let stopAll;
    if (inProcess) {
        const cp = await controlPlane();
        const dp = await dataPlane(`127.0.0.1:${cp.grpcPort}`, mock.baseUrl);
        proxyPort = dp.port;
        stopAll = async () => {
            await dp.close();
            await cp.stop();
        };
    }
    else {
        const cp = await child(["--role=cp"]);
        children.push(cp.process);
        const dp = await child(["--role=dp", `127.0.0.1:${cp.info.grpcPort}`, mock.baseUrl]);
        children.push(dp.process);
        proxyPort = dp.info.port;
        stopAll = async () => {
            for (const c of children.reverse()) {
                const exited = new Promise((resolve) => c.once("exit", resolve));
                c.kill("SIGTERM");
                await exited;
            }
        };
    }
    const agent = new Agent({ keepAlive: true, maxSockets: 512 });
    const body = JSON.stringify({ model: "gpt-a", max_tokens: 16, messages: [{ role: "user", content: "Draft a claim about a widget with a hinge" }] });
    const direct = () => post(mock.port, "/v1/chat/completions", body, {}, agent);
    const timings = { admit: [], proxy: [] };
    const proxied = () => post(proxyPort, "/v1/chat/completions", body, { authorization: `Bearer ${secret("k-acme")}`, "x-llm-task": "DRAFT" }, agent, (serverTiming) => {
        // "admit;dur=0.412, proxy;dur=0.103": the Admit round trip, and the proxy's other work before forwarding.
        for (const m of serverTiming.matchAll(/(admit|proxy);dur=([\d.]+)/g))
            timings[m[1]].push(Number(m[2]));
    });
    // Warm up both paths (connections, JIT, the Session stream).
    for (let i = 0; i < 500; i++)
        await Promise.all([direct(), proxied()]);
    const results = { direct: [], proxied: [] };
    timings.admit.length = 0;
    timings.proxy.length = 0;
    let failures = 0;
    const periodMs = 1000 / rate;
    const total = Math.round(rate * seconds);
    const started = performance.now();
    const inflight = [];
    for (let i = 0; i < total; i++) {
        const due = started + i * periodMs;
        const wait = due - performance.now();
        if (wait > 1)
            await new Promise((r) => setTimeout(r, wait));
        // The two paths get the same schedule, half a period apart.
        for (const [kind, call, offset] of [["direct", direct, 0], ["proxied", proxied, periodMs / 2]]) {
            inflight.push((async () => {
                if (offset)
                    await new Promise((r) => setTimeout(r, offset));
                const t0 = performance.now();
                try {
                    await call();
                    results[kind].push(performance.now() - t0);
                }
                catch {
                    failures++;
                }
            })());
        }
    }
    await Promise.all(inflight);
    const elapsedS = (performance.now() - started) / 1000;
    const stats = (xs) => {
        const s = [...xs].sort((a, b) => a - b);
        const q = (p) => s[Math.min(s.length - 1, Math.floor(s.length * p))] ?? NaN;
        return { n: s.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999) };
    };
    const d = stats(results.direct);
    const p = stats(results.proxied);
    const f = (x) => x.toFixed(3);
    process.stdout.write(`data plane overhead at ${rate} req/s per path for ${elapsedS.toFixed(1)} s (${inProcess ? "all in one process" : "control plane, data plane and load in separate processes"}), ${failures} failures\n\n`);
    process.stdout.write(`| path | requests | p50 ms | p90 ms | p99 ms | p99.9 ms |\n|---|---:|---:|---:|---:|---:|\n`);
    process.stdout.write(`| direct to the mock upstream | ${d.n} | ${f(d.p50)} | ${f(d.p90)} | ${f(d.p99)} | ${f(d.p999)} |\n`);
    process.stdout.write(`| through the data plane | ${p.n} | ${f(p.p50)} | ${f(p.p90)} | ${f(p.p99)} | ${f(p.p999)} |\n`);
    process.stdout.write(`| added by the data plane | | ${f(p.p50 - d.p50)} | ${f(p.p90 - d.p90)} | ${f(p.p99 - d.p99)} | ${f(p.p999 - d.p999)} |\n`);
    const a = stats(timings.admit);
    const w = stats(timings.proxy);
    process.stdout.write(`| of which the Admit round trip (Server-Timing) | | ${f(a.p50)} | ${f(a.p90)} | ${f(a.p99)} | ${f(a.p999)} |\n`);
    process.stdout.write(`| of which the proxy's other work before forwarding | | ${f(w.p50)} | ${f(w.p90)} | ${f(w.p99)} | ${f(w.p999)} |\n`);
    process.stdout.write(`\ntarget (DESIGN §7): added p50 <= 1 ms, p99 <= 5 ms at 500 req/s\n`);
    agent.destroy();
    await stopAll();
    await mock.close();
    process.exit(0);
}
function post(port, path, body, headers, agent, onTiming) {
    return new Promise((resolve, reject) => {
        const r = request({ host: "127.0.0.1", port, path, method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers } }, (res) => {
            if (onTiming && typeof res.headers["server-timing"] === "string")
                onTiming(res.headers["server-timing"]);
            res.resume();
            res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
        });
        r.on("error", reject);
        r.end(body);
    });
}
//# sourceMappingURL=overhead.js.map
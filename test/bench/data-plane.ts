/**
 * The data plane against a direct call to the same mock upstream and against
 * a bare http-proxy pass-through, each server in its own process: added
 * latency at a fixed rate (this process's own open-loop client, sub-millisecond
 * timing, time to first byte for streams) and throughput at saturation
 * (autocannon), the three paths measured in alternating slices. Saturation
 * also runs OpenAI Responses and Anthropic Messages requests through the bare
 * proxy and the data plane, in the same alternation as chat's, so their cost
 * sits beside chat's.
 */
import { Agent, request } from "node:http";
import autocannon from "autocannon";
import { scratchDatabase } from "../support/databases.js";
import { secretOf } from "../support/scenario.js";
import { benchAnthropicModel, keyId } from "./bundle.js";
import { closedLoop, drain, inAlternatingSlices, latency, openLoop } from "./load.js";
import { spawn, type Child } from "./processes.js";
import { cpuMicrosPerOp, type Bench } from "./report.js";

const section = "Data plane";
const rate = 500;
/** Saturation: autocannon connections. */
const connections = 64;
const addedP50TargetMs = 1;
const addedP99TargetMs = 5;

type Path = "direct" | "bare http-proxy" | "data plane";
/** The request shapes: Chat Completions (every row), OpenAI Responses and Anthropic Messages (saturation, bare proxy and data plane). */
type Shape = "chat" | "responses" | "messages";

const prompt = "Draft a claim about a widget with a hinge";
const shapes: Record<Shape, { path: string; body: (stream: boolean) => Record<string, unknown>; headers: Record<string, string> }> = {
  chat: {
    path: "/v1/chat/completions", headers: {},
    body: (stream) => ({ model: "m-pro", max_tokens: 64, messages: [{ role: "user", content: prompt }], ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}) }),
  },
  responses: { path: "/v1/responses", headers: {}, body: (stream) => ({ model: "m-pro", max_output_tokens: 64, input: prompt, ...(stream ? { stream: true } : {}) }) },
  messages: {
    path: "/v1/messages", headers: { "anthropic-version": "2023-06-01" },
    body: (stream) => ({ model: benchAnthropicModel, max_tokens: 64, messages: [{ role: "user", content: prompt }], ...(stream ? { stream: true } : {}) }),
  },
};

export function body(stream: boolean, shape: Shape = "chat"): string {
  return JSON.stringify(shapes[shape].body(stream));
}

/** A saturation row's name: chat's keep their names, the other shapes name themselves. */
function saturationRow(path: Path, shape: Shape, kind: string): string {
  return shape === "chat" ? `${path}, ${kind}, saturation` : `${path}, ${shape}, ${kind}, saturation`;
}

/** Each data-plane row is measured in slices of this, the three paths in turn. */
const sliceMs = 1_000;

/**
 * One autocannon run of `ms` at `connections` connections, every request on the next
 * key (`headers`): each answer's latency (autocannon's own, in ms with its µs
 * fraction) and the requests that failed.
 */
export async function saturate(port: number, shape: Shape, payload: string, ms: number, headers: () => Record<string, string>): Promise<{ latenciesMs: number[]; failed: number; firstError?: string }> {
  const latenciesMs: number[] = [];
  if (ms < 1000) {
    // autocannon ends a run on its one-second tick, however short it was asked to be: a run
    // shorter than that (--smoke) is the same load as a closed loop of POSTs instead.
    const agent = new Agent({ keepAlive: true, maxSockets: connections });
    let failed = 0;
    let firstError: string | undefined;
    await closedLoop(connections, ms, async () => {
      try {
        latenciesMs.push((await post(agent, port, payload, { ...shapes[shape].headers, ...headers() }, shapes[shape].path)).total);
      } catch (err) {
        failed++;
        firstError ??= String(err);
      }
    });
    agent.destroy();
    return { latenciesMs, failed, firstError };
  }
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const tracker = autocannon({
      url: `http://127.0.0.1:${port}${shapes[shape].path}`, method: "POST", connections, duration: ms / 1000,
      headers: { "content-type": "application/json", ...shapes[shape].headers }, body: payload,
      requests: [{ setupRequest: (req) => ({ ...req, headers: { ...req.headers, ...headers() } }) }],
    }, (err, r) => (err ? reject(err) : resolve(r)));
    tracker.on("response", (_client, status, _bytes, responseTimeMs) => {
      if (status >= 200 && status < 300) latenciesMs.push(responseTimeMs);
    });
  });
  const failed = result.errors + result.timeouts + result.non2xx;
  return { latenciesMs, failed, firstError: failed ? `${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts` : undefined };
}

/** One POST; resolves with the time to the first body byte and to the end, in ms. */
export function post(agent: Agent, port: number, payload: string, headers: Record<string, string>, path = "/v1/chat/completions"): Promise<{ ttfb: number; total: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const r = request({ host: "127.0.0.1", port, path, method: "POST", agent, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload), ...headers } }, (res) => {
      let ttfb = 0;
      res.on("data", () => (ttfb ||= performance.now() - t0));
      res.on("end", () => (res.statusCode === 200 ? resolve({ ttfb, total: performance.now() - t0 }) : reject(new Error(`status ${res.statusCode}`))));
      res.on("error", reject);
    });
    r.on("error", reject);
    r.end(payload);
  });
}

export async function dataPlane(bench: Bench): Promise<void> {
  const children: Array<Child<unknown>> = [];
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
    const ports: Record<Path, number> = { direct: mock.info.port, "bare http-proxy": bare.info.port, "data plane": dp.info.port };
    const servers: Record<Path, Record<string, number>> = {
      direct: { upstream: mock.pid }, "bare http-proxy": { proxy: bare.pid, upstream: mock.pid }, "data plane": { "data plane": dp.pid, "control plane": cp.pid, upstream: mock.pid },
    };
    let n = 0;
    // Every request on its own key, round robin over the bundle's keys.
    const headersFor = (path: Path): Record<string, string> => (path === "data plane" ? { authorization: `Bearer ${secretOf(keyId(n++ % bench.sizes.keys))}`, "x-llm-task": "DRAFT" } : {});

    // Steady state, as the decision rows: every key has been seen once (its plan and meters built), as on a replica that has been serving.
    const warm = await drain(Array.from({ length: bench.sizes.keys }, (_, i) => i), connections, () => post(agent, ports["data plane"], body(false), headersFor("data plane")));
    if (warm.errors) throw new Error(`warming the data plane: ${warm.errors} failed requests (${warm.firstError})`);

    const fixedRate = bench.smoke ? 100 : rate;
    const paths = Object.keys(ports) as Path[];
    const slices = Math.max(2, Math.round(bench.durationMs / sliceMs));
    const sliceNote = `${slices} slices of each path (and shape), alternating`;
    for (const stream of [false, true]) {
      const kind = stream ? "streaming" : "non-streaming";
      const payload = body(stream);
      // The paths in turn, a slice of each at a time: run together, the three would load the two cores with
      // 1,500 req/s and measure that; one after the other, they would see the machine at different moments.
      for (const path of paths) await openLoop(fixedRate, bench.warmupMs, () => post(agent, ports[path], payload, headersFor(path)));
      const runs = await inAlternatingSlices(bench.durationMs, slices, paths.map((path) => ({
        pids: servers[path],
        slice: (ms: number) => openLoop(fixedRate, ms, () => post(agent, ports[path], payload, headersFor(path))),
      })));
      const fixed = {} as Record<Path, { ttfb: number[]; total: number[] }>;
      for (const [i, path] of paths.entries()) {
        const run = runs[i]!;
        const rows = run.results.flatMap((r) => r.rows);
        const errors = run.results.reduce((n, r) => n + r.errors, 0);
        if (errors) throw new Error(`${path} ${kind}: ${errors} failed requests (${run.results.find((r) => r.firstError)?.firstError})`);
        fixed[path] = { ttfb: rows.map((r) => r.ttfb), total: rows.map((r) => r.total) };
        const ttfb = latency(fixed[path].ttfb);
        bench.report.latencyRow(section, `${path}, ${kind}, ${fixedRate} req/s`, { ...latency(fixed[path].total), opsPerSec: rows.length / run.seconds }, {
          cpu: run.cpu, cpuMicrosPerOp: cpuMicrosPerOp(run.cpuSeconds, rows.length),
          note: [sliceNote, ...(stream ? [`time to first byte p50 ${ttfb.p50.toFixed(3)} / p99 ${ttfb.p99.toFixed(3)} ms`] : [])].join("; "),
        });
      }
      for (const over of ["direct", "bare http-proxy"] as const) {
        for (const measure of stream ? (["ttfb", "total"] as const) : (["total"] as const)) {
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

      // Saturation, the same way: an autocannon run per slice, the subjects in turn — chat on every path,
      // Responses and Messages through the bare proxy and the data plane.
      const subjects: Array<[Shape, Path]> = [
        ...paths.map((path): [Shape, Path] => ["chat", path]),
        ...(["responses", "messages"] as const).flatMap((shape) => (["bare http-proxy", "data plane"] as const).map((path): [Shape, Path] => [shape, path])),
      ];
      let rssMaxMb = 0;
      const dpLogBytes = subjects.map(() => 0);
      const sampler = setInterval(() => (rssMaxMb = Math.max(rssMaxMb, dp.rssMb())), 100);
      const saturated = await inAlternatingSlices(bench.durationMs, slices, subjects.map(([shape, path], i) => ({
        pids: servers[path],
        slice: async (ms: number) => {
          const logBefore = dp.logBytes();
          const slice = await saturate(ports[path], shape, body(stream, shape), ms, () => headersFor(path));
          if (path === "data plane") dpLogBytes[i]! += dp.logBytes() - logBefore;
          return slice;
        },
      })));
      clearInterval(sampler);
      for (const [i, [shape, path]] of subjects.entries()) {
        const run = saturated[i]!;
        const samples = run.results.flatMap((r) => r.latenciesMs);
        const failed = run.results.reduce((n, r) => n + r.failed, 0);
        const l = latency(samples);
        const measured = {
          ops: samples.length, opsPerSec: samples.length / run.seconds, errors: failed, firstError: run.results.find((r) => r.firstError)?.firstError,
          ...l, cpu: run.cpu, cpuSeconds: run.cpuSeconds,
        };
        const chatRatio = bench.report.find(saturationRow("data plane", "chat", kind))?.ratio;
        const notes = [
          `autocannon, ${connections} connections, ${sliceNote}`,
          ...(path === "data plane" ? [`data-plane RSS max ${rssMaxMb.toFixed(0)} MB, log ${(dpLogBytes[i]! / Math.max(1, samples.length)).toFixed(0)} bytes per request`] : []),
          ...(path === "data plane" && shape !== "chat" && chatRatio !== undefined ? [`chat's ratio in the same slices: ${chatRatio.toFixed(2)}×`] : []),
        ].join("; ");
        bench.report.measured(section, saturationRow(path, shape, kind), measured, path === "data plane"
          ? { versus: saturationRow("bare http-proxy", shape, kind), ...(shape === "chat" ? { atLeast: 0.6 } : {}), note: notes }
          : { versus: path === "bare http-proxy" && shape === "chat" ? `direct, ${kind}, saturation` : undefined, note: notes });
        if (path === "data plane") bench.report.rows.at(-1)!.rssMb = rssMaxMb;
      }
    }
  } finally {
    agent.destroy();
    for (const c of children.reverse()) await c.stop();
    await db?.drop();
  }
}

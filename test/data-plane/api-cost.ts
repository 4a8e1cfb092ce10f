/**
 * What each API family costs the data plane per request, measured in
 * alternating slices (chat, Responses, Messages, the order rotated each
 * round) against the same control plane and mock provider, each in its own
 * process: CPU time per request of the data plane, the control plane and the
 * mock, read from /proc, and requests served. Run after `npm run build`:
 * `node dist/test/data-plane/api-cost.js [--rounds=6] [--slice-ms=3000]`.
 * The saturation rows of `npm run bench` measure the shapes one after the
 * other, so drift over the minutes between them shows as a difference.
 */
import { readFileSync } from "node:fs";
import autocannon from "autocannon";
import { keyId, benchAnthropicModel } from "../bench/bundle.js";
import { spawn } from "../bench/processes.js";
import { secretOf } from "../support/scenario.js";

const arg = (name: string, fallback: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
const rounds = arg("rounds", 6);
const sliceMs = arg("slice-ms", 3_000);
const sizes = { tenants: 100, keys: 1_000 };
const prompt = "Draft a claim about a widget with a hinge";
const shapes: Array<[string, string, Record<string, unknown>]> = [
  ["chat", "/v1/chat/completions", { model: "m-pro", max_tokens: 64, messages: [{ role: "user", content: prompt }] }],
  ["responses", "/v1/responses", { model: "m-pro", max_output_tokens: 64, input: prompt }],
  ["messages", "/v1/messages", { model: benchAnthropicModel, max_tokens: 64, messages: [{ role: "user", content: prompt }] }],
];

/** User + system CPU time of a process so far, in ms (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const mock = await spawn("mock-upstream", {});
const cp = await spawn("control-plane", { sizes });
const dp = await spawn("data-plane", { controlPlaneAddr: `127.0.0.1:${cp.info.grpcPort}`, upstream: `http://127.0.0.1:${mock.info.port}/v1` });
const processes = { "data plane": dp.pid, "control plane": cp.pid, mock: mock.pid };
const totals = new Map<string, { requests: number; failed: number; cpuMs: Record<string, number> }>();
let next = 0;
try {
  for (let round = 0; round < rounds; round++) {
    const order = [...shapes.slice(round % shapes.length), ...shapes.slice(0, round % shapes.length)];
    for (const [name, path, body] of order) {
      const before = Object.fromEntries(Object.entries(processes).map(([p, pid]) => [p, cpuMs(pid)]));
      const r = await autocannon({
        url: `http://127.0.0.1:${dp.info.port}${path}`, method: "POST", connections: 32, duration: sliceMs / 1000, body: JSON.stringify(body),
        headers: { "content-type": "application/json", "anthropic-version": "2023-06-01" },
        requests: [{ setupRequest: (req) => ({ ...req, headers: { ...req.headers, authorization: `Bearer ${secretOf(keyId(next++ % sizes.keys))}`, "x-llm-task": "DRAFT" } }) }],
      });
      const t = totals.get(name) ?? { requests: 0, failed: 0, cpuMs: {} };
      t.requests += r.requests.total;
      t.failed += r.non2xx + r.errors + r.timeouts;
      for (const [p, pid] of Object.entries(processes)) t.cpuMs[p] = (t.cpuMs[p] ?? 0) + cpuMs(pid) - before[p]!;
      totals.set(name, t);
    }
  }
  const chat = totals.get("chat")!;
  console.log(`| API | requests | failed | ${Object.keys(processes).map((p) => `${p} µs/request`).join(" | ")} | data plane vs chat |`);
  console.log(`|---|---:|---:|${Object.keys(processes).map(() => "---:").join("|")}|---:|`);
  for (const [name, t] of totals) {
    const per = (p: string, x: typeof t) => (x.cpuMs[p]! * 1000) / Math.max(1, x.requests);
    console.log(`| ${name} | ${t.requests} | ${t.failed} | ${Object.keys(processes).map((p) => per(p, t).toFixed(0)).join(" | ")} | ${(per("data plane", t) / per("data plane", chat)).toFixed(2)}× |`);
  }
} finally {
  for (const c of [dp, cp, mock]) await c.stop();
}

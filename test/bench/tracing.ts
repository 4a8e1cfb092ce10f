/**
 * Tracing's cost: the same work with tracing off (no OTLP endpoint: as shipped)
 * and on (exporting every span to an OTLP receiver in its own process, the
 * standard batch settings), measured in alternating slices so both see the
 * machine at the same moments. Admit over Session against two control planes
 * (one traced, one not), each call carrying a sampled client traceparent as the
 * data plane sends it; and the data plane in front of the same mock upstream, a
 * traced data plane on a traced control plane against an untraced pair, at a
 * fixed rate (latency) and at saturation (throughput). Ratios are on / off.
 */
import { Agent } from "node:http";
import { create } from "@bufbuild/protobuf";
import { ControlPlaneClient } from "../../data-plane/control-plane-client.js";
import { AdmitRequestSchema, Outcome, SettleRequestSchema } from "../../gen/admission/v1/admission_pb.js";
import { secretOf } from "../support/scenario.js";
import { keyId } from "./bundle.js";
import { body, post, saturate } from "./data-plane.js";
import { alternating, closedLoop, drain, inAlternatingSlices, latency, openLoop } from "./load.js";
import { spawn, type Child } from "./processes.js";
import { cpuMicrosPerOp, type Bench } from "./report.js";

const section = "Tracing (OpenTelemetry)";
const sliceMs = 1_000;
const rate = 500;
const connections = 64;
/** A sampled parent, as a traced data plane sends with every call. */
const parent = { traceparent: `00-${"4bf92f3577b34da6a3ce929d0e0e4736"}-${"00f067aa0ba902b7"}-01` };

type Mode = "off" | "on";

export async function tracing(bench: Bench): Promise<void> {
  const children: Array<Child<unknown>> = [];
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const clients: ControlPlaneClient[] = [];
  try {
    const receiver = await spawn("otlp-receiver", {});
    children.push(receiver);
    const otlpEndpoint = `http://127.0.0.1:${receiver.info.port}`;
    const mock = await spawn("mock-upstream", {});
    children.push(mock);
    const cps = {} as Record<Mode, Child<{ grpcPort: number; applyMs: number }>>;
    const dps = {} as Record<Mode, Child<{ port: number }>>;
    for (const mode of ["off", "on"] as const) {
      cps[mode] = await spawn("control-plane", { sizes: bench.sizes, ...(mode === "on" ? { otlpEndpoint } : {}) });
      children.push(cps[mode]);
      dps[mode] = await spawn("data-plane", {
        controlPlaneAddr: `127.0.0.1:${cps[mode].info.grpcPort}`, upstream: `http://127.0.0.1:${mock.info.port}/v1`, ...(mode === "on" ? { otlpEndpoint } : {}),
      });
      children.push(dps[mode]);
    }
    const slices = Math.max(2, Math.round(bench.durationMs / sliceMs));
    const note = `${slices} slices of each, alternating; on: every span exported to an OTLP/HTTP receiver in its own process`;

    // Admit over Session, each call with a sampled parent.
    const admits = Array.from({ length: bench.sizes.keys }, (_, i) => create(AdmitRequestSchema, { credential: secretOf(keyId(i)), task: "DRAFT", model: "m-pro", inputTokens: 400n, maxOutputTokens: 500n }));
    const sessions = {} as Record<Mode, ControlPlaneClient>;
    for (const mode of ["off", "on"] as const) {
      sessions[mode] = new ControlPlaneClient({ address: `127.0.0.1:${cps[mode].info.grpcPort}` });
      clients.push(sessions[mode]);
    }
    const reservations: Record<Mode, string[]> = { off: [], on: [] };
    const admitVia = (mode: Mode) => async (i: number) => {
      const r = await sessions[mode].admit(admits[i % admits.length]!, parent);
      if (!r.allowed) throw new Error(`denied: ${r.message}`);
      reservations[mode].push(r.reservationId);
    };
    for (const mode of ["off", "on"] as const) await closedLoop(64, bench.warmupMs, admitVia(mode));
    for (const c of [1, 64]) {
      const [off, on] = await alternating(c, bench.durationMs, slices, { op: admitVia("off"), pids: { "control plane": cps.off.pid } }, { op: admitVia("on"), pids: { "control plane": cps.on.pid } });
      const offRow = bench.report.measured(section, `Admit Session c${c}, tracing off`, off, { note });
      bench.report.measured(section, `Admit Session c${c}, tracing on`, on, { versus: offRow, note: "a span per Admit and one for its counter-store step" });
    }
    for (const mode of ["off", "on"] as const) {
      await drain(reservations[mode], 64, (id) => sessions[mode].settle(create(SettleRequestSchema, { reservationId: id, inputTokens: 400n, outputTokens: 300n, provider: "p1", model: "m-pro", outcome: Outcome.SUCCESS }), parent));
    }

    // The data plane, non-streaming chat, every request on the next key.
    let n = 0;
    const headers = () => ({ authorization: `Bearer ${secretOf(keyId(n++ % bench.sizes.keys))}`, "x-llm-task": "DRAFT" });
    const payload = body(false);
    const warm = await drain(Array.from({ length: bench.sizes.keys }, (_, i) => i), connections, async (i) => post(agent, dps[i % 2 ? "on" : "off"].info.port, payload, headers()));
    if (warm.errors) throw new Error(`warming the data planes: ${warm.errors} failed requests (${warm.firstError})`);
    const pids = (mode: Mode) => ({ "data plane": dps[mode].pid, "control plane": cps[mode].pid });
    const fixedRate = bench.smoke ? 100 : rate;
    const fixed = await inAlternatingSlices(bench.durationMs, slices, (["off", "on"] as const).map((mode) => ({
      pids: pids(mode),
      slice: (ms: number) => openLoop(fixedRate, ms, () => post(agent, dps[mode].info.port, payload, headers())),
    })));
    const p = {} as Record<Mode, ReturnType<typeof latency>>;
    for (const [i, mode] of (["off", "on"] as const).entries()) {
      const run = fixed[i]!;
      const rows = run.results.flatMap((r) => r.rows);
      const errors = run.results.reduce((k, r) => k + r.errors, 0);
      if (errors) throw new Error(`data plane, tracing ${mode}: ${errors} failed requests (${run.results.find((r) => r.firstError)?.firstError})`);
      p[mode] = latency(rows.map((r) => r.total));
      bench.report.latencyRow(section, `data plane, tracing ${mode}, ${fixedRate} req/s`, { ...p[mode], opsPerSec: rows.length / run.seconds }, {
        cpu: run.cpu, cpuMicrosPerOp: cpuMicrosPerOp(run.cpuSeconds, rows.length), note,
      });
    }
    bench.report.latencyRow(section, `added by tracing, data plane, ${fixedRate} req/s`, { p50: p.on.p50 - p.off.p50, p99: p.on.p99 - p.off.p99, p999: p.on.p999 - p.off.p999 }, {
      note: "difference of percentiles (on − off); per request: a server span, Admit, the upstream attempt and Settle on the data plane, their control-plane spans",
    });
    const saturated = await inAlternatingSlices(bench.durationMs, slices, (["off", "on"] as const).map((mode) => ({
      pids: pids(mode),
      slice: (ms: number) => saturate(dps[mode].info.port, "chat", payload, ms, headers),
    })));
    let offRow;
    for (const [i, mode] of (["off", "on"] as const).entries()) {
      const run = saturated[i]!;
      const samples = run.results.flatMap((r) => r.latenciesMs);
      const failed = run.results.reduce((k, r) => k + r.failed, 0);
      const measured = { ops: samples.length, opsPerSec: samples.length / run.seconds, errors: failed, firstError: run.results.find((r) => r.firstError)?.firstError, ...latency(samples), cpu: run.cpu, cpuSeconds: run.cpuSeconds };
      const row = bench.report.measured(section, `data plane, tracing ${mode}, saturation`, measured, { versus: offRow, note: `autocannon, ${connections} connections; ${note}` });
      offRow ??= row;
    }
  } finally {
    agent.destroy();
    for (const c of clients) c.close();
    for (const c of children.reverse()) await c.stop();
  }
}

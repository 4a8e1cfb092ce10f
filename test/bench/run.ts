/**
 * `npm run bench [-- --smoke] [-- --json[=FILE]] [-- --cpu-prof[=DIR]] [-- --only=decisions,token-buckets,data-plane,ledger,memory,webhooks,tracing]`
 *
 * Not a test: measures decisions, the data plane, the ledger and memory against
 * baselines run in the same run on the same machine, and prints one table with
 * the ratios and the design's targets (section 7). Servers run in their own
 * processes; this process generates the load. Redis rows need REDIS_URL, the
 * ledger rows DATABASE_URL (scratch databases and key prefixes, removed after).
 * --json prints the figures as JSON instead of the table (--json=FILE: both);
 * --cpu-prof writes CPU profiles of the control and data planes; --smoke runs
 * every scenario kind at tiny sizes in a few seconds (CI), and fails when a
 * scenario produced no figure.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg } from "node:os";
import { decisions, tokenBuckets } from "./decisions.js";
import { dataPlane } from "./data-plane.js";
import { missingFigures, Report, type Bench } from "./report.js";
import { ledger, memory } from "./storage.js";
import { webhooks } from "./webhooks.js";
import { tracing } from "./tracing.js";

const flag = (name: string) => process.argv.find((a) => a === `--${name}` || a.startsWith(`--${name}=`))?.split("=")[1] ?? (process.argv.includes(`--${name}`) ? "" : undefined);
const smoke = flag("smoke") !== undefined;
const json = flag("json");
const cpuProf = flag("cpu-prof");
const only = flag("only")?.split(",");
const scenarios = { decisions, "token-buckets": tokenBuckets, "data-plane": dataPlane, ledger, memory, webhooks, tracing };
for (const name of only ?? []) if (!(name in scenarios)) throw new Error(`--only: unknown scenario ${name} (${Object.keys(scenarios).join(", ")})`);

const bench: Bench = {
  report: new Report(),
  smoke,
  durationMs: smoke ? 100 : 5_000,
  warmupMs: smoke ? 50 : 1_000,
  sizes: smoke ? { tenants: 10, keys: 100 } : { tenants: 1_000, keys: 10_000 },
  redisUrl: process.env.REDIS_URL || undefined,
  databaseUrl: process.env.DATABASE_URL || undefined,
  cpuProfDir: cpuProf === undefined ? undefined : cpuProf || ".",
};
const machine = { cpus: availableParallelism(), cpuModel: cpus()[0]?.model ?? "unknown", node: process.version, loadAverageAtStart: loadavg().map((l) => Number(l.toFixed(2))) };
const cpuTimesAtStart = hostCpuTimes();
const started = performance.now();
const scenarioSeconds: Record<string, number> = {};
const noFigures: string[] = [];
for (const [name, run] of Object.entries(scenarios)) {
  if (only && !only.includes(name)) continue;
  const t0 = performance.now();
  const before = bench.report.rows.length;
  await run(bench);
  scenarioSeconds[name] = Number(((performance.now() - t0) / 1000).toFixed(1));
  noFigures.push(...missingFigures(bench.report.rows.slice(before)).map((problem) => `${name}: ${problem}`));
}
const seconds = (performance.now() - started) / 1000;
const cpuStealPercent = stealPercent(cpuTimesAtStart, hostCpuTimes());

// Smoke sizes say nothing about the targets: only that every scenario still runs.
if (smoke) for (const r of bench.report.rows) delete r.met;
const figures = { machine: { ...machine, cpuStealPercent }, smoke, durationMs: bench.durationMs, sizes: bench.sizes, runSeconds: Number(seconds.toFixed(1)), scenarioSeconds, rows: bench.report.rows };
if (json !== undefined) writeFileSync(json || "/dev/stdout", `${JSON.stringify(figures, null, 2)}\n`);
if (json !== "") {
  process.stdout.write(`${machine.cpus} CPUs (${machine.cpuModel}), Node ${machine.node}, load average at start ${machine.loadAverageAtStart.join(" ")}${cpuStealPercent === undefined ? "" : `, CPU stolen by the hypervisor during the run ${cpuStealPercent}%`}; ${(bench.durationMs / 1000).toFixed(1)} s per row; whole run ${seconds.toFixed(0)} s (${Object.entries(scenarioSeconds).map(([k, v]) => `${k} ${v.toFixed(0)} s`).join(", ")})\n\n`);
  process.stdout.write(bench.report.markdown());
  const missed = bench.report.rows.filter((r) => r.met === false);
  process.stdout.write(`\ntargets: ${bench.report.rows.filter((r) => r.met).length} met, ${missed.length} not met${missed.length ? ` (${missed.map((r) => r.scenario).join("; ")})` : ""}\n`);
}
// --smoke keeps the harness from rotting: a scenario that produced no figure fails it.
if (noFigures.length > 0) process.stderr.write(`\nscenarios without figures:\n${noFigures.map((p) => `  ${p}\n`).join("")}`);
process.exit(smoke && noFigures.length > 0 ? 1 : 0);

/** The host's CPU time counters from /proc/stat ("cpu" line), or undefined off Linux. */
function hostCpuTimes(): number[] | undefined {
  try {
    return readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  } catch {
    return undefined;
  }
}

/**
 * The share of CPU time the hypervisor gave to other guests (steal, the 8th field)
 * between two readings: on a shared VM it moves every figure, baselines included.
 */
function stealPercent(before: number[] | undefined, after: number[] | undefined): number | undefined {
  if (!before || !after || after.length < 8) return undefined;
  // user nice system idle iowait irq softirq steal; guest time is already in user.
  const total = after.slice(0, 8).reduce((sum, v, i) => sum + v - (before[i] ?? 0), 0);
  return total > 0 ? Number((((after[7]! - before[7]!) / total) * 100).toFixed(1)) : undefined;
}

import type { BenchSizes } from "./bundle.js";
import type { Latency, Measured } from "./load.js";

/** One line of the benchmark table (and of --json). Latencies in ms. */
export interface Row {
  readonly section: string;
  readonly scenario: string;
  opsPerSec?: number;
  p50?: number;
  p99?: number;
  p999?: number;
  /** Scenario this row is compared with, and this row's ops/s (or latency, see note) over it. */
  baseline?: string;
  ratio?: number;
  target?: string;
  met?: boolean;
  note?: string;
  /** CPU share of the server(s) and of the load process while the row ran, % of one core. */
  cpu?: string;
  /** CPU time per operation of each of those processes, in µs (their CPU time over the row's operations). */
  cpuMicrosPerOp?: Record<string, number>;
  /** A resident set size this row reports, in MB. */
  rssMb?: number;
  /** Why this part was not measured (a service not configured). */
  skipped?: string;
}

export class Report {
  readonly rows: Row[] = [];

  add(row: Row): Row {
    this.rows.push(row);
    return row;
  }

  /**
   * A measured row; `versus` compares ops/s with an earlier row (the row, or the first
   * of that name), `atLeast` makes that ratio a target.
   */
  measured(section: string, scenario: string, m: Measured, options: { versus?: string | Row; atLeast?: number; note?: string } = {}): Row {
    const base = typeof options.versus === "string" ? this.find(options.versus) : options.versus;
    const ratio = base?.opsPerSec ? m.opsPerSec / base.opsPerSec : undefined;
    const errors = m.errors ? `${m.errors} errors (${m.firstError})` : "";
    return this.add({
      section, scenario, opsPerSec: m.opsPerSec, p50: m.p50, p99: m.p99, p999: m.p999,
      baseline: base?.scenario, ratio, cpu: m.cpu, cpuMicrosPerOp: perOp(m),
      ...(options.atLeast !== undefined && ratio !== undefined ? { target: `≥ ${options.atLeast}× ${base!.scenario}`, met: ratio >= options.atLeast && !m.errors } : {}),
      note: [options.note, errors].filter(Boolean).join("; ") || undefined,
    });
  }

  latencyRow(section: string, scenario: string, l: Latency & { opsPerSec?: number }, extra: Partial<Row> = {}): Row {
    return this.add({ section, scenario, opsPerSec: l.opsPerSec, p50: l.p50, p99: l.p99, p999: l.p999, ...extra });
  }

  find(scenario: string): Row | undefined {
    return this.rows.find((r) => r.scenario === scenario);
  }

  markdown(): string {
    const ms = (n: number | undefined) => (n === undefined || Number.isNaN(n) ? "" : n.toFixed(n < 10 ? 3 : 1));
    const rate = (n: number | undefined) => (n === undefined ? "" : Math.round(n).toLocaleString("en-US"));
    const lines = ["| scenario | ops/s | p50 ms | p99 ms | p99.9 ms | vs baseline | target | met | CPU % of a core (µs per op) | notes |", "|---|---:|---:|---:|---:|---|---|---|---|---|"];
    let section = "";
    for (const r of this.rows) {
      if (r.section !== section) {
        section = r.section;
        lines.push(`| **${section}** | | | | | | | | | |`);
      }
      const vs = r.ratio !== undefined ? `${r.ratio.toFixed(2)}× ${r.baseline}` : "";
      const met = r.met === undefined ? "" : r.met ? "met" : "**not met**";
      const cpu = r.cpu?.replace(/([\w ]+?) (\d+%)/g, (all, name: string, share: string) => (r.cpuMicrosPerOp?.[name.trim()] === undefined ? all : `${name} ${share} (${r.cpuMicrosPerOp[name.trim()]})`));
      const note = [r.note, r.skipped ? `skipped: ${r.skipped}` : ""].filter(Boolean).join("; ");
      lines.push(`| ${r.scenario} | ${rate(r.opsPerSec)} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.p999)} | ${vs} | ${r.target ?? ""} | ${met} | ${cpu ?? ""} | ${note} |`);
    }
    return `${lines.join("\n")}\n`;
  }
}

/** µs of CPU per operation of each process that `m` has CPU seconds for (none without operations). */
function perOp(m: Measured): Record<string, number> | undefined {
  return cpuMicrosPerOp(m.cpuSeconds, m.ops);
}

/** Each process's CPU seconds over `ops` operations, in µs per operation. */
export function cpuMicrosPerOp(cpuSeconds: Readonly<Record<string, number>> | undefined, ops: number): Record<string, number> | undefined {
  if (!cpuSeconds || ops === 0) return undefined;
  return Object.fromEntries(Object.entries(cpuSeconds).map(([name, seconds]) => [name, Math.round((seconds * 1e6) / ops)]));
}

/**
 * Why a scenario's rows say nothing (for --smoke, which must fail then): no row
 * with a figure and none skipped, or a figure that is not a number.
 */
export function missingFigures(rows: readonly Row[]): string[] {
  const problems: string[] = [];
  const figures = (r: Row) => [r.opsPerSec, r.p50, r.p99, r.p999, r.rssMb].filter((v): v is number => v !== undefined);
  for (const r of rows) {
    if (figures(r).some((v) => !Number.isFinite(v))) problems.push(`${r.scenario}: a figure is not a number (${JSON.stringify(figures(r))})`);
    if (r.opsPerSec !== undefined && !(r.opsPerSec > 0)) problems.push(`${r.scenario}: no operation completed`);
  }
  if (!rows.some((r) => r.skipped || figures(r).length > 0)) problems.push("no row with a figure");
  return problems;
}

/** What every scenario gets: where to report, how long to run, the sizes and the services. */
export interface Bench {
  readonly report: Report;
  readonly smoke: boolean;
  /** Measuring time of one row, and the untimed warm-up before a server's first rows. */
  readonly durationMs: number;
  readonly warmupMs: number;
  readonly sizes: BenchSizes;
  readonly redisUrl?: string;
  /** PostgreSQL server for scratch databases (DATABASE_URL). */
  readonly databaseUrl?: string;
  /** Where child servers write --cpu-prof profiles, when profiling. */
  readonly cpuProfDir?: string;
}

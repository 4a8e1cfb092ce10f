/** Load shapes and the figures the benchmark reports. Latencies in milliseconds. */
import { readFileSync } from "node:fs";
import { openLoopSchedule } from "../support/load.js";

export interface Latency {
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
}

export interface Measured extends Latency {
  readonly ops: number;
  readonly opsPerSec: number;
  readonly errors: number;
  /** First error seen, for the note. */
  readonly firstError?: string;
  /** CPU share of the processes involved while it ran (withCpu). */
  readonly cpu?: string;
  /** CPU seconds each of those processes used meanwhile (`load`: this one). */
  readonly cpuSeconds?: Readonly<Record<string, number>>;
}

export function latency(samples: number[]): Latency {
  const s = Float64Array.from(samples).sort();
  const q = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))]! : Number.NaN);
  return { p50: q(0.5), p99: q(0.99), p999: q(0.999) };
}

/** Closed loop: `concurrency` workers each run `op` back to back for `durationMs`. */
export function closedLoop(concurrency: number, durationMs: number, op: (i: number) => Promise<unknown>): Promise<Measured> {
  let i = 0;
  return workers(concurrency, durationMs, () => {
    const n = i++;
    return () => op(n);
  });
}

/**
 * Runs `op` once per item from `concurrency` workers until all are done, or
 * until `durationMs` has passed; returns the figures and the items not run.
 */
export async function drain<T>(items: readonly T[], concurrency: number, op: (item: T) => Promise<unknown>, durationMs = Infinity): Promise<Measured & { left: T[] }> {
  let next = 0;
  const measured = await workers(concurrency, durationMs, () => {
    if (next >= items.length) return undefined;
    const item = items[next++]!;
    return () => op(item);
  });
  return { ...measured, left: items.slice(next) };
}

/** A side of an alternating measurement: its operation and the server processes whose CPU it reports. */
export interface Side {
  readonly op: (i: number) => Promise<unknown>;
  readonly pids: Record<string, number>;
}

/** One side of `inAlternatingSlices`: the processes whose CPU it reports, and how to run one slice of its work. */
export interface Sliced<R> {
  readonly pids: Record<string, number>;
  slice(ms: number): Promise<R>;
}

/** What one side did over all its slices. */
export interface SlicedRun<R> {
  readonly results: R[];
  /** Wall time of its slices together. */
  readonly seconds: number;
  readonly cpu: string;
  readonly cpuSeconds: Record<string, number>;
}

/**
 * Runs the sides' slices in turn (a, b, c, a, b, c, ...), `slices` of each, of
 * durationMs / slices each: on a shared machine whose speed drifts over
 * minutes, a baseline measured minutes before its subject skews their ratio,
 * while alternating slices see the same drift. Each side's CPU is read
 * around its own slices only.
 */
export async function inAlternatingSlices<R>(durationMs: number, slices: number, sides: readonly Sliced<R>[]): Promise<SlicedRun<R>[]> {
  const runs = sides.map(() => ({ results: [] as R[], seconds: 0, cpu: new Map<string, number>() }));
  for (let k = 0; k < slices; k++) {
    for (const [i, side] of sides.entries()) {
      const run = runs[i]!;
      const used = cpuSince(side.pids);
      const t0 = performance.now();
      run.results.push(await side.slice(durationMs / slices));
      run.seconds += (performance.now() - t0) / 1000;
      for (const [name, seconds] of used()) run.cpu.set(name, (run.cpu.get(name) ?? 0) + seconds);
    }
  }
  return runs.map((r) => ({ results: r.results, seconds: r.seconds, cpu: cpuShares(r.cpu, r.seconds), cpuSeconds: Object.fromEntries(r.cpu) }));
}

/** Closed loops of each side at the same concurrency, in alternating slices (see inAlternatingSlices). */
export async function alternating(concurrency: number, durationMs: number, slices: number, ...sides: Side[]): Promise<Array<Measured & { cpu: string }>> {
  const runs = await inAlternatingSlices(durationMs, slices, sides.map((side) => {
    const tally = newTally();
    let next = 0;
    return {
      pids: side.pids,
      slice: async (ms: number) => {
        await run(concurrency, ms, () => {
          const n = next++;
          return () => side.op(n);
        }, tally);
        return tally;
      },
    };
  }));
  return runs.map((r) => ({ ...measuredOf(r.results[0] ?? newTally(), r.seconds), cpu: r.cpu, cpuSeconds: r.cpuSeconds }));
}

interface Tally {
  readonly samples: number[];
  errors: number;
  firstError?: string;
}

const newTally = (): Tally => ({ samples: [], errors: 0 });

function measuredOf(t: Tally, seconds: number): Measured {
  return { ops: t.samples.length, opsPerSec: t.samples.length / seconds, errors: t.errors, firstError: t.firstError, ...latency(t.samples) };
}

/** `concurrency` workers each take the next call and time it, until there is none or `durationMs` has passed. */
async function workers(concurrency: number, durationMs: number, take: () => (() => Promise<unknown>) | undefined): Promise<Measured> {
  const tally = newTally();
  const started = performance.now();
  await run(concurrency, durationMs, take, tally);
  return measuredOf(tally, (performance.now() - started) / 1000);
}

async function run(concurrency: number, durationMs: number, take: () => (() => Promise<unknown>) | undefined, tally: Tally): Promise<void> {
  const end = performance.now() + durationMs;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    for (let call = performance.now() < end ? take() : undefined; call; call = performance.now() < end ? take() : undefined) {
      const t0 = performance.now();
      try {
        await call();
        tally.samples.push(performance.now() - t0);
      } catch (err) {
        tally.errors++;
        tally.firstError ??= String(err);
      }
    }
  }));
}

/**
 * Open loop: starts `op` at a fixed rate for `durationMs` whatever the answers
 * do (a slow answer does not slow the schedule), so latencies include queueing.
 * `op` returns its own samples (e.g. time to first byte and total) or nothing.
 */
export async function openLoop<K extends string>(rate: number, durationMs: number, op: () => Promise<Record<K, number>>): Promise<{ rows: Record<K, number>[]; errors: number; firstError?: string; opsPerSec: number }> {
  const rows: Record<K, number>[] = [];
  const inflight: Promise<void>[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const started = performance.now();
  const fire = () => {
    inflight.push(op().then((r) => void rows.push(r), (err) => {
      errors++;
      firstError ??= String(err);
    }));
  };
  await openLoopSchedule(rate, fire, Math.round((rate * durationMs) / 1000)).finished;
  await Promise.all(inflight);
  return { rows, errors, firstError, opsPerSec: rows.length / ((performance.now() - started) / 1000) };
}

/** CPU time of a process so far, in seconds (from /proc; this process via cpuUsage). */
function cpuSeconds(pid: number): number {
  if (pid === process.pid) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  }
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}
const clockTicks = 100;

/**
 * Runs `work` and returns its result with the CPU share each process used
 * meanwhile, in % of one core: on a shared machine this shows whether the
 * server under test was saturated or starved.
 */
export async function withCpu<T>(pids: Record<string, number>, work: () => Promise<T>): Promise<T & { cpu: string; cpuSeconds: Record<string, number> }> {
  const used = cpuSince(pids);
  const t0 = performance.now();
  const result = await work();
  const cpu = used();
  return { ...result, cpu: cpuShares(cpu, (performance.now() - t0) / 1000), cpuSeconds: Object.fromEntries(cpu) };
}

/** A reading of the CPU seconds each process (and this one, as `load`) has used since the call. */
function cpuSince(pids: Record<string, number>): () => Map<string, number> {
  const all = Object.entries({ ...pids, load: process.pid });
  const before = all.map(([, pid]) => cpuSeconds(pid));
  return () => new Map(all.map(([name, pid], i) => [name, cpuSeconds(pid) - before[i]!]));
}

/** CPU seconds over `seconds` of wall time as each process's share of one core: "echo 45%, load 60%". */
function cpuShares(used: ReadonlyMap<string, number>, seconds: number): string {
  return [...used].map(([name, cpu]) => `${name} ${Math.round((100 * cpu) / seconds)}%`).join(", ");
}

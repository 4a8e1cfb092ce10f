/** Load shapes and the figures the benchmark reports. Latencies in milliseconds. */
import { readFileSync } from "node:fs";
import { openLoopSchedule } from "../support/load.js";
export function latency(samples) {
    const s = Float64Array.from(samples).sort();
    const q = (p) => (s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))] : Number.NaN);
    return { p50: q(0.5), p99: q(0.99), p999: q(0.999) };
}
/** Closed loop: `concurrency` workers each run `op` back to back for `durationMs`. */
export function closedLoop(concurrency, durationMs, op) {
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
export async function drain(items, concurrency, op, durationMs = Infinity) {
    let next = 0;
    const measured = await workers(concurrency, durationMs, () => {
        if (next >= items.length)
            return undefined;
        const item = items[next++];
        return () => op(item);
    });
    return { ...measured, left: items.slice(next) };
}
/**
 * Closed loops of `a` and `b` at the same concurrency, in `slices` alternating
 * slices (a, b, a, b, ...) of durationMs / slices each: on a shared machine
 * whose speed drifts over minutes, a baseline measured minutes before its
 * subject skews their ratio, while alternating slices see the same drift.
 */
export async function alternating(concurrency, durationMs, slices, a, b) {
    const sides = [a, b].map((side) => ({ side, tally: newTally(), cpu: new Map(), seconds: 0, next: 0 }));
    for (let k = 0; k < slices; k++) {
        for (const s of sides) {
            const used = cpuSince(s.side.pids);
            const t0 = performance.now();
            await run(concurrency, durationMs / slices, () => {
                const n = s.next++;
                return () => s.side.op(n);
            }, s.tally);
            s.seconds += (performance.now() - t0) / 1000;
            for (const [name, seconds] of used())
                s.cpu.set(name, (s.cpu.get(name) ?? 0) + seconds);
        }
    }
    const [x, y] = sides.map((s) => ({ ...measuredOf(s.tally, s.seconds), cpu: cpuShares(s.cpu, s.seconds) }));
    return [x, y];
}
const newTally = () => ({ samples: [], errors: 0 });
function measuredOf(t, seconds) {
    return { ops: t.samples.length, opsPerSec: t.samples.length / seconds, errors: t.errors, firstError: t.firstError, ...latency(t.samples) };
}
/** `concurrency` workers each take the next call and time it, until there is none or `durationMs` has passed. */
async function workers(concurrency, durationMs, take) {
    const tally = newTally();
    const started = performance.now();
    await run(concurrency, durationMs, take, tally);
    return measuredOf(tally, (performance.now() - started) / 1000);
}
async function run(concurrency, durationMs, take, tally) {
    const end = performance.now() + durationMs;
    await Promise.all(Array.from({ length: concurrency }, async () => {
        for (let call = performance.now() < end ? take() : undefined; call; call = performance.now() < end ? take() : undefined) {
            const t0 = performance.now();
            try {
                await call();
                tally.samples.push(performance.now() - t0);
            }
            catch (err) {
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
export async function openLoop(rate, durationMs, op) {
    const rows = [];
    const inflight = [];
    let errors = 0;
    let firstError;
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
function cpuSeconds(pid) {
    if (pid === process.pid) {
        const u = process.cpuUsage();
        return (u.user + u.system) / 1e6;
    }
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}
const clockTicks = 100;
/**
 * Runs `work` and returns its result with the CPU share each process used
 * meanwhile, in % of one core: on a shared machine this shows whether the
 * server under test was saturated or starved.
 */
export async function withCpu(pids, work) {
    const used = cpuSince(pids);
    const t0 = performance.now();
    const result = await work();
    return { ...result, cpu: cpuShares(used(), (performance.now() - t0) / 1000) };
}
/** A reading of the CPU seconds each process (and this one, as `load`) has used since the call. */
function cpuSince(pids) {
    const all = Object.entries({ ...pids, load: process.pid });
    const before = all.map(([, pid]) => cpuSeconds(pid));
    return () => new Map(all.map(([name, pid], i) => [name, cpuSeconds(pid) - before[i]]));
}
/** CPU seconds over `seconds` of wall time as each process's share of one core: "echo 45%, load 60%". */
function cpuShares(used, seconds) {
    return [...used].map(([name, cpu]) => `${name} ${Math.round((100 * cpu) / seconds)}%`).join(", ");
}
//# sourceMappingURL=load.js.map
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import { UsageGroupBy, type UsageRow, type UsageTotals } from "../../../../gen/admission/v1/policy_service_pb.js";
import type { Api } from "../api.js";
import { ErrorNote, Money, Num, Section, useLoad } from "../components.js";
import { count, localDateTime, usd, usdExact, utcIso } from "../format.js";

type Period = "month" | "24h" | "7d" | "30d";
type Bucket = "day" | "hour";
type By = "model" | "task" | "user";
type Metric = "cost" | "tokens" | "requests";

const byGroup: Record<By, UsageGroupBy> = { model: UsageGroupBy.MODEL, task: UsageGroupBy.TASK, user: UsageGroupBy.USER };
const hourMs = 3_600_000;
const dayMs = 86_400_000;

/** The period's start (aligned to its buckets, UTC). */
function periodStart(period: Period, bucket: Bucket, nowMs: number): number {
  if (period === "month") {
    const d = new Date(nowMs);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
  }
  const span = period === "24h" ? dayMs : period === "7d" ? 7 * dayMs : 30 * dayMs;
  const size = bucket === "hour" ? hourMs : dayMs;
  return Math.floor((nowMs - span) / size) * size + size;
}

/** A bucket's start from GetUsage's group value ("2026-03-10" or "2026-03-10T09:00:00Z"). */
function bucketMs(value: string): number {
  return Date.parse(value.length === 10 ? `${value}T00:00:00Z` : value);
}

function metricOf(t: UsageTotals | undefined, metric: Metric): number {
  if (!t) return 0;
  return metric === "cost" ? Number(t.costMicros) / 1_000_000 : metric === "tokens" ? Number(t.inputTokens + t.outputTokens) : Number(t.requests);
}

/** Told apart by dash and marker as well as by colour. */
const palette = ["#1f5fbf", "#c0392b", "#1e8449", "#8e44ad", "#b9770e", "#117a8b", "#566573", "#d35400"];
const dashes: number[][] = [[], [8, 4], [2, 3], [12, 3, 2, 3], [4, 4], [1, 5], [10, 6], [6, 2, 2, 2]];

/** Usage over time from the ledger (GetUsage by day or hour and by model, task or user), as a chart and as tables. */
export function UsagePanel({ api, tenant, deps }: { api: Api; tenant: string; deps: unknown[] }) {
  const [period, setPeriod] = useState<Period>("month");
  const [bucket, setBucket] = useState<Bucket>("day");
  const [by, setBy] = useState<By>("model");
  const [metric, setMetric] = useState<Metric>("cost");
  const [nowMs, setNowMs] = useState(() => Date.now());
  const startMs = periodStart(period, bucket, nowMs);
  const query = { tenant, start: timestampFromMs(startMs), end: timestampFromMs(nowMs + 1) };
  const series = useLoad(() => api.policy.getUsage({ ...query, groupBy: [bucket === "day" ? UsageGroupBy.DAY : UsageGroupBy.HOUR, byGroup[by]] }), [...deps, tenant, startMs, nowMs, bucket, by]);
  const totals = useLoad(() => api.policy.getUsage({ ...query, groupBy: [byGroup[by]] }), [...deps, tenant, startMs, nowMs, by]);

  return (
    <Section id="usage" title="Usage over time" actions={<button type="button" onClick={() => setNowMs(Date.now())}>Refresh</button>}>
      <div class="row controls">
        <label>Period <select value={period} onChange={(e) => setPeriod(e.currentTarget.value as Period)}>
          <option value="month">this month (UTC)</option><option value="24h">last 24 hours</option><option value="7d">last 7 days</option><option value="30d">last 30 days</option>
        </select></label>
        <label>Buckets <select value={bucket} onChange={(e) => setBucket(e.currentTarget.value as Bucket)}>
          <option value="day">day by day</option><option value="hour">hour by hour</option>
        </select></label>
        <label>By <select value={by} onChange={(e) => setBy(e.currentTarget.value as By)}>
          <option value="model">model</option><option value="task">task</option><option value="user">user</option>
        </select></label>
        <label>Show <select value={metric} onChange={(e) => setMetric(e.currentTarget.value as Metric)}>
          <option value="cost">cost (USD)</option><option value="tokens">tokens (input + output)</option><option value="requests">requests</option>
        </select></label>
      </div>
      <ErrorNote error={series.error ?? totals.error} />
      {series.data && <UsageChart rows={series.data.rows} by={by} bucket={bucket} metric={metric} startMs={startMs} endMs={nowMs} />}
      {totals.data && (
        <div class="scroll">
          <table class="usage" id="usage-table">
            <caption>By {by}, from {localDateTime(startMs)} to now (the ledger, as GetUsage answers it)</caption>
            <thead>
              <tr><th scope="col">{by}</th><th scope="col" class="num">Requests</th><th scope="col" class="num">Input tokens</th><th scope="col" class="num">Cache reads</th><th scope="col" class="num">Cache writes</th><th scope="col" class="num">Output tokens</th><th scope="col" class="num">Reasoning</th><th scope="col" class="num">Cost</th></tr>
            </thead>
            <tbody>
              {totals.data.rows.map((r) => <TotalsRow key={r.group[by]} label={r.group[by] || "(none)"} t={r.totals} />)}
            </tbody>
            <tfoot>
              <TotalsRow label="Total" t={totals.data} />
            </tfoot>
          </table>
        </div>
      )}
    </Section>
  );
}

function TotalsRow({ label, t }: { label: string; t: Omit<UsageTotals, "$typeName" | "$unknown"> | undefined }) {
  if (!t) return null;
  return (
    <tr data-group={label}>
      <th scope="row">{label}</th>
      <td class="num" data-field="requests"><Num value={t.requests} /></td>
      <td class="num" data-field="inputTokens"><Num value={t.inputTokens} /></td>
      <td class="num" data-field="cacheReadTokens"><Num value={t.cacheReadTokens} /></td>
      <td class="num" data-field="cacheWriteTokens"><Num value={t.cacheWriteTokens} /></td>
      <td class="num" data-field="outputTokens"><Num value={t.outputTokens} /></td>
      <td class="num" data-field="reasoningTokens"><Num value={t.reasoningTokens} /></td>
      <td class="num" data-field="costMicros"><Money micros={t.costMicros} /></td>
    </tr>
  );
}

/** The rows as one series per group over every bucket of the period (empty buckets are 0), drawn by uPlot, with the figures in a table too. */
function UsageChart({ rows, by, bucket, metric, startMs, endMs }: { rows: readonly UsageRow[]; by: By; bucket: Bucket; metric: Metric; startMs: number; endMs: number }) {
  const box = useRef<HTMLDivElement>(null);
  const size = bucket === "hour" ? hourMs : dayMs;
  const buckets: number[] = [];
  for (let t = startMs; t <= endMs; t += size) buckets.push(t);
  const groups = [...new Set(rows.map((r) => r.group[by] ?? ""))];
  const values = groups.map((g) => buckets.map((b) => metricOf(rows.find((r) => r.group[by] === g && bucketMs(r.group[bucket] ?? "") === b)?.totals, metric)));
  const fmt = (v: number) => (metric === "cost" ? usd(Math.round(v * 1_000_000)) : count(Math.round(v)));

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const plot = new uPlot({
      width: Math.max(320, el.clientWidth),
      height: 260,
      scales: { x: { time: true } },
      series: [
        { label: bucket === "hour" ? "hour" : "day", value: (_u: uPlot, v: number | null) => (v === null ? "" : localDateTime(v * 1000)) },
        ...groups.map((g, i) => ({
          label: g || "(none)", stroke: palette[i % palette.length], width: 2, dash: dashes[i % dashes.length],
          points: { show: true, size: 7, fill: palette[i % palette.length] }, value: (_u: uPlot, v: number | null) => (v === null ? "" : fmt(v)),
        })),
      ],
      // Ticks of small amounts need more than cents to tell apart.
      axes: [{}, { values: (_u: uPlot, ticks: number[]) => ticks.map((v) => (metric === "cost" ? usdExact(Math.round(v * 1_000_000)) : count(v))), size: 80 }],
    }, [buckets.map((b) => b / 1000), ...values], el);
    return () => plot.destroy();
  }, [JSON.stringify([buckets, values, groups, metric])]);

  const title = `${metric} by ${by}, ${bucket} by ${bucket}`;
  return (
    <figure class="chart">
      <div ref={box} role="img" aria-label={`Chart of ${title}; the same figures are in the table below it`} />
      <details>
        <summary>The chart's figures ({title})</summary>
        <div class="scroll">
          <table class="series">
            <thead><tr><th scope="col">{bucket}</th>{groups.map((g) => <th scope="col" key={g} class="num">{g || "(none)"}</th>)}</tr></thead>
            <tbody>
              {buckets.map((b, i) => (
                <tr key={b}><th scope="row"><time dateTime={utcIso(b)} title={`UTC: ${utcIso(b)}`}>{localDateTime(b)}</time></th>{values.map((v, j) => <td class="num" key={j}>{fmt(v[i]!)}</td>)}</tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </figure>
  );
}

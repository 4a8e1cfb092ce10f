import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { EffectiveLimit, Meter } from "../../../gen/admission/v1/admission_pb.js";
import { LimitKind, LimitSource, Mode, Per, Window } from "../../../gen/admission/v1/policy_pb.js";
import { errorText } from "./api.js";
import { count, duration, limitLabel, localDateTime, meterAmount, usd, usdExact, utcIso } from "./format.js";

/** A time in the viewer's zone; UTC on hover. */
export function Time({ ms }: { ms: number | undefined }) {
  if (ms === undefined || ms === 0) return <span>—</span>;
  const iso = utcIso(ms);
  return <time dateTime={iso} title={`UTC: ${iso}`}>{localDateTime(ms)}</time>;
}

/** Dollars with cents; the exact micro-USD on hover. */
export function Money({ micros }: { micros: bigint | number }) {
  return <span class="num" title={`${usdExact(micros)} (${count(micros)} micro-USD)`}>{usd(micros)}</span>;
}

export function Num({ value }: { value: bigint | number }) {
  return <span class="num">{count(value)}</span>;
}

/** How full a meter is, in words as well as in its bar: "ok", "near limit", "at limit", "over limit". */
export function fillWord(used: bigint, limit: bigint): string {
  if (limit <= 0n) return used > 0n ? "over limit" : "blocked";
  if (used > limit) return "over limit";
  if (used === limit) return "at limit";
  return used * 10n >= limit * 8n ? "near limit" : "ok";
}

/** A used/limit bar (a native meter, so assistive technology reads it) with the numbers and a word. */
export function MeterBar({ kind, used, limit, label }: { kind: LimitKind; used: bigint; limit: bigint; label: string }) {
  const pct = limit > 0n ? Math.floor((Number(used) * 100) / Number(limit)) : used > 0n ? 100 : 0;
  const word = fillWord(used, limit);
  return (
    <span class={`meter meter-${word.replace(/ /g, "-")}`}>
      <meter min={0} max={Math.max(Number(limit), 1)} value={Math.min(Number(used), Math.max(Number(limit), 1))} low={Number(limit) * 0.8} high={Number(limit) * 0.999} optimum={0} aria-label={`${label}: ${pct}% used`} />
      <span class="meter-text">
        {meterAmount(kind, used)} / {meterAmount(kind, limit)} <strong>{pct}%</strong> {word !== "ok" && <em>({word})</em>}
      </span>
    </span>
  );
}

export function ErrorNote({ error, what }: { error: unknown; what?: string }) {
  if (!error) return null;
  return <p class="error" role="alert">{what ? `${what}: ` : ""}{errorText(error)}</p>;
}

export function Section({ title, id, children, actions }: { title: string; id: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section aria-labelledby={`${id}-title`} class="panel" id={id}>
      <header class="panel-head">
        <h2 id={`${id}-title`}>{title}</h2>
        {actions}
      </header>
      {children}
    </section>
  );
}

/** Loads with `load` whenever a dependency changes; the last answer, its error and a reload. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { data: T | undefined; error: unknown; loading: boolean; reload: () => void } {
  const [state, setState] = useState<{ data: T | undefined; error: unknown; loading: boolean }>({ data: undefined, error: undefined, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, error: undefined, loading: false }),
      (error: unknown) => live && setState((s) => ({ data: s.data, error, loading: false })),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

export const sourceName = (s: LimitSource) => (s === LimitSource.UNSPECIFIED ? "" : LimitSource[s]!.toLowerCase());
export const perName = (p: Per) => (p === Per.UNSPECIFIED ? "" : Per[p]!.toLowerCase());
export const modeName = (m: Mode) => (m === Mode.UNSPECIFIED ? "inherit" : Mode[m]!.toLowerCase());

/** Every limit that applies, where it comes from (plan, tenant, user) and its live meter. */
export function LimitsTable({ limits, caption }: { limits: readonly EffectiveLimit[]; caption: string }) {
  return (
    <table class="limits">
      <caption>{caption}</caption>
      <thead>
        <tr><th scope="col">Limit</th><th scope="col">Per</th><th scope="col">Subject</th><th scope="col">From</th><th scope="col">Mode</th><th scope="col">Meter</th><th scope="col">Resets</th></tr>
      </thead>
      <tbody>
        {limits.map((l) => {
          const label = limitLabel(l);
          const metered = l.window !== Window.REQUEST && l.value >= 0n;
          return (
            <tr key={`${l.kind}-${l.window}-${l.per}-${l.task}`}>
              <th scope="row">{label}</th>
              <td>{l.window === Window.REQUEST ? "request" : perName(l.per)}</td>
              <td>{l.subject || (metered && l.per !== Per.TENANT ? <span class="muted">each {perName(l.per)}</span> : "—")}</td>
              <td>
                <span class={`source source-${sourceName(l.source)}`}>{sourceName(l.source)}</span>
                {l.overrides.length > 0 && <span class="overrides"> overrides {l.overrides.map((o) => o.toLowerCase()).join(", ")}</span>}
              </td>
              <td>{modeName(l.mode)}</td>
              <td>
                {l.value < 0n ? <span>lifted (no limit)</span>
                  : metered && !l.subject ? <span>{meterAmount(l.kind, l.value)} <span class="muted">(choose a {perName(l.per)} above to see its meter)</span></span>
                  : metered ? <MeterBar kind={l.kind} used={l.used} limit={l.value} label={label} />
                  : <span>cap {meterAmount(l.kind, l.value)} per request</span>}
              </td>
              <td>{metered && l.subject && l.resetMs > 0n ? <ResetAt resetMs={Number(l.resetMs)} /> : "—"}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/** When a window resets: its local time (UTC on hover) and how long until then. */
export function ResetAt({ resetMs }: { resetMs: number }) {
  const at = Math.round((Date.now() + resetMs) / 1000) * 1000;
  return <span><Time ms={at} /> <span class="muted">(in {duration(resetMs)})</span></span>;
}

/** A meter of a decision or an overview: label, subject, bar. */
export function MeterLine({ m }: { m: Meter }) {
  const label = `${limitLabel(m)} · ${perName(m.per)} ${m.subject}`;
  return (
    <span class="meter-line">
      <span class="meter-label">{label}</span>
      <MeterBar kind={m.kind} used={m.used} limit={m.limit} label={label} />
    </span>
  );
}

export function kindOptions(kinds: readonly LimitKind[]) {
  return kinds.map((k) => <option value={k} key={k}>{LimitKind[k]}</option>);
}

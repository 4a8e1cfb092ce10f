import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { LimitKind, Window } from "../../../gen/admission/v1/policy_pb.js";

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const dollars = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });
const exactDollars = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 6 });
const localTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** A count with the viewer's digit grouping: 1,234,567. */
export function count(n: bigint | number): string {
  return integer.format(n);
}

/** micro-USD as dollars with cents; an amount that would round to nothing reads "< $0.01", not "$0.00". */
export function usd(micros: bigint | number): string {
  const n = Number(micros);
  if (n > 0 && n < 5_000) return `< ${dollars.format(0.01)}`;
  return dollars.format(n / 1_000_000);
}

/**
 * Dollars typed by a person ("25", "1,000.50", "-3.2") as micro-USD, exactly (no float
 * rounding: the digits are moved, not multiplied); undefined when it is not an amount.
 */
export function parseUsd(text: string): bigint | undefined {
  const m = /^\s*(-)?\$?\s*(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,6}))?\s*$/.exec(text);
  if (!m) return undefined;
  const micros = BigInt(m[2]!.replace(/,/g, "")) * 1_000_000n + BigInt((m[3] ?? "").padEnd(6, "0"));
  return m[1] ? -micros : micros;
}

/** micro-USD exactly, for a title: "$0.012345". */
export function usdExact(micros: bigint | number): string {
  return exactDollars.format(Number(micros) / 1_000_000);
}

/** A price per million tokens (stored in micro-USD per million). */
export function pricePerMtok(micros: bigint | number | undefined): string {
  return micros === undefined ? "—" : `${usdExact(micros)} / M`;
}

export function localDateTime(ms: number): string {
  return localTime.format(ms);
}

export function utcIso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function tsMs(ts: Timestamp | undefined): number | undefined {
  return ts ? timestampMs(ts) : undefined;
}

/** A duration until something, in words: "3 h 12 min", "45 s". */
export function duration(ms: number): string {
  if (ms <= 0) return "now";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ${min % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** An enum value without its prefix, e.g. "TOKENS". */
export function kindName(kind: LimitKind): string {
  return LimitKind[kind] ?? String(kind);
}

export function windowName(window: Window): string {
  return window === Window.UNSPECIFIED ? "" : (Window[window] ?? String(window));
}

/** How a meter's amounts read: money for budgets and credits, counts otherwise. */
export function meterAmount(kind: LimitKind, n: bigint | number): string {
  return kind === LimitKind.BUDGET_MICROS || kind === LimitKind.CREDITS_MICROS ? usd(n) : count(n);
}

/** "TOKENS / DAY", "CONCURRENCY", "REQUESTS / MINUTE · DRAFT". */
export function limitLabel(l: { kind: LimitKind; window: Window; task: string }): string {
  const w = windowName(l.window);
  return `${kindName(l.kind)}${w ? ` / ${w}` : ""}${l.task ? ` · ${l.task}` : ""}`;
}

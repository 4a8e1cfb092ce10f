import type { Model } from "../gen/admission/v1/policy_pb.js";
import { LimitAlgorithm, LimitKind, Mode, Per, Window } from "../gen/admission/v1/policy_pb.js";
import type { MeterOp, MeterUnit } from "./counter-store.js";
import type { EffectiveLimit } from "./policy/policy-snapshot.js";
import { bucketKeySuffix, meterBucket, type MeterBucket } from "./token-bucket.js";
import { windowSpan } from "./windows.js";

/** The subject a request is metered as. */
export interface MeterSubject {
  readonly tenant: string;
  readonly user: string;
  readonly keyId: string;
}

/** A metered limit bound to its subject and current window. */
export interface BoundMeter {
  readonly limit: EffectiveLimit;
  /** limit.value as the int64 decisions report it. */
  readonly limitBig: bigint;
  readonly key: string;
  readonly unit: MeterUnit;
  readonly subject: string;
  /** Window end (0 for concurrency, credits and token buckets). */
  readonly resetAtMs: number;
  readonly expiresAtMs: number;
  /** Whether reaching the limit denies (ENFORCE and not lifted). */
  readonly enforce: boolean;
  /** Set for a TOKEN_BUCKET limit: the meter is a bucket, not a window (see token-bucket.ts). */
  readonly bucket?: MeterBucket;
}

const unitOf: Partial<Record<LimitKind, MeterUnit>> = {
  [LimitKind.REQUESTS]: "requests",
  [LimitKind.TOKENS]: "tokens",
  [LimitKind.BUDGET_MICROS]: "cost",
  [LimitKind.CONCURRENCY]: "concurrency",
  // A prepaid tenant's credits: spent + reserved - granted, a cost meter that never resets (see credit-balances.ts).
  [LimitKind.CREDITS_MICROS]: "cost",
};

/** Kinds whose meter has no window: one key for good. */
function isWindowless(kind: LimitKind): boolean {
  return kind === LimitKind.CONCURRENCY || kind === LimitKind.CREDITS_MICROS;
}

/** Keys of a window stay a little past its end so late settles land in it. */
const keySlackMs = 120_000;

export function isMeteredKind(kind: LimitKind): boolean {
  return unitOf[kind] !== undefined;
}

/**
 * Subject id of a limit's `per`: an API key without a user is its own user
 * (`key:<id>`), a JWT its own key (`jwt:<sub>`; key ids have no ':'). Users —
 * a bundle's or a JWT's `sub`, which an identity provider picks — keep their
 * id, unless it starts with `key:` or `user:`: that one is metered as
 * `user:<id>`, so no `sub` can share a meter with an API key's own.
 */
export function subjectId(per: Per, s: MeterSubject): string {
  switch (per) {
    case Per.USER:
      return s.user ? userSubject(s.user) : `key:${s.keyId}`;
    case Per.KEY:
      return s.keyId || `jwt:${s.user}`;
    default:
      return s.tenant;
  }
}

/** A user's USER meter subject: its id, escaped when it could pass for an API key's (`key:…`) or an escaped one (`user:…`). */
function userSubject(user: string): string {
  return user.startsWith("key:") || user.startsWith("user:") ? `user:${user}` : user;
}

/** The key of a token bucket's meter: one per limit and subject, no window start. */
export function bucketMeterKey(kind: LimitKind, window: Window, task: string, per: Per, subject: string): string {
  return `${LimitKind[kind]}|${Window[window]}|${task || "*"}|${Per[per]}|${subject}${bucketKeySuffix}`;
}

/** A limit's bucket when it is a TOKEN_BUCKET (a value of 0 blocks as a window of 0 does: no bucket). */
export function bucketOf(limit: EffectiveLimit): MeterBucket | undefined {
  if (limit.algorithm !== LimitAlgorithm.TOKEN_BUCKET || limit.value <= 0) return undefined;
  const span = windowSpan(limit.window, 0);
  return meterBucket(limit.value, limit.burst ?? 0, span.endMs - span.startMs);
}

export function meterKey(kind: LimitKind, window: Window, task: string, per: Per, subject: string, windowStartMs: number): string {
  return isWindowless(kind)
    ? `${LimitKind[kind]}|${task || "*"}|${Per[per]}|${subject}`
    : `${LimitKind[kind]}|${Window[window]}|${task || "*"}|${Per[per]}|${subject}|${windowStartMs}`;
}

/** A prepaid tenant's credit meter: its one key, for good (see credit-balances.ts). */
export function creditsKey(tenant: string): string {
  return meterKey(LimitKind.CREDITS_MICROS, Window.UNSPECIFIED, "", Per.TENANT, tenant, 0);
}

/**
 * The meters of the metered limits (rates, quotas, budgets, concurrency) for a
 * subject, in the windows containing `atMs`. Lifted limits (-1) have no meter.
 */
export function bindMeters(limits: readonly EffectiveLimit[], subject: MeterSubject, atMs: number): BoundMeter[] {
  const bound: BoundMeter[] = [];
  for (const limit of limits) {
    const unit = unitOf[limit.kind];
    if (!unit || limit.value < 0) continue;
    const id = subjectId(limit.per, subject);
    const bucket = bucketOf(limit);
    if (bucket) {
      bound.push({
        limit, limitBig: BigInt(limit.value), unit, subject: id, key: bucketMeterKey(limit.kind, limit.window, limit.task, limit.per, id),
        resetAtMs: 0, expiresAtMs: 0, enforce: limit.mode === Mode.ENFORCE, bucket,
      });
      continue;
    }
    const span = isWindowless(limit.kind) ? undefined : windowSpan(limit.window, atMs);
    bound.push({
      limit,
      limitBig: BigInt(limit.value),
      unit,
      subject: id,
      key: meterKey(limit.kind, limit.window, limit.task, limit.per, id, span?.startMs ?? 0),
      resetAtMs: span?.endMs ?? 0,
      expiresAtMs: span ? span.endMs + keySlackMs : 0,
      enforce: limit.mode === Mode.ENFORCE,
    });
  }
  return bound;
}

/** A subject's bound meters with the counter store's view of each, valid for instants in [validFromMs, validUntilMs). */
export interface BoundMeters {
  readonly meters: readonly BoundMeter[];
  /** ops[i] is meters[i] as the counter store charges it. */
  readonly ops: readonly MeterOp[];
  /** Their windows' common span. */
  readonly validFromMs: number;
  readonly validUntilMs: number;
}

/**
 * bindMeters, remembered per subject and limit list until the first of their
 * windows ends: a decision then reuses the same meter objects, key strings and
 * counter-store ops instead of formatting nine keys and window spans again.
 * Bounded: when full it starts over.
 */
export class BoundMeterCache {
  /**
   * By limit list (which already names the tenant, user record and task, and
   * dies with its snapshot), then by who within it: the key id, or the user for
   * a JWT (users missing from the bundle share one limit list).
   */
  private entries = new WeakMap<readonly EffectiveLimit[], Map<string, BoundMeters>>();
  private size = 0;

  constructor(private readonly maxEntries = 20_000) {}

  /** `limits` must be the snapshot's list for (subject, task): a new list (a new snapshot) rebinds. */
  bind(limits: readonly EffectiveLimit[], subject: MeterSubject, atMs: number): BoundMeters {
    let bySubject = this.entries.get(limits);
    if (!bySubject) this.entries.set(limits, (bySubject = new Map()));
    const who = subject.keyId || `\u0000${subject.user}`;
    const cached = bySubject.get(who);
    if (cached && atMs >= cached.validFromMs && atMs < cached.validUntilMs) return cached;
    const meters = bindMeters(limits, subject, atMs);
    let validFromMs = -Infinity;
    let validUntilMs = Infinity;
    for (const m of meters) {
      // Concurrency and token buckets have no window: they bound nothing.
      if (m.resetAtMs === 0) continue;
      validFromMs = Math.max(validFromMs, windowSpan(m.limit.window, atMs).startMs);
      validUntilMs = Math.min(validUntilMs, m.resetAtMs);
    }
    if (!cached) {
      if (this.size >= this.maxEntries) {
        this.entries = new WeakMap();
        this.entries.set(limits, (bySubject = new Map()));
        this.size = 0;
      }
      this.size++;
    }
    const bound: BoundMeters = {
      meters,
      ops: meters.map((m) => ({ key: m.key, unit: m.unit, limit: m.limit.value, enforce: m.enforce, expiresAtMs: m.expiresAtMs, ...(m.bucket ? { bucket: m.bucket } : {}) })),
      validFromMs,
      validUntilMs,
    };
    bySubject.set(who, bound);
    return bound;
  }
}

/**
 * Cost in micro-USD of input and output tokens at a model's input and output prices
 * (what an Admit reserves: every input token at the full input price), rounded up
 * (prices are per million tokens); exact in integers.
 */
export function costMicros(inputTokens: number, outputTokens: number, inputMicrosPerMTok: bigint, outputMicrosPerMTok: bigint): number {
  // In doubles while every product and the sum stay exact integers (any realistic price and count), else in BigInt.
  const total = inputTokens * Number(inputMicrosPerMTok) + outputTokens * Number(outputMicrosPerMTok);
  if (total <= Number.MAX_SAFE_INTEGER) return roundUpToMicros(total);
  const exact = BigInt(inputTokens) * inputMicrosPerMTok + BigInt(outputTokens) * outputMicrosPerMTok;
  return Number((exact + 999_999n) / 1_000_000n);
}

/** The token counts a cost is computed from (the usage record's convention: cache tokens are part of the input). */
export interface CostedTokens {
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly cacheReadTokens: number;
  readonly cacheWriteTokens: number;
}

/** The prices a cost is computed at; an unset cache price is the input price. */
export type ModelPrices = Pick<Model, "inputMicrosPerMtok" | "outputMicrosPerMtok" | "cacheReadMicrosPerMtok" | "cacheWriteMicrosPerMtok">;

/**
 * Cost in micro-USD of settled usage: uncached input x input price + cache reads x
 * cache-read price + cache writes x cache-write price + output x output price, the
 * sum rounded up once. Exact in integers, the same whichever store counts it.
 */
export function usageCostMicros(usage: CostedTokens, prices: ModelPrices): number {
  const uncached = usage.inputTokens - usage.cacheReadTokens - usage.cacheWriteTokens;
  if (usage.cacheReadTokens === 0 && usage.cacheWriteTokens === 0) return costMicros(usage.inputTokens, usage.outputTokens, prices.inputMicrosPerMtok, prices.outputMicrosPerMtok);
  const readPrice = prices.cacheReadMicrosPerMtok ?? prices.inputMicrosPerMtok;
  const writePrice = prices.cacheWriteMicrosPerMtok ?? prices.inputMicrosPerMtok;
  const total = uncached * Number(prices.inputMicrosPerMtok) + usage.cacheReadTokens * Number(readPrice)
    + usage.cacheWriteTokens * Number(writePrice) + usage.outputTokens * Number(prices.outputMicrosPerMtok);
  if (total <= Number.MAX_SAFE_INTEGER) return roundUpToMicros(total);
  const exact = BigInt(uncached) * prices.inputMicrosPerMtok + BigInt(usage.cacheReadTokens) * readPrice
    + BigInt(usage.cacheWriteTokens) * writePrice + BigInt(usage.outputTokens) * prices.outputMicrosPerMtok;
  return Number((exact + 999_999n) / 1_000_000n);
}

/** micro-USD x tokens (a safe integer) to micro-USD, rounded up. */
function roundUpToMicros(total: number): number {
  const rest = total % 1_000_000;
  return (total - rest) / 1_000_000 + (rest > 0 ? 1 : 0);
}

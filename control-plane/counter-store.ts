import type { MeterBucket } from "./token-bucket.js";

/**
 * The storage contract for meters and leases. The decision logic sits above it
 * and never knows whether counters live in memory or in Redis. Every method
 * touches the keys of one tenant only (Redis: one hash slot), and each call is
 * atomic. Implementations throw CounterStoreUnavailableError when the backend
 * cannot be reached; the failure policy above decides what that means. One that
 * refuses this process or cannot be trusted throws CounterStoreMisconfiguredError,
 * which no failure policy lets through.
 *
 * Generations. A tenant's counters are usable only once they hold the ledger's
 * usage: `rebuild` sets them from sums the ledger read in one snapshot and tags
 * them with a generation naming that snapshot. Until then the tenant is "cold"
 * and reserve/settle refuse to touch it, so no usage lands in counters that a
 * rebuild is about to overwrite. A store that loses its data (restart, flush)
 * loses the generation with it, and the next call rebuilds. Lease-changing calls
 * report the generation they ran in; a lease only exists in the generation it
 * was reserved in, so its usage is in exactly that generation's counters.
 */
export interface CounterStore {
  /** Reserve every meter or none; optionally idempotent per request id. */
  reserve(request: ReserveRequest): Promise<ReserveResult>;
  /** Settle an open lease once: apply actual usage, release concurrency. */
  settle(request: SettleLeaseRequest): Promise<SettleLeaseResult>;
  /** Move an open lease's expiry. Undefined when the lease is not open. */
  renew(tenant: string, leaseId: string, expiresAtMs: number): Promise<LeaseRecord | undefined>;
  /**
   * The ledger row of a settled/expired lease is durable: stop tracking it.
   * Returns the tenant's generation at that moment (undefined: cold).
   */
  markRecorded(tenant: string, leaseId: string): Promise<string | undefined>;
  /**
   * Claim leases that need the sweeper: open leases past expiry (they become
   * EXPIRED, charged their estimate, concurrency released) and settled leases
   * whose ledger row was not confirmed within the grace period. A claimed lease
   * is not handed out again for `graceMs`, so replicas don't duplicate work.
   */
  claimDue(nowMs: number, graceMs: number, limit: number): Promise<LeaseRecord[]>;
  /** Add amounts without a lease (late settles), only while the tenant is in `generation`; false otherwise. */
  charge(tenant: string, charges: readonly MeterCharge[], generation: string): Promise<boolean>;
  /** Set a cold tenant's counters (added to nothing) and make it `generation`; false when it was not cold. */
  rebuild(tenant: string, generation: string, charges: readonly MeterCharge[]): Promise<boolean>;
  /** The tenant's generation; undefined while cold. */
  generation(tenant: string): Promise<string | undefined>;
  /**
   * Current values of meters (0 when absent); a bucket meter's key (see isBucketKey) reads
   * as its backlog in µs by the store's clock, as reserve reports it.
   */
  read(tenant: string, keys: readonly string[]): Promise<number[]>;
  /** How many of the tenant's leases are open: reserved, neither settled nor expired (by the sweeper) yet. */
  openLeases(tenant: string): Promise<number>;
  /** Set a meter to 0; returns what it held. */
  reset(tenant: string, key: string): Promise<number>;
  /** Health check for /readyz. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** What a meter counts per unit of a lease. */
export type MeterUnit = "requests" | "tokens" | "cost" | "concurrency";

/**
 * A meter a reservation charges. A TOKEN_BUCKET meter (`bucket` set; see token-bucket.ts)
 * holds its bucket's TAT and takes `reservedAmount` units within `bucket.toleranceMs`; the
 * store takes `now` from its own clock (Redis: TIME; memory: the request's `nowMs`). Its
 * value in `used` (and in read) is its backlog: whole µs until the bucket is full. Its amount follows from its unit and the
 * reservation's amounts (see reservedAmount), so one request's meters can be the
 * same objects request after request.
 */
export interface MeterOp {
  /** Meter key within the tenant, including the window start. */
  readonly key: string;
  readonly unit: MeterUnit;
  /** The limit; ignored when `enforce` is false. */
  readonly limit: number;
  /** False for SOFT/SHADOW meters and lifted limits: counted, never blocking. */
  readonly enforce: boolean;
  /** When the key may be dropped (window end + slack); 0: never (concurrency) or computed by the store (bucket). */
  readonly expiresAtMs: number;
  /** Set for a TOKEN_BUCKET meter: it is not windowed, and `limit` is not what blocks (the tolerance is). */
  readonly bucket?: MeterBucket;
}

/** What one reservation reserves: its tokens and cost; a requests or concurrency meter counts 1. */
export interface ReservedAmounts {
  readonly tokens: number;
  readonly costMicros: number;
}

export interface MeterCharge {
  readonly key: string;
  readonly amount: number;
  readonly expiresAtMs: number;
}

export interface ReserveRequest {
  readonly tenant: string;
  readonly leaseId: string;
  /** The full reservation id handed to the caller (self-describing, signed). */
  readonly reservationId: string;
  /** Request id for idempotent retries; empty: none. */
  readonly requestId: string;
  readonly meters: readonly MeterOp[];
  readonly amounts: ReservedAmounts;
  readonly leaseExpiresAtMs: number;
  readonly nowMs: number;
}

export type ReserveResult =
  /** Reserved; `used` holds every meter's value after the reservation (a bucket's: its backlog in µs). */
  | { readonly status: "reserved"; readonly used: number[] }
  /** Nothing reserved: meter `index` would exceed its limit; `used` before. */
  | { readonly status: "blocked"; readonly index: number; readonly used: number[] }
  /** The request id already holds this lease. */
  | { readonly status: "duplicate"; readonly lease: LeaseRecord }
  /** The tenant's counters are not rebuilt in this store yet: nothing reserved. */
  | { readonly status: "cold" };

export type LeaseState = "open" | "settled" | "expired";

/**
 * Usage recorded for a lease, in the one usage record of every provider API:
 * inputTokens includes the cache reads and writes, outputTokens the reasoning
 * tokens (see admission.v1.SettleRequest).
 */
export interface LeaseUsage {
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** Part of inputTokens read from the provider's prompt cache. */
  readonly cacheReadTokens: number;
  /** Part of inputTokens written to the provider's prompt cache. */
  readonly cacheWriteTokens: number;
  /** Part of outputTokens spent reasoning. */
  readonly reasoningTokens: number;
  readonly costMicros: number;
  readonly outcome: number;
  readonly estimated: boolean;
  readonly provider: string;
  readonly model: string;
  readonly latencyMs: number;
  readonly settledAtMs: number;
}

export interface LeaseMeter {
  readonly key: string;
  readonly unit: MeterUnit;
  readonly amount: number;
  readonly expiresAtMs: number;
  /** A TOKEN_BUCKET meter's emission interval (ms per unit); absent for every other meter. */
  readonly emissionMs?: number;
}

export interface LeaseRecord {
  readonly tenant: string;
  readonly leaseId: string;
  readonly reservationId: string;
  readonly meters: readonly LeaseMeter[];
  readonly expiresAtMs: number;
  readonly state: LeaseState;
  /** Set once settled or expired. */
  readonly usage?: LeaseUsage;
  /** The generation the lease (and so its usage) lives in, where the store reports it. */
  readonly generation?: string;
}

export interface SettleLeaseRequest {
  readonly tenant: string;
  readonly leaseId: string;
  readonly usage: LeaseUsage;
  readonly nowMs: number;
  /** How long the store waits for markRecorded before the sweeper takes over. */
  readonly graceMs: number;
}

export type SettleLeaseResult =
  | { readonly status: "settled"; readonly lease: LeaseRecord; readonly generation: string }
  /** Settled or expired before: the first usage stands. */
  | { readonly status: "already"; readonly lease: LeaseRecord; readonly generation: string }
  /** The tenant's counters do not know the lease (reserved in a generation since lost). */
  | { readonly status: "missing"; readonly generation: string }
  /** The tenant's counters are not rebuilt in this store yet: nothing changed. */
  | { readonly status: "cold" };

/** The counter store cannot be reached; the failure policy decides. */
export class CounterStoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CounterStoreUnavailableError";
  }
}

/**
 * The counter store refuses this process (credentials, permissions) or is set up so that
 * its counts cannot be trusted. Not transient: no failure policy admits unmetered on it
 * (every Admit is denied UNAVAILABLE) and readiness fails with the message, which names
 * what to fix and never holds a secret. Everything else treats it as unavailable
 * (settles wait and are retried).
 */
export class CounterStoreMisconfiguredError extends CounterStoreUnavailableError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CounterStoreMisconfiguredError";
  }
}

/** The amount a reservation holds on a meter of the given unit. */
export function reservedAmount(unit: MeterUnit, amounts: ReservedAmounts): number {
  switch (unit) {
    case "tokens":
      return amounts.tokens;
    case "cost":
      return amounts.costMicros;
    default:
      return 1;
  }
}

/** A lease's meters with the amount each holds. */
export function leaseMeters(meters: readonly MeterOp[], amounts: ReservedAmounts): LeaseMeter[] {
  return meters.map((m) => ({
    key: m.key, unit: m.unit, amount: reservedAmount(m.unit, amounts), expiresAtMs: m.expiresAtMs, ...(m.bucket ? { emissionMs: m.bucket.emissionMs } : {}),
  }));
}

/** The amount a settled lease charges a meter of the given unit. */
export function settledAmount(unit: MeterUnit, usage: Pick<LeaseUsage, "inputTokens" | "outputTokens" | "costMicros">): number {
  switch (unit) {
    case "requests":
      return 1;
    case "tokens":
      return usage.inputTokens + usage.outputTokens;
    case "cost":
      return usage.costMicros;
    case "concurrency":
      return 0;
  }
}

/**
 * Token buckets (LimitAlgorithm.TOKEN_BUCKET) as GCRA: one number per meter, the bucket's
 * theoretical arrival time (TAT, ms since the epoch, a float). A limit of `value` per
 * window refills one unit every emission interval T = windowMs / value; the bucket holds
 * `burst` units, a tolerance tau = burst × T. Taking n units at `now`:
 *   new = max(TAT, now) + n × T; admitted when new - now <= tau (+ granularity), TAT := new.
 * The backlog max(0, TAT - now) is the time the bucket lacks to be full: it holds
 * (tau - backlog) / T units, is full again after the backlog, and n units fit again after
 * backlog + n × T - tau. A settle moves TAT by (settled - reserved) × T: a refund lowers it,
 * usage beyond the reservation is debt that delays the next admit.
 *
 * Granularity: 1 µs (Redis's TIME resolution). The stores report a bucket's backlog in whole
 * µs rounded up, and a reservation fits when it is over the tolerance by at most 1 µs of
 * refill (float sums of T are not exact). So over any interval of length d a bucket admits at
 * most burst + rate × (d + 1 µs) units: one more than burst + rate × d for rates up to one
 * unit per µs.
 *
 * This file holds the arithmetic both stores and the decision share, so that they agree.
 */

/** How a TOKEN_BUCKET meter counts (see MeterOp.bucket). */
export interface MeterBucket {
  /** T: ms of refill per unit (windowMs / value). */
  readonly emissionMs: number;
  /** tau: burst × T, the backlog the bucket tolerates. */
  readonly toleranceMs: number;
  /** The bucket's size in units (the limit's burst, or its value when burst is 0). */
  readonly burst: number;
}

/** The granularity of the bucket step in ms (1 µs): see the top of this file. */
export const bucketGranularityMs = 0.001;

/** A bucket key stays this long past the instant it is full (and past its lease's expiry): an absent key is a full bucket. */
export const bucketKeySlackMs = 120_000;

/** The description of a bucket of `value` units per window of `windowMs`, of `burst` units (0: value). Value must be positive. */
export function meterBucket(value: number, burst: number, windowMs: number): MeterBucket {
  const size = burst > 0 ? burst : value;
  const emissionMs = windowMs / value;
  return { emissionMs, toleranceMs: size * emissionMs, burst: size };
}

/** The outcome of taking `units` from a bucket whose TAT is `tatMs` (0: absent, full) at `nowMs`. */
export interface BucketStep {
  /** The TAT after taking them (what to store when admitted). */
  readonly tatMs: number;
  /** Whether they fit within the tolerance (a meter that does not enforce always takes them). */
  readonly fits: boolean;
}

/** One GCRA step; `toleranceMs` Infinity for a meter that does not enforce. */
export function bucketStep(tatMs: number, nowMs: number, units: number, bucket: Pick<MeterBucket, "emissionMs">, toleranceMs: number): BucketStep {
  const next = Math.max(tatMs, nowMs) + units * bucket.emissionMs;
  return { tatMs: next, fits: next - nowMs <= toleranceMs + bucketGranularityMs };
}

/** The backlog as the stores report a bucket meter: whole µs until it is full, rounded up (0: full). */
export function backlogMicros(tatMs: number, nowMs: number): number {
  return tatMs > nowMs ? Math.ceil((tatMs - nowMs) * 1000) : 0;
}

/** When a bucket key may be dropped: once it is full and its lease can no longer settle, plus slack. */
export function bucketKeyExpiresAtMs(tatMs: number, leaseExpiresAtMs: number): number {
  return Math.ceil(Math.max(tatMs, leaseExpiresAtMs)) + bucketKeySlackMs;
}

/** Whole units in a bucket with this backlog (µs): as many as a reservation could take now. Negative backlogs do not occur; debt shows as 0. */
export function bucketRemaining(bucket: MeterBucket, backlogUs: number): number {
  const units = Math.floor((bucket.toleranceMs + bucketGranularityMs - backlogUs / 1000) / bucket.emissionMs);
  return Math.max(0, Math.min(bucket.burst, units));
}

/** ms until the bucket is full again, rounded up. */
export function bucketResetMs(backlogUs: number): number {
  return Math.ceil(backlogUs / 1000);
}

/**
 * ms until `units` fit in a bucket with this backlog (µs), rounded up: the exact wait (within
 * the granularity) after which the same reservation is admitted; 0 when they fit now. When
 * they can never fit (more than the whole burst), the time until the bucket is full.
 */
export function bucketRetryAfterMs(bucket: MeterBucket, backlogUs: number, units: number): number {
  if (units * bucket.emissionMs > bucket.toleranceMs + bucketGranularityMs) return bucketResetMs(backlogUs);
  return Math.max(0, Math.ceil(backlogUs / 1000 + units * bucket.emissionMs - bucket.toleranceMs - bucketGranularityMs));
}

/** How a bucket meter's key ends (it has no window start): the stores read such a key as a backlog (see CounterStore.read). */
export const bucketKeySuffix = "|bucket";

export function isBucketKey(key: string): boolean {
  return key.endsWith(bucketKeySuffix);
}

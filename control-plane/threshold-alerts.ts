import { LimitKind, Mode, Per, Window } from "../gen/admission/v1/policy_pb.js";
import type { BoundMeter, MeterSubject } from "./meters.js";
import type { Metrics } from "./metrics.js";
import type { AuditLog } from "./store/audit-log.js";
import type { OutboxEvent } from "./store/webhook-outbox.js";
import type { WebhookEvents } from "./webhook-events.js";
import { isTimeWindow, windowSpan } from "./windows.js";

export interface ThresholdAlertsDeps {
  readonly metrics: Metrics;
  readonly audit: Pick<AuditLog, "record">;
  /** Where alerts go as webhook events; without it they are audited and counted only. */
  readonly events?: Pick<WebhookEvents, "event">;
  /** Fractions of the limit (default 0.8 and 1). */
  readonly thresholds: readonly number[];
}

/**
 * The one path every threshold alert takes, whoever moved the meter (an Admit's
 * reservation, a Settle's usage beyond it, any other meter kind): counted,
 * audited, and built as an alert.threshold event for the caller to write in the
 * transaction (or before the answer) of what raised it.
 */
export class ThresholdAlerts {
  constructor(private readonly deps: ThresholdAlertsDeps) {}

  get thresholds(): readonly number[] {
    return this.deps.thresholds;
  }

  /** The alerts of meter `m` of `who` going from `before` to `used`: the events to write (none: undefined). */
  raise(m: BoundMeter, before: number, used: number, who: MeterSubject, nowMs: number): OutboxEvent[] | undefined {
    let events: OutboxEvent[] | undefined;
    const limit = m.limit.value;
    for (const threshold of crossedThresholds(before, used, limit, this.deps.thresholds)) {
      this.deps.metrics.alerts.inc({ kind: LimitKind[m.limit.kind], threshold: String(threshold) });
      this.deps.audit.record({
        kind: "alert.threshold",
        actor: actorOf(who),
        tenant: who.tenant,
        message: `${meterLabel(m)} reached ${Math.round(threshold * 100)}% of its limit (${used}/${limit}, mode ${Mode[m.limit.mode]})`,
        attributes: { key: m.key, threshold: String(threshold), mode: Mode[m.limit.mode] },
      });
      const event = this.deps.events?.event("alert.threshold", who.tenant, thresholdAlertData(m, who, threshold, used, nowMs));
      if (event) (events ??= []).push(event);
    }
    return events;
  }
}

/** How warnings and alerts name a meter, e.g. "TOKENS/DAY/DRAFT alice". */
export function meterLabel(m: BoundMeter): string {
  // Credits have no window to name.
  const window = m.limit.kind === LimitKind.CREDITS_MICROS ? "" : `/${Window[m.limit.window]}`;
  return `${LimitKind[m.limit.kind]}${window}${m.limit.task ? `/${m.limit.task}` : ""} ${m.subject}`;
}

export function actorOf(who: MeterSubject): string {
  return who.keyId ? `key:${who.keyId}` : who.user ? `user:${who.user}` : "anonymous";
}

/** The thresholds (fractions of `limit`) a meter crossed going from `before` to `used`: each is crossed by exactly one change. */
export function crossedThresholds(before: number, used: number, limit: number, thresholds: readonly number[]): number[] {
  if (limit <= 0) return [];
  return thresholds.filter((threshold) => before < limit * threshold && used >= limit * threshold);
}

/**
 * An alert.threshold event's data: who (tenant, and the user or key when the meter is
 * theirs), the meter (kind, window, per, task), the threshold as a fraction, used and
 * limit, and the window's start and end (none for concurrency).
 */
export function thresholdAlertData(m: BoundMeter, who: MeterSubject, threshold: number, used: number, atMs: number): Record<string, unknown> {
  const { kind, window, per, task, value, mode } = m.limit;
  const span = isTimeWindow(window) ? windowSpan(window, atMs) : undefined;
  return {
    tenant: who.tenant,
    // A user's meter names the user (an API key without one is its own user); a key's meter the key (a JWT is its own key).
    ...(per === Per.USER ? (who.user ? { user: who.user } : { keyId: who.keyId }) : {}),
    ...(per === Per.KEY ? (who.keyId ? { keyId: who.keyId } : { user: who.user }) : {}),
    meter: { kind: LimitKind[kind], ...(span ? { window: Window[window] } : {}), per: Per[per], ...(task ? { task } : {}), subject: m.subject },
    threshold,
    used,
    limit: value,
    mode: Mode[mode],
    ...(span ? { windowStart: new Date(span.startMs).toISOString(), windowEnd: new Date(span.endMs).toISOString() } : {}),
  };
}

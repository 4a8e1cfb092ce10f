import type { Database, Queryable } from "./database.js";
import { toNumber } from "./database.js";
import { JsonLinesSpool, type QuarantinedLines } from "./spool-file.js";

/** An event as raised: written with what raised it, one delivery per endpoint in `webhooks`. */
export interface OutboxEvent {
  /** The webhook-id every attempt carries: "evt_" + random. */
  readonly id: string;
  readonly type: string;
  /** "" for an event about no tenant. */
  readonly tenant: string;
  readonly data: Record<string, unknown>;
  readonly atMs: number;
  /** The endpoints it goes to, fixed when it is raised. */
  readonly webhooks: readonly string[];
}

export type DeliveryState = "pending" | "delivered" | "failed";

/** A delivery claimed for one attempt: `attempt` is its number (1 for the first). */
export interface ClaimedDelivery {
  readonly id: number;
  readonly webhook: string;
  readonly attempt: number;
  readonly eventId: string;
  readonly type: string;
  readonly tenant: string;
  readonly data: Record<string, unknown>;
  readonly createdAtMs: number;
}

export interface AttemptRecord {
  readonly atMs: number;
  readonly httpStatus: number;
  readonly latencyMs: number;
  readonly error: string;
}

export interface DeliveryRecord {
  readonly id: number;
  readonly eventId: string;
  readonly type: string;
  readonly tenant: string;
  readonly webhook: string;
  readonly state: DeliveryState;
  readonly createdAtMs: number;
  readonly nextAttemptAtMs: number;
  readonly data: Record<string, unknown>;
  readonly attempts: AttemptRecord[];
}

export interface DeliveryFilter {
  readonly webhook?: string;
  readonly tenant?: string;
  readonly state?: DeliveryState;
  readonly pageSize: number;
  /** The next page: deliveries with a lower id. */
  readonly beforeId?: number;
}

/** Whether a value read back from a spool line is an event as raised. */
export function isOutboxEvent(e: unknown): e is OutboxEvent {
  const v = e as Partial<OutboxEvent> | null;
  return typeof v === "object" && v !== null && typeof v.id === "string" && typeof v.type === "string" && typeof v.tenant === "string"
    && typeof v.data === "object" && v.data !== null && !Array.isArray(v.data) && Number.isFinite(v.atMs)
    && Array.isArray(v.webhooks) && v.webhooks.every((w) => typeof w === "string");
}

/**
 * Events raised without a transaction of their own (an Admit's alerts, expiring keys) while the
 * database is unreachable: fsync'd to `webhook-spool.jsonl` in the spool directory before the
 * caller goes on, written to the outbox (idempotently: the event id) when it is back.
 */
export function webhookEventSpool(options: { dir: string; onQuarantine?: (q: QuarantinedLines) => void }): JsonLinesSpool<OutboxEvent> {
  return new JsonLinesSpool<OutboxEvent>({
    dir: options.dir,
    name: "webhook-spool",
    onQuarantine: options.onQuarantine,
    parse: (line) => {
      try {
        const value: unknown = JSON.parse(line);
        return isOutboxEvent(value) ? value : undefined;
      } catch {
        return undefined;
      }
    },
  });
}

/** Writes events into the outbox within the caller's transaction (so they commit, or not, with it). */
export async function insertOutboxEvents(tx: Queryable, events: readonly OutboxEvent[]): Promise<void> {
  const routed = events.filter((e) => e.webhooks.length > 0);
  if (routed.length === 0) return;
  await tx.query(
    `INSERT INTO webhook_events (id, type, tenant, data, created_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[]) ON CONFLICT (id) DO NOTHING`,
    [routed.map((e) => e.id), routed.map((e) => e.type), routed.map((e) => e.tenant), routed.map((e) => JSON.stringify(e.data)), routed.map((e) => new Date(e.atMs).toISOString())],
  );
  const pairs = routed.flatMap((e) => e.webhooks.map((w) => [e.id, w, new Date(e.atMs).toISOString()] as const));
  await tx.query(
    `INSERT INTO webhook_deliveries (event_id, webhook, state, next_attempt_at, created_at)
     SELECT e, w, 'pending', at, at FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS d(e, w, at) ON CONFLICT (event_id, webhook) DO NOTHING`,
    [pairs.map((p) => p[0]), pairs.map((p) => p[1]), pairs.map((p) => p[2])],
  );
}

/** The outbox's deliveries: claimed by one worker at a time, each attempt recorded. */
export class WebhookOutbox {
  constructor(private readonly db: Database) {}

  /**
   * Claims up to `limit` deliveries due at `nowMs` and not claimed by anyone: each one is
   * held until nowMs + leaseMs and its attempt count goes up by one (the claim's token), in
   * one statement that skips rows another replica is claiming. Until the claim is completed
   * or its lease passes no other worker can take it; a worker that dies mid-attempt leaves
   * it to be claimed again then.
   */
  async claim(nowMs: number, leaseMs: number, limit: number): Promise<ClaimedDelivery[]> {
    const { rows } = await this.db.query<Record<string, unknown>>(
      `WITH due AS (
         SELECT id FROM webhook_deliveries
         WHERE state = 'pending' AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1)
         ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
       UPDATE webhook_deliveries d SET claimed_until = $2, attempts = d.attempts + 1
       FROM due, webhook_events e WHERE d.id = due.id AND e.id = d.event_id
       RETURNING d.id, d.webhook, d.attempts, e.id AS event_id, e.type, e.tenant, e.data, e.created_at`,
      [new Date(nowMs).toISOString(), new Date(nowMs + leaseMs).toISOString(), limit],
    );
    return rows.map((r) => ({
      id: toNumber(r.id), webhook: String(r.webhook), attempt: toNumber(r.attempts), eventId: String(r.event_id), type: String(r.type),
      tenant: String(r.tenant), data: jsonObject(r.data), createdAtMs: new Date(r.created_at as string).getTime(),
    }));
  }

  /**
   * Records an attempt and what follows: delivered, failed, or pending again at
   * `nextAttemptAtMs`, and releases the claim. Only the holder of the claim (`attempt`) may:
   * false when its lease passed and another worker claimed it (the attempt is still recorded).
   */
  async complete(delivery: Pick<ClaimedDelivery, "id" | "attempt">, attempt: AttemptRecord, next: { state: DeliveryState; nextAttemptAtMs?: number }): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      await tx.query(
        "INSERT INTO webhook_attempts (delivery_id, at, http_status, latency_ms, error) VALUES ($1, $2, $3, $4, $5)",
        [delivery.id, new Date(attempt.atMs).toISOString(), attempt.httpStatus, Math.min(attempt.latencyMs, 2_147_483_647), attempt.error.slice(0, 1000)],
      );
      const { rowCount } = await tx.query(
        `UPDATE webhook_deliveries SET state = $3, next_attempt_at = coalesce($4, next_attempt_at), claimed_until = NULL,
           completed_at = CASE WHEN $3 = 'pending' THEN NULL ELSE $5::timestamptz END
         WHERE id = $1 AND attempts = $2 AND state = 'pending'`,
        [delivery.id, delivery.attempt, next.state, next.nextAttemptAtMs === undefined ? null : new Date(next.nextAttemptAtMs).toISOString(), new Date(attempt.atMs).toISOString()],
      );
      return rowCount > 0;
    });
  }

  /** Gives up a claimed delivery without an attempt (its endpoint is gone or disabled). */
  async abandon(delivery: Pick<ClaimedDelivery, "id" | "attempt">, nowMs: number): Promise<void> {
    await this.db.query("UPDATE webhook_deliveries SET state = 'failed', completed_at = $3, claimed_until = NULL WHERE id = $1 AND attempts = $2 AND state = 'pending'", [
      delivery.id, delivery.attempt, new Date(nowMs).toISOString(),
    ]);
  }

  /**
   * Queues a delivery again, due now; its attempts so far stay. One being attempted right now
   * is not attempted a second time alongside: the claim stands, and its attempt is the
   * redelivery. Undefined when there is no such delivery.
   */
  async redeliver(id: number, nowMs: number): Promise<DeliveryRecord | undefined> {
    const { rowCount } = await this.db.query(
      "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $2, completed_at = NULL WHERE id = $1",
      [id, new Date(nowMs).toISOString()],
    );
    if (rowCount === 0) return undefined;
    return (await this.list({ pageSize: 1, beforeId: id + 1 }))[0];
  }

  /** Newest first, each with its attempts (oldest first). */
  async list(filter: DeliveryFilter): Promise<DeliveryRecord[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace("?", `$${params.length}`));
    };
    if (filter.webhook) add("d.webhook = ?", filter.webhook);
    if (filter.tenant) add("e.tenant = ?", filter.tenant);
    if (filter.state) add("d.state = ?", filter.state);
    if (filter.beforeId !== undefined) add("d.id < ?", filter.beforeId);
    params.push(filter.pageSize);
    const { rows } = await this.db.query<Record<string, unknown>>(
      `SELECT d.id, d.webhook, d.state, d.next_attempt_at, d.created_at, e.id AS event_id, e.type, e.tenant, e.data,
              coalesce((SELECT jsonb_agg(jsonb_build_object('at', a.at, 'status', a.http_status, 'latency', a.latency_ms, 'error', a.error) ORDER BY a.id)
                        FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]'::jsonb) AS attempts
       FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
       ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY d.id DESC LIMIT $${params.length}`,
      params,
    );
    return rows.map((r) => ({
      id: toNumber(r.id), eventId: String(r.event_id), type: String(r.type), tenant: String(r.tenant), webhook: String(r.webhook),
      state: String(r.state) as DeliveryState, createdAtMs: new Date(r.created_at as string).getTime(), nextAttemptAtMs: new Date(r.next_attempt_at as string).getTime(),
      data: jsonObject(r.data),
      attempts: (jsonValue(r.attempts) as Array<Record<string, unknown>>).map((a) => ({
        atMs: new Date(a.at as string).getTime(), httpStatus: Number(a.status), latencyMs: Number(a.latency), error: String(a.error),
      })),
    }));
  }

  /**
   * Retention: deletes events raised before `cutoffMs` none of whose deliveries is still
   * pending (their deliveries and attempts with them), `batchRows` events per statement.
   * Returns how many events were deleted.
   */
  async deleteFinishedBefore(cutoffMs: number, batchRows = 10_000): Promise<number> {
    let deleted = 0;
    for (;;) {
      const { rows } = await this.db.query<{ n: number | string }>(
        `WITH gone AS (
           DELETE FROM webhook_events WHERE id IN (
             SELECT e.id FROM webhook_events e WHERE e.created_at < $1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.state = 'pending')
             LIMIT $2)
           RETURNING 1)
         SELECT count(*) AS n FROM gone`,
        [new Date(cutoffMs).toISOString(), batchRows],
      );
      const n = toNumber(rows[0]?.n ?? 0);
      deleted += n;
      if (n < batchRows) return deleted;
    }
  }

  /** When the oldest pending delivery's event was raised; undefined when none is pending. */
  async oldestPendingMs(): Promise<number | undefined> {
    const { rows } = await this.db.query<{ oldest: string | Date | null }>("SELECT min(created_at) AS oldest FROM webhook_deliveries WHERE state = 'pending'");
    const oldest = rows[0]?.oldest;
    return oldest ? new Date(oldest).getTime() : undefined;
  }
}

function jsonValue(value: unknown): unknown {
  return typeof value === "string" ? JSON.parse(value) : value;
}

function jsonObject(value: unknown): Record<string, unknown> {
  return jsonValue(value) as Record<string, unknown>;
}

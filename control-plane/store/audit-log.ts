import type { Logger } from "pino";
import type { Database } from "./database.js";
import { toNumber } from "./database.js";

export interface AuditEventInput {
  readonly kind: string;
  readonly actor: string;
  readonly tenant?: string;
  readonly message: string;
  readonly attributes?: Record<string, string>;
}

export interface AuditEventRecord {
  readonly id: number;
  readonly atMs: number;
  readonly kind: string;
  readonly actor: string;
  readonly tenant: string;
  readonly message: string;
  readonly attributes: Record<string, string>;
}

interface Queued extends AuditEventInput {
  readonly atMs: number;
  attempts: number;
}

const maxQueued = 50_000;
const maxAttempts = 5;

/**
 * Audit events (admin changes, denials, alerts, expiries): logged at once and
 * written to the store in the background in batches. Recording never throws
 * and never blocks a decision.
 */
export class AuditLog {
  private queue: Queued[] = [];
  private writing: Promise<void> | undefined;
  private readonly clock: () => number;

  constructor(private readonly options: { db: Database; logger: Logger; clock?: () => number }) {
    this.clock = options.clock ?? Date.now;
  }

  record(event: AuditEventInput): void {
    this.options.logger.info({ audit: event.kind, actor: event.actor, tenant: event.tenant, attributes: event.attributes }, event.message);
    if (this.queue.length >= maxQueued) {
      this.options.logger.error({ audit: event.kind }, "audit queue full; event kept in the log only");
      return;
    }
    this.queue.push({ ...event, atMs: this.clock(), attempts: 0 });
    if (!this.writing) this.writing = this.drain();
  }

  private async drain(): Promise<void> {
    await new Promise<void>((r) => setImmediate(r));
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, 500);
        try {
          await this.options.db.query(
            `INSERT INTO audit_events (at, kind, actor, tenant, message, attributes)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[])`,
            [
              batch.map((e) => new Date(e.atMs).toISOString()), batch.map((e) => e.kind), batch.map((e) => e.actor),
              batch.map((e) => e.tenant ?? ""), batch.map((e) => e.message), batch.map((e) => JSON.stringify(e.attributes ?? {})),
            ],
          );
        } catch (err) {
          const retry = batch.filter((e) => ++e.attempts < maxAttempts);
          this.options.logger.warn({ err: String(err), events: batch.length, retrying: retry.length }, "audit write failed");
          this.queue.unshift(...retry);
          await new Promise((r) => setTimeout(r, 200 * 2 ** Math.min(retry[0]?.attempts ?? 1, 5)));
        }
      }
    } finally {
      this.writing = undefined;
    }
  }

  async flush(): Promise<void> {
    while (this.writing) await this.writing;
  }

  /** Newest first. */
  async list(filter: { tenant?: string; kindPrefix?: string; sinceMs?: number; pageSize: number; beforeId?: number }): Promise<AuditEventRecord[]> {
    await this.flush();
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (sql: string, value: unknown) => {
      params.push(value);
      where.push(sql.replace("?", `$${params.length}`));
    };
    if (filter.tenant) add("tenant = ?", filter.tenant);
    if (filter.kindPrefix) add("starts_with(kind, ?)", filter.kindPrefix);
    if (filter.sinceMs) add("at >= ?", new Date(filter.sinceMs).toISOString());
    if (filter.beforeId) add("id < ?", filter.beforeId);
    params.push(filter.pageSize);
    const { rows } = await this.options.db.query<Record<string, unknown>>(
      `SELECT id, at, kind, actor, tenant, message, attributes FROM audit_events ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT $${params.length}`,
      params,
    );
    return rows.map((r) => ({
      id: toNumber(r.id), atMs: new Date(r.at as string).getTime(), kind: String(r.kind), actor: String(r.actor), tenant: String(r.tenant),
      message: String(r.message), attributes: (typeof r.attributes === "string" ? JSON.parse(r.attributes) : r.attributes) as Record<string, string>,
    }));
  }

  async close(): Promise<void> {
    await this.flush();
  }
}

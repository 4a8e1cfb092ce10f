import type { Logger } from "pino";
import type { Database } from "./database.js";
import { toNumber } from "./database.js";
import type { LedgerSpool } from "./ledger-spool.js";

/** One settled or expired reservation. Append-only; idempotent per reservation id. */
export interface LedgerRow {
  readonly reservationId: string;
  readonly requestId: string;
  readonly tenant: string;
  readonly user: string;
  readonly keyId: string;
  readonly task: string;
  readonly model: string;
  readonly provider: string;
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly costMicros: number;
  readonly outcome: string;
  readonly estimated: boolean;
  readonly latencyMs: number;
  readonly reservedAtMs: number;
  readonly settledAtMs: number;
}

export interface UsageTotals {
  requests: number;
  inputTokens: number;
  outputTokens: number;
  costMicros: number;
}

export type UsageDimension = "user" | "task" | "model" | "key" | "day";

export interface UsageFilter {
  readonly tenant: string;
  readonly user?: string;
  readonly task?: string;
  readonly model?: string;
  readonly startMs: number;
  readonly endMs: number;
  readonly groupBy?: readonly UsageDimension[];
}

export interface WindowSum {
  readonly tenant: string;
  readonly user: string;
  readonly keyId: string;
  readonly task: string;
  readonly requests: number;
  readonly tokens: number;
  readonly costMicros: number;
}

interface Pending {
  readonly row: LedgerRow;
  readonly spool: boolean;
  readonly resolve: (r: AppendResult) => void;
  readonly reject: (err: unknown) => void;
}

/** `spooled`: the database was unreachable; the row is durable in the local spool and will be replayed. */
export interface AppendResult {
  readonly inserted: boolean;
  readonly spooled?: boolean;
}

const dimensionSql: Record<UsageDimension, string> = {
  user: "user_id",
  task: "task",
  model: "model",
  key: "key_id",
  day: "to_char(reserved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
};

const columns = "reservation_id, request_id, tenant, user_id, key_id, task, model, provider, input_tokens, output_tokens, cost_micros, outcome, estimated, latency_ms, reserved_at, settled_at";

/**
 * The usage ledger. append() resolves only once the row is committed; rows
 * arriving while a batch is being written go into the next single multi-row
 * INSERT (group commit), so throughput grows with concurrency.
 */
export class Ledger {
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private readonly maxBatchRows: number;

  constructor(private readonly options: { db: Database; logger: Logger; spool?: LedgerSpool; maxBatchRows?: number; onBatchWritten?: (rows: number, ms: number) => void }) {
    this.maxBatchRows = options.maxBatchRows ?? 500;
  }

  /**
   * Resolves once the row is durable: committed, or — when the database is
   * unreachable and `spool` is allowed — fsync'd to the local spool. Without
   * the spool (or without `spool`), a database failure rejects.
   */
  append(row: LedgerRow, options: { spool?: boolean } = {}): Promise<AppendResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ row, spool: options.spool ?? true, resolve, reject });
      if (!this.flushing) this.flushing = this.flushLoop();
    });
  }

  /** Rows waiting in the spool for the database. */
  spoolPending(): boolean {
    return this.options.spool?.pending() ?? false;
  }

  /** Writes spooled rows to the database (idempotently); returns how many. */
  async replaySpool(): Promise<number> {
    if (!this.options.spool?.pending()) return 0;
    const n = await this.options.spool.replay((rows) => this.insert(rows).then(() => undefined));
    if (n > 0) this.options.logger.info({ rows: n }, "ledger spool replayed");
    return n;
  }

  private async flushLoop(): Promise<void> {
    // Let every append of the current tick join the first batch.
    await new Promise<void>((r) => setImmediate(r));
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatchRows);
        await this.writeBatch(batch);
      }
    } finally {
      this.flushing = undefined;
    }
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    const first = new Map<string, Pending>();
    const repeats: Pending[] = [];
    for (const p of batch) {
      if (first.has(p.row.reservationId)) repeats.push(p);
      else first.set(p.row.reservationId, p);
    }
    const rows = [...first.values()].map((p) => p.row);
    let written: Set<string>;
    try {
      written = await this.insert(rows);
    } catch (err) {
      this.options.logger.error({ err: String(err), rows: batch.length }, "ledger batch failed");
      await this.spoolOrReject(batch, err);
      return;
    }
    for (const p of first.values()) p.resolve({ inserted: written.has(p.row.reservationId) });
    for (const p of repeats) p.resolve({ inserted: false });
  }

  private async spoolOrReject(batch: Pending[], err: unknown): Promise<void> {
    const spool = this.options.spool;
    const spoolable = spool ? batch.filter((p) => p.spool) : [];
    for (const p of batch) if (!spoolable.includes(p)) p.reject(err);
    if (spoolable.length === 0) return;
    try {
      await spool!.append(spoolable.map((p) => p.row));
      for (const p of spoolable) p.resolve({ inserted: true, spooled: true });
    } catch (spoolErr) {
      this.options.logger.error({ err: String(spoolErr) }, "ledger spool write failed");
      for (const p of spoolable) p.reject(err);
    }
  }

  /** One multi-row INSERT; returns the reservation ids that were new. */
  private async insert(rows: readonly LedgerRow[]): Promise<Set<string>> {
    const started = performance.now();
    const { rows: inserted } = await this.options.db.query<{ reservation_id: string }>(
      `INSERT INTO usage_ledger (${columns})
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                            $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::boolean[], $14::integer[],
                            $15::timestamptz[], $16::timestamptz[])
       ON CONFLICT (reservation_id, reserved_at) DO NOTHING
       RETURNING reservation_id`,
      [
        rows.map((r) => r.reservationId), rows.map((r) => r.requestId), rows.map((r) => r.tenant), rows.map((r) => r.user),
        rows.map((r) => r.keyId), rows.map((r) => r.task), rows.map((r) => r.model), rows.map((r) => r.provider),
        rows.map((r) => String(r.inputTokens)), rows.map((r) => String(r.outputTokens)), rows.map((r) => String(r.costMicros)),
        rows.map((r) => r.outcome), rows.map((r) => r.estimated), rows.map((r) => Math.min(r.latencyMs, 2_147_483_647)),
        rows.map((r) => new Date(r.reservedAtMs).toISOString()), rows.map((r) => new Date(r.settledAtMs).toISOString()),
      ],
    );
    this.options.onBatchWritten?.(rows.length, performance.now() - started);
    return new Set(inserted.map((r) => r.reservation_id));
  }

  async find(reservationId: string): Promise<LedgerRow | undefined> {
    const { rows } = await this.options.db.query<Record<string, unknown>>(
      `SELECT ${columns} FROM usage_ledger WHERE reservation_id = $1 ORDER BY id LIMIT 1`,
      [reservationId],
    );
    return rows[0] ? fromDb(rows[0]) : undefined;
  }

  async usage(filter: UsageFilter): Promise<{ totals: UsageTotals; rows: Array<{ group: Record<string, string>; totals: UsageTotals }> }> {
    const where = ["tenant = $1", "reserved_at >= $2", "reserved_at < $3"];
    const params: unknown[] = [filter.tenant, new Date(filter.startMs).toISOString(), new Date(filter.endMs).toISOString()];
    for (const [column, value] of [["user_id", filter.user], ["task", filter.task], ["model", filter.model]] as const) {
      if (value === undefined) continue;
      params.push(value);
      where.push(`${column} = $${params.length}`);
    }
    const sums = "count(*) AS requests, coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens, coalesce(sum(cost_micros), 0) AS cost_micros";
    const totals = await this.options.db.query<Record<string, unknown>>(`SELECT ${sums} FROM usage_ledger WHERE ${where.join(" AND ")}`, params);
    const groupBy = filter.groupBy ?? [];
    let rows: Array<{ group: Record<string, string>; totals: UsageTotals }> = [];
    if (groupBy.length > 0) {
      const dims = groupBy.map((d, i) => `${dimensionSql[d]} AS g${i}`).join(", ");
      const result = await this.options.db.query<Record<string, unknown>>(
        `SELECT ${dims}, ${sums} FROM usage_ledger WHERE ${where.join(" AND ")} GROUP BY ${groupBy.map((_, i) => i + 1).join(", ")} ORDER BY ${groupBy.map((_, i) => i + 1).join(", ")}`,
        params,
      );
      rows = result.rows.map((r) => ({ group: Object.fromEntries(groupBy.map((d, i) => [d, String(r[`g${i}`])])), totals: totalsOf(r) }));
    }
    return { totals: totalsOf(totals.rows[0] ?? {}), rows };
  }

  /** Sums by subject and task of rows reserved at or after `sinceMs`: what counters are rebuilt from. */
  async windowSums(sinceMs: number): Promise<WindowSum[]> {
    const { rows } = await this.options.db.query<Record<string, unknown>>(
      `SELECT tenant, user_id, key_id, task, count(*) AS requests, coalesce(sum(input_tokens + output_tokens), 0) AS tokens, coalesce(sum(cost_micros), 0) AS cost_micros
       FROM usage_ledger WHERE reserved_at >= $1 GROUP BY tenant, user_id, key_id, task`,
      [new Date(sinceMs).toISOString()],
    );
    return rows.map((r) => ({
      tenant: String(r.tenant), user: String(r.user_id), keyId: String(r.key_id), task: String(r.task),
      requests: toNumber(r.requests), tokens: toNumber(r.tokens), costMicros: toNumber(r.cost_micros),
    }));
  }

  /** Creates the monthly partitions for this month and the next two. */
  async ensurePartitions(nowMs: number): Promise<void> {
    const d = new Date(nowMs);
    for (let i = 0; i < 3; i++) {
      const from = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + i, 1));
      const to = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + i + 1, 1));
      const name = partitionName(from);
      const exists = await this.options.db.query("SELECT 1 FROM pg_class WHERE relname = $1", [name]);
      if (exists.rows.length > 0) continue;
      try {
        await this.options.db.query(`CREATE TABLE IF NOT EXISTS ${name} PARTITION OF usage_ledger FOR VALUES FROM ('${from.toISOString()}') TO ('${to.toISOString()}')`);
      } catch (err) {
        // Rows of that month already sit in the default partition (clock moved, or a replica raced us): keep them there.
        this.options.logger.warn({ err: String(err), partition: name }, "ledger partition not created");
      }
    }
  }

  /** Retention: drops monthly partitions that end at or before `monthStartMs`. Returns how many. */
  async dropPartitionsBefore(monthStartMs: number): Promise<number> {
    const { rows } = await this.options.db.query<{ relname: string }>(
      `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
       WHERE p.relname = 'usage_ledger' AND c.relname ~ '^usage_ledger_y[0-9]{4}m[0-9]{2}$'`,
    );
    let dropped = 0;
    for (const { relname } of rows) {
      const m = /^usage_ledger_y(\d{4})m(\d{2})$/.exec(relname)!;
      const endMs = Date.UTC(Number(m[1]), Number(m[2]), 1);
      if (endMs <= monthStartMs) {
        await this.options.db.query(`DROP TABLE ${relname}`);
        dropped++;
      }
    }
    return dropped;
  }

  /** Waits for everything queued to be written. */
  async close(): Promise<void> {
    while (this.flushing) await this.flushing;
  }
}

function partitionName(monthStart: Date): string {
  return `usage_ledger_y${monthStart.getUTCFullYear()}m${String(monthStart.getUTCMonth() + 1).padStart(2, "0")}`;
}

function totalsOf(r: Record<string, unknown>): UsageTotals {
  return { requests: toNumber(r.requests), inputTokens: toNumber(r.input_tokens), outputTokens: toNumber(r.output_tokens), costMicros: toNumber(r.cost_micros) };
}

function fromDb(r: Record<string, unknown>): LedgerRow {
  return {
    reservationId: String(r.reservation_id), requestId: String(r.request_id), tenant: String(r.tenant), user: String(r.user_id),
    keyId: String(r.key_id), task: String(r.task), model: String(r.model), provider: String(r.provider),
    inputTokens: toNumber(r.input_tokens), outputTokens: toNumber(r.output_tokens), costMicros: toNumber(r.cost_micros),
    outcome: String(r.outcome), estimated: Boolean(r.estimated), latencyMs: toNumber(r.latency_ms),
    reservedAtMs: new Date(r.reserved_at as string | Date).getTime(), settledAtMs: new Date(r.settled_at as string | Date).getTime(),
  };
}

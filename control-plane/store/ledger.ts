import type { Logger } from "pino";
import type { Database, Queryable } from "./database.js";
import { toNumber } from "./database.js";
import type { LedgerSpool, SpooledRow } from "./ledger-spool.js";
import { insertOutboxEvents, type OutboxEvent } from "./webhook-outbox.js";

/** One settled or expired reservation. Append-only; idempotent per (reservationId, reservedAtMs). */
export interface LedgerRow {
  readonly reservationId: string;
  readonly requestId: string;
  readonly tenant: string;
  readonly user: string;
  readonly keyId: string;
  readonly task: string;
  readonly model: string;
  readonly provider: string;
  /** Every input token, cache reads and writes included. */
  readonly inputTokens: number;
  /** Every output token, reasoning included. */
  readonly outputTokens: number;
  /** Part of inputTokens read from the provider's prompt cache. */
  readonly cacheReadTokens: number;
  /** Part of inputTokens written to the provider's prompt cache. */
  readonly cacheWriteTokens: number;
  /** Part of outputTokens spent reasoning. */
  readonly reasoningTokens: number;
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
  cacheReadTokens: number;
  cacheWriteTokens: number;
  reasoningTokens: number;
  costMicros: number;
}

export type UsageDimension = "user" | "task" | "model" | "key" | "day" | "hour";

export interface UsageFilter {
  readonly tenant: string;
  readonly user?: string;
  readonly task?: string;
  readonly model?: string;
  /** Inclusive. */
  readonly startMs: number;
  /** Exclusive. */
  readonly endMs: number;
  readonly groupBy?: readonly UsageDimension[];
}

export interface UsageReport {
  totals: UsageTotals;
  /** One per group, ordered by the group values (bytewise, the same on both backends). */
  rows: Array<{ group: Record<string, string>; totals: UsageTotals }>;
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

/**
 * `spooled`: the database was unreachable; the row is durable in the local spool and will be replayed.
 * `xid`: the transaction that committed the row (when inserted now, not spooled): see `visibleIn`.
 */
export interface AppendResult {
  readonly inserted: boolean;
  readonly spooled?: boolean;
  readonly xid?: string;
}

/** A prepaid tenant's all-time totals: what its credit meter is rebuilt from. */
export interface CreditSum {
  /** Settled (or expired: their estimate) cost of every ledger row, months dropped by retention included. */
  readonly spentMicros: number;
  /** Sum of the tenant's credit grants. */
  readonly grantedMicros: number;
}

/** Per window start asked for, the sums by subject and task; all read in one snapshot. */
export interface RebuildSums {
  /** The database snapshot the sums were read in (pg_snapshot text: "xmin:xmax:xip,…"). */
  readonly snapshot: string;
  readonly sums: WindowSum[][];
  /** For each credit tenant asked for, its all-time spend and grants, in the same snapshot. */
  readonly credits: ReadonlyMap<string, CreditSum>;
}

export interface LedgerOptions {
  readonly db: Database;
  readonly logger: Logger;
  /** Where rows go while the database is unreachable; without it such appends reject. */
  readonly spool?: LedgerSpool;
  /** Most rows in one INSERT (default 500). */
  readonly maxBatchRows?: number;
  /**
   * Pacing of batches under load (default: 2 ms on PGlite, none on PostgreSQL,
   * whose statements run on the server while more settles queue for the next
   * batch; 0 turns it off). On PGlite a statement costs far more than a row
   * (~0.4 ms of the event loop per INSERT against ~20 µs per row), so while settles
   * arrive concurrently — the last batch carried several rows — a batch starts no
   * sooner than max(this, 10 × the last INSERT's duration, capped at 5 ms) after
   * the previous one, and settles arriving meanwhile share it. A caller settling
   * one at a time (each batch one row) is written at once: waiting could not find
   * it company, only add latency.
   */
  readonly minBatchIntervalMs?: number;
  /** Called after each committed INSERT with its row count and duration. */
  readonly onBatchWritten?: (rows: number, ms: number) => void;
  /** Called after rows carrying webhook events committed (and so did the events). */
  readonly onEventsCommitted?: () => void;
}

/** A spooled row the replay has just inserted, with its transaction and the generation it was spooled with. */
export interface ReplayedRow {
  readonly row: LedgerRow;
  readonly xid: string;
  readonly generation?: string;
}

interface Pending {
  readonly row: LedgerRow;
  readonly spool: boolean;
  readonly generation?: string;
  readonly events?: readonly OutboxEvent[];
  readonly resolve: (r: AppendResult) => void;
  readonly reject: (err: unknown) => void;
}

const dimensionSql: Record<UsageDimension, string> = {
  user: "user_id",
  task: "task",
  model: "model",
  key: "key_id",
  day: "to_char(reserved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
  hour: "to_char(reserved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\":00:00Z\"')",
};

const columns = "reservation_id, request_id, tenant, user_id, key_id, task, model, provider, input_tokens, output_tokens, cost_micros, outcome, estimated, latency_ms, reserved_at, settled_at, cache_read_tokens, cache_write_tokens, reasoning_tokens";
/** The usage columns GetUsage sums. */
const summed = ["input_tokens", "output_tokens", "cost_micros", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens"] as const;
const sums = `count(*) AS requests, ${summed.map((c) => `coalesce(sum(${c}), 0) AS ${c}`).join(", ")}`;
const int4Max = 2_147_483_647;
/** Any fixed number: replicas creating or dropping partitions take turns on it. */
const partitionLockKey = 727274002;
const partitionPattern = /^usage_ledger_y(\d{4})m(\d{2})$/;
/** The longest a settle waits for company under load (see minBatchIntervalMs). */
const maxPaceMs = 5;
/** Months ahead of the current one that always have a partition. */
const monthsAhead = 2;

/**
 * The usage ledger. append() resolves only once the row is committed. While
 * one INSERT is in flight new rows queue, and everything queued goes into the
 * next single multi-row INSERT (group commit), so throughput grows with
 * concurrency while each Settle still waits for its own commit.
 */
export class Ledger {
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private readonly maxBatchRows: number;
  private readonly minBatchIntervalMs: number;
  private lastBatchStartedMs = -Infinity;
  private lastBatchRows = 0;
  private lastBatchMs = 0;

  constructor(private readonly options: LedgerOptions) {
    this.maxBatchRows = Math.max(1, options.maxBatchRows ?? 500);
    this.minBatchIntervalMs = Math.max(0, options.minBatchIntervalMs ?? (options.db.kind === "pglite" ? 2 : 0));
  }

  /**
   * Resolves once the row is durable: committed, or — when the database is
   * unreachable, a spool is configured and `spool` is not false — fsync'd to
   * the spool. `inserted` is false when the reservation was already recorded
   * (including by an earlier row of the same batch: the first one wins). A
   * row that could never be stored rejects at once without joining a batch;
   * a failed batch rejects (or spools) every append in it and the next batch
   * starts afresh.
   */
  append(row: LedgerRow, options: { spool?: boolean; generation?: string; events?: readonly OutboxEvent[] } = {}): Promise<AppendResult> {
    const invalid = invalidLedgerField(row);
    if (invalid) return Promise.reject(new TypeError(`ledger row ${JSON.stringify(row.reservationId)}: invalid ${invalid}`));
    const events = options.events && options.events.length > 0 ? options.events : undefined;
    return new Promise((resolve, reject) => {
      this.queue.push({ row, spool: options.spool ?? true, generation: options.generation, events, resolve, reject });
      this.flushing ??= this.flushLoop();
    });
  }

  /** Rows waiting in the spool for the database. */
  spoolPending(): boolean {
    return this.options.spool?.pending() ?? false;
  }

  /**
   * Writes spooled rows to the database (idempotently); returns how many. `inserted`
   * hears of the rows that were new, as each batch commits.
   */
  async replaySpool(inserted?: (rows: ReplayedRow[]) => void): Promise<number> {
    if (!this.options.spool?.pending()) return 0;
    const n = await this.options.spool.replay(async (rows: SpooledRow[]) => {
      const written = await this.insert(rows.map(({ events: _, ...row }) => row), eventsOf(rows));
      const replayed = rows.flatMap(({ generation, events: _, ...row }) => {
        const xid = written.get(row.reservationId);
        written.delete(row.reservationId); // a reservation spooled twice was inserted once
        return xid === undefined ? [] : [{ row, xid, generation }];
      });
      if (replayed.length > 0) inserted?.(replayed);
    });
    if (n > 0) this.options.logger.info({ rows: n }, "ledger spool replayed");
    return n;
  }

  private async flushLoop(): Promise<void> {
    try {
      // Before each batch, let the I/O that arrived meanwhile (more settles) run and join it:
      // without this turn, batches written back to back from microtasks carry a row or two each.
      do {
        await new Promise<void>((r) => setImmediate(r));
        const waitMs = this.paceMs() - (performance.now() - this.lastBatchStartedMs);
        if (waitMs > 0 && this.queue.length < this.maxBatchRows) await new Promise<void>((r) => setTimeout(r, waitMs));
        const started = performance.now();
        this.lastBatchStartedMs = started;
        const batch = this.queue.splice(0, this.maxBatchRows);
        this.lastBatchRows = batch.length;
        await this.writeBatch(batch);
        this.lastBatchMs = performance.now() - started;
      } while (this.queue.length > 0);
    } finally {
      this.flushing = undefined;
    }
  }

  /** How long after the previous batch's start the next may start: 0 unless settles arrive concurrently. */
  private paceMs(): number {
    if (this.minBatchIntervalMs === 0 || this.lastBatchRows <= 1) return 0;
    return Math.max(this.minBatchIntervalMs, Math.min(maxPaceMs, 10 * this.lastBatchMs));
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    const first = new Map<string, Pending>();
    const repeats: Pending[] = [];
    for (const p of batch) {
      if (first.has(p.row.reservationId)) repeats.push(p);
      else first.set(p.row.reservationId, p);
    }
    let written: Map<string, string>;
    try {
      written = await this.insert([...first.values()].map((p) => p.row), eventsOf([...first.values()].map((p) => ({ reservationId: p.row.reservationId, events: p.events }))));
    } catch (err) {
      this.options.logger.error({ err: String(err), rows: batch.length }, "ledger batch failed");
      await this.spoolOrReject(batch, err);
      return;
    }
    for (const p of first.values()) {
      const xid = written.get(p.row.reservationId);
      p.resolve(xid === undefined ? { inserted: false } : { inserted: true, xid });
    }
    for (const p of repeats) p.resolve({ inserted: false });
  }

  private async spoolOrReject(batch: Pending[], err: unknown): Promise<void> {
    const spool = this.options.spool;
    // Only an unreachable database is worth spooling: a statement the server refused would fail again on replay.
    const spoolable = spool && !refusedByServer(err) ? batch.filter((p) => p.spool) : [];
    for (const p of batch) if (!spoolable.includes(p)) p.reject(err);
    if (spoolable.length === 0) return;
    try {
      await spool!.append(spoolable.map((p) => ({ ...p.row, ...(p.generation === undefined ? {} : { generation: p.generation }), ...(p.events ? { events: p.events } : {}) })));
      for (const p of spoolable) p.resolve({ inserted: true, spooled: true });
    } catch (spoolErr) {
      this.options.logger.error({ err: String(spoolErr) }, "ledger spool write failed");
      for (const p of spoolable) p.reject(err);
    }
  }

  /**
   * One multi-row INSERT (one statement, so one commit); returns the new reservation ids and
   * their transaction. Rows carrying webhook events are written in one transaction with the
   * events of the rows that were new (a repeated settle raises nothing again).
   */
  private async insert(rows: readonly LedgerRow[], events?: ReadonlyMap<string, readonly OutboxEvent[]>): Promise<Map<string, string>> {
    const started = performance.now();
    const written = events
      ? await this.options.db.transaction(async (tx) => {
          const inserted = await insertLedgerRows(tx, rows);
          await insertOutboxEvents(tx, [...inserted.keys()].flatMap((id) => events.get(id) ?? []));
          return inserted;
        })
      : await insertLedgerRows(this.options.db, rows);
    if (events) {
      try {
        this.options.onEventsCommitted?.();
      } catch (err) {
        this.options.logger.warn({ err }, "onEventsCommitted threw");
      }
    }
    try {
      this.options.onBatchWritten?.(rows.length, performance.now() - started);
    } catch (err) {
      this.options.logger.warn({ err }, "onBatchWritten threw");
    }
    return written;
  }

  /**
   * The transaction that wrote a reservation's row: undefined when there is no row
   * (yet: it may sit in the spool), null for a row older than this column.
   */
  async xidOf(reservationId: string): Promise<string | null | undefined> {
    const { rows } = await this.options.db.query<{ xid: string | null }>(
      "SELECT xid::text AS xid FROM usage_ledger WHERE reservation_id = $1 ORDER BY id LIMIT 1",
      [reservationId],
    );
    return rows.length === 0 ? undefined : rows[0]!.xid;
  }

  /** The row recorded for a reservation (the first one, should several reserved times exist). */
  async find(reservationId: string): Promise<LedgerRow | undefined> {
    const { rows } = await this.options.db.query<Record<string, unknown>>(
      `SELECT ${columns} FROM usage_ledger WHERE reservation_id = $1 ORDER BY id LIMIT 1`,
      [reservationId],
    );
    return rows[0] ? fromDb(rows[0]) : undefined;
  }

  /** A tenant's usage over [startMs, endMs), in total and per group; exact (one statement, one snapshot). */
  async usage(filter: UsageFilter): Promise<UsageReport> {
    const where = ["tenant = $1", "reserved_at >= $2", "reserved_at < $3"];
    const params: unknown[] = [filter.tenant, new Date(filter.startMs).toISOString(), new Date(filter.endMs).toISOString()];
    for (const [column, value] of [["user_id", filter.user], ["task", filter.task], ["model", filter.model]] as const) {
      if (value === undefined) continue;
      params.push(value);
      where.push(`${column} = $${params.length}`);
    }
    const groupBy = [...new Set(filter.groupBy ?? [])];
    if (groupBy.length === 0) {
      const { rows } = await this.options.db.query<Record<string, unknown>>(`SELECT ${sums} FROM usage_ledger WHERE ${where.join(" AND ")}`, params);
      return { totals: totalsOf(rows[0] ?? {}), rows: [] };
    }
    const dims = groupBy.map((_, i) => `g${i}`);
    // GROUPING SETS: the groups and the grand total from the same snapshot; the total row has grouping() = 1.
    const { rows } = await this.options.db.query<Record<string, unknown>>(
      `SELECT ${dims.join(", ")}, grouping(${dims[0]}) AS is_total, ${sums}
       FROM (SELECT ${groupBy.map((d, i) => `${dimensionSql[d]} AS g${i}`).join(", ")}, ${summed.join(", ")}
             FROM usage_ledger WHERE ${where.join(" AND ")}) AS picked
       GROUP BY GROUPING SETS ((${dims.join(", ")}), ())
       ORDER BY is_total, ${dims.map((g) => `${g} COLLATE "C"`).join(", ")}`,
      params,
    );
    let totals: UsageTotals = totalsOf({});
    const groups: UsageReport["rows"] = [];
    for (const r of rows) {
      if (toNumber(r.is_total) === 1) totals = totalsOf(r);
      else groups.push({ group: Object.fromEntries(groupBy.map((d, i) => [d, String(r[`g${i}`])])), totals: totalsOf(r) });
    }
    return { totals, rows: groups };
  }

  /** Totals per tenant over [startMs, endMs) in one statement; `tenants` narrows it (undefined: every tenant). Tenants without rows are absent. */
  async usageByTenant(filter: { readonly tenants?: readonly string[]; readonly startMs: number; readonly endMs: number }): Promise<Map<string, UsageTotals>> {
    const params: unknown[] = [new Date(filter.startMs).toISOString(), new Date(filter.endMs).toISOString()];
    if (filter.tenants) params.push(filter.tenants);
    const { rows } = await this.options.db.query<Record<string, unknown>>(
      `SELECT tenant, ${sums} FROM usage_ledger WHERE reserved_at >= $1 AND reserved_at < $2${filter.tenants ? " AND tenant = ANY($3)" : ""} GROUP BY tenant`,
      params,
    );
    return new Map(rows.map((r) => [String(r.tenant), totalsOf(r)]));
  }

  /**
   * What counters are rebuilt from: for each of `sinceMs` (window starts), the sums by
   * tenant, subject and task of the rows of `tenants` reserved at or after it — one
   * statement, so one snapshot, which is returned with them. For each of `creditTenants`
   * (prepaid ones) also the all-time spend and the sum of grants, in that same statement.
   */
  async rebuildSums(tenants: readonly string[], sinceMs: readonly number[], creditTenants: readonly string[] = []): Promise<RebuildSums> {
    if (sinceMs.length === 0) throw new RangeError("rebuildSums needs at least one window start");
    const params: unknown[] = [tenants, ...sinceMs.map((ms) => new Date(ms).toISOString()), creditTenants];
    const creditParam = `$${params.length}`;
    const oldest = 2 + sinceMs.indexOf(Math.min(...sinceMs));
    const perWindow = sinceMs.map((_, i) => {
      const since = `FILTER (WHERE reserved_at >= $${i + 2})`;
      return `count(*) ${since} AS r${i}, coalesce(sum(input_tokens + output_tokens) ${since}, 0) AS t${i}, coalesce(sum(cost_micros) ${since}, 0) AS c${i}`;
    });
    // The outer join keeps one row (and so the snapshot) when the tenant has no rows at all.
    const { rows } = await this.options.db.query<Record<string, unknown>>(
      `SELECT pg_current_snapshot()::text AS snapshot, (${creditSumsSql(creditParam)}) AS credits, s.*
       FROM (SELECT 1) AS one LEFT JOIN (
         SELECT tenant, user_id, key_id, task, ${perWindow.join(", ")}
         FROM usage_ledger WHERE tenant = ANY($1::text[]) AND reserved_at >= $${oldest}
         GROUP BY tenant, user_id, key_id, task
         ORDER BY tenant COLLATE "C", user_id COLLATE "C", key_id COLLATE "C", task COLLATE "C") AS s ON true`,
      params,
    );
    const sums = sinceMs.map((_, i) =>
      rows
        .filter((r) => r.user_id !== null && toNumber(r[`r${i}`]) > 0)
        .map((r) => ({
          tenant: String(r.tenant), user: String(r.user_id), keyId: String(r.key_id), task: String(r.task),
          requests: toNumber(r[`r${i}`]), tokens: toNumber(r[`t${i}`]), costMicros: toNumber(r[`c${i}`]),
        })),
    );
    const credits = new Map((JSON.parse(String(rows[0]!.credits)) as Array<[string, string, string]>)
      .map(([tenant, spent, granted]) => [tenant, { spentMicros: Number(spent), grantedMicros: Number(granted) }]));
    return { snapshot: String(rows[0]!.snapshot), sums, credits };
  }

  /**
   * Creates the monthly partitions (UTC) for the month of `nowMs` and the next
   * two, plus one for every month that has rows in the default partition
   * (rows reserved in a month that had no partition yet): those rows move
   * into it, so retention can drop them with their month. Safe to run on
   * several replicas at once.
   */
  async ensurePartitions(nowMs: number): Promise<void> {
    const now = new Date(nowMs);
    const created = await this.options.db.transaction(async (tx) => {
      await tx.query("SELECT pg_advisory_xact_lock($1)", [partitionLockKey]);
      const existing = new Set((await partitionsOf(tx)).map((p) => p.name));
      const months = new Map<string, Date>();
      for (let i = 0; i <= monthsAhead; i++) {
        const from = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + i, 1));
        if (!existing.has(partitionName(from))) months.set(partitionName(from), from);
      }
      const { rows: anyStray } = await tx.query("SELECT 1 FROM usage_ledger_default LIMIT 1");
      if (months.size === 0 && anyStray.length === 0) return [];
      // Creating a partition locks usage_ledger anyway; taking it first, as an INSERT does, cannot deadlock with one,
      // and no row can reach the default partition while we move rows out of it.
      await tx.query("LOCK TABLE ONLY usage_ledger IN ACCESS EXCLUSIVE MODE");
      const stray = new Set<string>();
      const { rows } = await tx.query<{ month: string }>("SELECT DISTINCT to_char(reserved_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month FROM usage_ledger_default");
      for (const { month } of rows) {
        const from = new Date(`${month}-01T00:00:00Z`);
        stray.add(partitionName(from));
        if (!existing.has(partitionName(from))) months.set(partitionName(from), from);
      }
      for (const [name, from] of months) {
        const to = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth() + 1, 1));
        const bounds = `FROM ('${from.toISOString()}') TO ('${to.toISOString()}')`;
        if (stray.has(name)) {
          await tx.query(`CREATE TABLE ${name} (LIKE usage_ledger INCLUDING DEFAULTS)`);
          await tx.query(
            `WITH moved AS (DELETE FROM usage_ledger_default WHERE reserved_at >= $1 AND reserved_at < $2 RETURNING *)
             INSERT INTO ${name} SELECT * FROM moved`,
            [from.toISOString(), to.toISOString()],
          );
          await tx.query(`ALTER TABLE usage_ledger ATTACH PARTITION ${name} FOR VALUES ${bounds}`);
        } else {
          await tx.query(`CREATE TABLE ${name} PARTITION OF usage_ledger FOR VALUES ${bounds}`);
        }
      }
      return [...months.keys()];
    });
    if (created.length > 0) this.options.logger.info({ partitions: created }, "ledger partitions created");
  }

  /**
   * Retention: drops the monthly partitions that end at or before
   * `monthStartMs` and deletes older rows left in the default partition.
   * Returns how many partitions were dropped.
   */
  async dropPartitionsBefore(monthStartMs: number): Promise<number> {
    const dropped = await this.options.db.transaction(async (tx) => {
      await tx.query("SELECT pg_advisory_xact_lock($1)", [partitionLockKey]);
      const names = (await partitionsOf(tx)).filter((p) => p.endMs <= monthStartMs).map((p) => p.name);
      // Parent first, as an INSERT locks them.
      if (names.length > 0) await tx.query("LOCK TABLE ONLY usage_ledger IN ACCESS EXCLUSIVE MODE");
      // Each tenant's cost of the rows dropped stays in the rollups, in this transaction:
      // a prepaid tenant's all-time spend (its credit balance) is the same before and after.
      for (const name of names) {
        await tx.query(`INSERT INTO ledger_cost_rollups (tenant, month, cost_micros) ${monthlyCostSql(`SELECT tenant, reserved_at, cost_micros FROM ${name}`)}`);
        await tx.query(`DROP TABLE ${name}`);
      }
      await tx.query(
        `WITH gone AS (DELETE FROM usage_ledger_default WHERE reserved_at < $1 RETURNING tenant, reserved_at, cost_micros)
         INSERT INTO ledger_cost_rollups (tenant, month, cost_micros) ${monthlyCostSql("SELECT * FROM gone")}`,
        [new Date(monthStartMs).toISOString()],
      );
      return names;
    });
    if (dropped.length > 0) this.options.logger.info({ partitions: dropped }, "ledger partitions dropped");
    return dropped.length;
  }

  /** Waits for everything queued to be written. */
  async close(): Promise<void> {
    while (this.flushing) await this.flushing;
  }
}

/**
 * Per tenant of the text[] parameter `param`: [tenant, all-time spend, sum of grants] as a
 * JSON array (decimal strings: exact), for rebuildSums and credit balances.
 */
export function creditSumsSql(param: string): string {
  return `SELECT coalesce(json_agg(json_build_array(c.t, c.spent::text, c.granted::text)), '[]'::json)::text FROM (
    SELECT t,
      (SELECT coalesce(sum(cost_micros), 0) FROM usage_ledger WHERE tenant = t)
        + (SELECT coalesce(sum(cost_micros), 0) FROM ledger_cost_rollups WHERE tenant = t) AS spent,
      (SELECT coalesce(sum(amount_micros), 0) FROM credit_grants WHERE tenant = t) AS granted
    FROM unnest(${param}::text[]) AS t) AS c`;
}

/** The per tenant and month (UTC) cost of the rows `rows` selects (tenant, reserved_at, cost_micros), added to what the rollups hold. */
function monthlyCostSql(rows: string): string {
  return `SELECT tenant, date_trunc('month', reserved_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', sum(cost_micros) FROM (${rows}) AS r GROUP BY 1, 2
    ON CONFLICT (tenant, month) DO UPDATE SET cost_micros = ledger_cost_rollups.cost_micros + EXCLUDED.cost_micros`;
}

/** The webhook events rows carry, by reservation id; undefined when none does (the plain INSERT, no transaction). */
function eventsOf(rows: ReadonlyArray<{ readonly reservationId: string; readonly events?: readonly OutboxEvent[] }>): Map<string, readonly OutboxEvent[]> | undefined {
  let events: Map<string, readonly OutboxEvent[]> | undefined;
  for (const r of rows) if (r.events && r.events.length > 0) (events ??= new Map()).set(r.reservationId, r.events);
  return events;
}

/** The monthly partitions of usage_ledger (not the default one). */
async function partitionsOf(tx: Queryable): Promise<Array<{ name: string; endMs: number }>> {
  const { rows } = await tx.query<{ relname: string }>(
    `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
     WHERE p.relname = 'usage_ledger' AND p.relnamespace = current_schema()::regnamespace`,
  );
  return rows.flatMap(({ relname }) => {
    const m = partitionPattern.exec(relname);
    return m ? [{ name: relname, endMs: Date.UTC(Number(m[1]), Number(m[2]), 1) }] : [];
  });
}

function partitionName(monthStart: Date): string {
  return `usage_ledger_y${monthStart.getUTCFullYear()}m${String(monthStart.getUTCMonth() + 1).padStart(2, "0")}`;
}

/** The field that makes a row unstorable, if any (checked before it can spoil a batch, or when a spooled row is read back). */
export function invalidLedgerField(row: LedgerRow): string | undefined {
  for (const field of ["reservationId", "requestId", "tenant", "user", "keyId", "task", "model", "provider", "outcome"] as const) {
    const v = row[field];
    // PostgreSQL text cannot hold NUL.
    if (typeof v !== "string" || v.includes("\u0000")) return field;
  }
  if (row.reservationId === "") return "reservationId";
  for (const field of ["inputTokens", "outputTokens", "cacheReadTokens", "cacheWriteTokens", "reasoningTokens", "costMicros"] as const) {
    if (!Number.isSafeInteger(row[field]) || row[field] < 0) return field;
  }
  if (row.cacheReadTokens + row.cacheWriteTokens > row.inputTokens) return "cacheReadTokens";
  if (row.reasoningTokens > row.outputTokens) return "reasoningTokens";
  if (typeof row.estimated !== "boolean") return "estimated";
  if (!Number.isFinite(row.latencyMs)) return "latencyMs";
  for (const field of ["reservedAtMs", "settledAtMs"] as const) {
    if (!Number.isFinite(row[field]) || Number.isNaN(new Date(row[field]).getTime())) return field;
  }
  return undefined;
}

/**
 * Whether the committed transaction `xid` is visible in `snapshot` (pg_snapshot text
 * "xmin:xmax:xip,…"), i.e. had committed when the snapshot was taken: below xmin, or
 * below xmax and not in progress then. A row without an xid predates every snapshot.
 */
export function visibleIn(snapshot: string, xid: string | null): boolean {
  if (xid === null) return true;
  const [xmin, xmax, xip] = snapshot.split(":");
  const x = BigInt(xid);
  if (x < BigInt(xmin!)) return true;
  if (x >= BigInt(xmax!)) return false;
  return !(xip ?? "").split(",").some((p) => p !== "" && BigInt(p) === x);
}

function clampLatencyMs(ms: number): number {
  return Math.min(Math.max(Math.round(ms), 0), int4Max);
}

/** Whether the server answered with an error about the statement or its data (SQLSTATE classes 22, 23, 42): no use spooling it. */
export function refusedByServer(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^(22|23|42)[0-9A-Z]{3}$/.test(code);
}

function totalsOf(r: Record<string, unknown>): UsageTotals {
  return {
    requests: toNumber(r.requests ?? 0), inputTokens: toNumber(r.input_tokens ?? 0), outputTokens: toNumber(r.output_tokens ?? 0),
    cacheReadTokens: toNumber(r.cache_read_tokens ?? 0), cacheWriteTokens: toNumber(r.cache_write_tokens ?? 0), reasoningTokens: toNumber(r.reasoning_tokens ?? 0),
    costMicros: toNumber(r.cost_micros ?? 0),
  };
}

function fromDb(r: Record<string, unknown>): LedgerRow {
  return {
    reservationId: String(r.reservation_id), requestId: String(r.request_id), tenant: String(r.tenant), user: String(r.user_id),
    keyId: String(r.key_id), task: String(r.task), model: String(r.model), provider: String(r.provider),
    inputTokens: toNumber(r.input_tokens), outputTokens: toNumber(r.output_tokens), costMicros: toNumber(r.cost_micros),
    cacheReadTokens: toNumber(r.cache_read_tokens), cacheWriteTokens: toNumber(r.cache_write_tokens), reasoningTokens: toNumber(r.reasoning_tokens),
    outcome: String(r.outcome), estimated: Boolean(r.estimated), latencyMs: toNumber(r.latency_ms),
    reservedAtMs: new Date(r.reserved_at as string | Date).getTime(), settledAtMs: new Date(r.settled_at as string | Date).getTime(),
  };
}

/**
 * The ledger's INSERT of `rows` (one statement, so one commit; a prepared statement on
 * PostgreSQL), as the group commit sends each batch: returns the new reservation ids
 * and the transaction that wrote them (a repeated reservation is left out).
 */
export async function insertLedgerRows(db: Queryable, rows: readonly LedgerRow[]): Promise<Map<string, string>> {
  const { rows: inserted } = await db.query<{ reservation_id: string; xid: string }>(
    `INSERT INTO usage_ledger (${columns}, xid)
     SELECT *, pg_current_xact_id() FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                          $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::boolean[], $14::integer[],
                          $15::timestamptz[], $16::timestamptz[], $17::bigint[], $18::bigint[], $19::bigint[])
     ON CONFLICT (reservation_id, reserved_at) DO NOTHING
     RETURNING reservation_id, xid::text AS xid`,
    [
      rows.map((r) => r.reservationId), rows.map((r) => r.requestId), rows.map((r) => r.tenant), rows.map((r) => r.user),
      rows.map((r) => r.keyId), rows.map((r) => r.task), rows.map((r) => r.model), rows.map((r) => r.provider),
      // Decimal strings: exact for any safe integer on both backends.
      rows.map((r) => String(r.inputTokens)), rows.map((r) => String(r.outputTokens)), rows.map((r) => String(r.costMicros)),
      rows.map((r) => r.outcome), rows.map((r) => r.estimated), rows.map((r) => clampLatencyMs(r.latencyMs)),
      rows.map((r) => new Date(r.reservedAtMs).toISOString()), rows.map((r) => new Date(r.settledAtMs).toISOString()),
      rows.map((r) => String(r.cacheReadTokens)), rows.map((r) => String(r.cacheWriteTokens)), rows.map((r) => String(r.reasoningTokens)),
    ],
    { prepareAs: "ledger_insert_v2" },
  );
  return new Map(inserted.map((r) => [r.reservation_id, r.xid]));
}

import { mkdirSync } from "node:fs";
import { PGlite, types as pgliteTypes } from "@electric-sql/pglite";
import pg from "pg";
import type { Logger } from "pino";
import { migrate } from "./migrations.js";

export interface QueryResult<R> {
  rows: R[];
  /** Rows returned, or rows changed by a statement without RETURNING (the same on both backends). */
  rowCount: number;
}

export interface QueryOptions {
  /**
   * A hot statement's name (one per SQL text): PostgreSQL parses and plans it once per
   * connection instead of on every call (the ledger's INSERT: about half of the
   * server's CPU per statement). PGlite runs it as it would any other.
   */
  readonly prepareAs?: string;
}

export interface Queryable {
  query<R = Record<string, unknown>>(sql: string, params?: unknown[], options?: QueryOptions): Promise<QueryResult<R>>;
}

/** The connection of one transaction: parameterised queries, plus multi-statement scripts (migrations). */
export interface Transaction extends Queryable {
  exec(sql: string): Promise<void>;
}

export interface ListenOptions {
  /**
   * Called after the LISTEN connection was lost and is back: notifications
   * sent meanwhile are gone, so re-read whatever they announce. (PostgreSQL
   * only; PGlite runs in-process and has no connection to lose.)
   */
  readonly onReconnect?: () => void;
}

/**
 * PostgreSQL through `pg` in production, PGlite (embedded PostgreSQL) by
 * default: same SQL, same migrations, same results. int8 columns come back as
 * a `number` when it is a safe integer and as a decimal string otherwise;
 * numeric (e.g. `sum(bigint)`) comes back as a decimal string: convert with
 * `toNumber`, which refuses to round.
 */
export interface Database extends Queryable {
  readonly kind: "pglite" | "postgres";
  /** BEGIN … COMMIT around `fn`; ROLLBACK when it throws. Never call `db.query` inside `fn`: use `tx`. */
  transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T>;
  /** LISTEN on a channel (lower-case SQL identifier); returns the unsubscribe function. */
  listen(channel: string, onPayload: (payload: string) => void, options?: ListenOptions): Promise<() => Promise<void>>;
  notify(channel: string, payload: string): Promise<void>;
  /** Resolves when the database answers a query (for /readyz). */
  ping(): Promise<void>;
  /** Idempotent. */
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** postgres://… ; unset: PGlite in dataDir. */
  readonly url?: string;
  /** PGlite directory, created if missing; "memory://" keeps it in memory. */
  readonly dataDir?: string;
  readonly logger: Logger;
  /** PostgreSQL pool size (default 10). */
  readonly poolSize?: number;
}

/** Opens the database and applies pending migrations before returning. */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  const db = options.url
    ? new PostgresDatabase(options.url, options.logger, options.poolSize ?? 10)
    : await PgliteDatabase.open(options.dataDir ?? "./.data");
  try {
    await migrate(db, options.logger);
  } catch (err) {
    await db.close();
    throw err;
  }
  return db;
}

/** The int8 parser of both backends: a number when it is exact, else the decimal string. */
export function parseInt8(text: string): number | string {
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : text;
}

/**
 * An integer-valued column (int8, numeric sums, counts) as a number; throws
 * rather than round beyond 2^53. null (an empty sum) is 0.
 */
export function toNumber(value: unknown): number {
  if (value == null) return 0;
  if (typeof value === "number") return value;
  if (typeof value === "bigint" || typeof value === "string") {
    const n = Number(value);
    if (Number.isNaN(n)) throw new Error(`"${String(value)}" is not a number`);
    if (Number.isInteger(n) && !Number.isSafeInteger(n)) throw new Error(`value ${String(value)} is beyond 2^53`);
    return n;
  }
  throw new Error(`cannot read ${typeof value} as a number`);
}

const channelPattern = /^[a-z_][a-z0-9_]{0,62}$/;

function checkChannel(channel: string): void {
  // Lower-case identifiers mean the same unquoted on PGlite and quoted or not on pg.
  if (!channelPattern.test(channel)) throw new Error(`channel "${channel}" must be a lower-case SQL identifier`);
}

class PgliteDatabase implements Database {
  readonly kind = "pglite" as const;
  private closing: Promise<void> | undefined;

  private constructor(private readonly db: PGlite) {}

  static async open(dataDir: string): Promise<PgliteDatabase> {
    const inMemory = dataDir === "memory://";
    if (!inMemory) mkdirSync(dataDir, { recursive: true });
    const db = await PGlite.create({ dataDir: inMemory ? undefined : dataDir, parsers: { [pgliteTypes.INT8]: parseInt8 } });
    return new PgliteDatabase(db);
  }

  // PGlite is one connection: query() waits for a running transaction() to finish.
  async query<R>(sql: string, params: unknown[] = []): Promise<QueryResult<R>> {
    return resultOf(await this.db.query<R>(sql, params));
  }

  transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    return this.db.transaction(async (tx) =>
      fn({
        query: async <R>(sql: string, params: unknown[] = []) => resultOf(await tx.query<R>(sql, params)),
        exec: async (sql: string) => {
          await tx.exec(sql);
        },
      }),
    );
  }

  async listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>> {
    checkChannel(channel);
    const unlisten = await this.db.listen(channel, onPayload);
    let done = false;
    return async () => {
      if (done || this.db.closed) return;
      done = true;
      await unlisten();
    };
  }

  async notify(channel: string, payload: string): Promise<void> {
    checkChannel(channel);
    await this.db.query("SELECT pg_notify($1, $2)", [channel, payload]);
  }

  async ping(): Promise<void> {
    await this.db.query("SELECT 1");
  }

  close(): Promise<void> {
    this.closing ??= this.db.closed ? Promise.resolve() : this.db.close();
    return this.closing;
  }
}

function resultOf<R>(r: { rows: R[]; affectedRows?: number }): QueryResult<R> {
  // PGlite reports affectedRows 0 for a SELECT; pg counts the rows returned.
  return { rows: r.rows, rowCount: r.affectedRows ? r.affectedRows : r.rows.length };
}

const applicationName = "admission-control-plane";

/** pg's parsers with int8 parsed as on PGlite. */
const pgTypes = {
  getTypeParser: ((oid: number, format?: string) => (oid === 20 && format !== "binary" ? parseInt8 : pg.types.getTypeParser(oid, format as "text"))) as pg.CustomTypesConfig["getTypeParser"],
};

class PostgresDatabase implements Database {
  readonly kind = "postgres" as const;
  private readonly pool: pg.Pool;
  private readonly notifier: PgNotifier;
  private closing: Promise<void> | undefined;

  constructor(url: string, private readonly logger: Logger, poolSize: number) {
    this.pool = new pg.Pool({ connectionString: url, max: poolSize, connectionTimeoutMillis: 5_000, application_name: applicationName, types: pgTypes });
    // An idle client whose server went away must not crash the process.
    this.pool.on("error", (err) => logger.warn({ err: err.message }, "idle PostgreSQL client error"));
    this.notifier = new PgNotifier(url, logger);
  }

  async query<R>(sql: string, params: unknown[] = [], options?: QueryOptions): Promise<QueryResult<R>> {
    const r = await this.pool.query(options?.prepareAs ? { name: options.prepareAs, text: sql, values: params } : { text: sql, values: params });
    return { rows: r.rows as R[], rowCount: r.rowCount ?? r.rows.length };
  }

  async transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await client.query("BEGIN");
      const result = await fn({
        query: async <R>(sql: string, params: unknown[] = []) => {
          const r = await client.query(sql, params);
          return { rows: r.rows as R[], rowCount: r.rowCount ?? r.rows.length };
        },
        exec: async (sql: string) => {
          await client.query(sql); // no parameters: the simple protocol, which runs several statements
        },
      });
      await client.query("COMMIT");
      return result;
    } catch (err) {
      await client.query("ROLLBACK").catch((rollbackErr: Error) => {
        broken = rollbackErr; // the connection is unusable: destroy it rather than pool it
      });
      throw err;
    } finally {
      client.release(broken);
    }
  }

  listen(channel: string, onPayload: (payload: string) => void, options: ListenOptions = {}): Promise<() => Promise<void>> {
    checkChannel(channel);
    return this.notifier.subscribe(channel, { onPayload, onReconnect: options.onReconnect });
  }

  async notify(channel: string, payload: string): Promise<void> {
    checkChannel(channel);
    await this.pool.query("SELECT pg_notify($1, $2)", [channel, payload]);
  }

  async ping(): Promise<void> {
    await this.pool.query("SELECT 1");
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.notifier.close();
      await this.pool.end();
    })();
    return this.closing;
  }
}

interface Subscriber {
  readonly onPayload: (payload: string) => void;
  readonly onReconnect?: () => void;
}

const firstRetryMs = 250;
const maxRetryMs = 10_000;

/**
 * One dedicated connection carrying every LISTEN of a database. When the
 * server drops it (restart, failover, terminated backend) it reconnects with
 * exponential backoff, LISTENs again and tells subscribers they may have
 * missed notifications. Operations run one at a time.
 */
class PgNotifier {
  private readonly channels = new Map<string, Set<Subscriber>>();
  private client: pg.Client | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs = firstRetryMs;
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly url: string, private readonly logger: Logger) {}

  subscribe(channel: string, subscriber: Subscriber): Promise<() => Promise<void>> {
    return this.serial(async () => {
      if (this.closed) throw new Error("database is closed");
      let subscribers = this.channels.get(channel);
      const first = !subscribers;
      if (!subscribers) this.channels.set(channel, (subscribers = new Set()));
      subscribers.add(subscriber);
      try {
        if (this.client) {
          if (first) await this.client.query(`LISTEN ${channel}`);
        } else if (!this.retryTimer) {
          await this.connect();
        } // else: reconnecting; the channel is LISTENed when the connection is back
      } catch (err) {
        this.remove(channel, subscriber);
        throw err;
      }
      let done = false;
      return async () => {
        if (done) return;
        done = true;
        await this.serial(() => this.unsubscribe(channel, subscriber));
      };
    });
  }

  close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    return this.serial(async () => {
      this.channels.clear();
      await this.disconnect();
    });
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.queue.then(op);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, application_name: `${applicationName}-listen`, connectionTimeoutMillis: 5_000, keepAlive: true });
    let lost = false;
    client.on("notification", (msg) => this.dispatch(msg.channel, msg.payload ?? ""));
    client.on("error", (err) => {
      lost = true;
      this.lost(client, err);
    });
    client.on("end", () => {
      lost = true;
      this.lost(client);
    });
    try {
      await client.connect();
      for (const channel of this.channels.keys()) await client.query(`LISTEN ${channel}`);
      if (lost) throw new Error("LISTEN connection lost while connecting");
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    this.client = client;
    this.retryMs = firstRetryMs;
  }

  private async disconnect(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }

  private dispatch(channel: string, payload: string): void {
    for (const subscriber of [...(this.channels.get(channel) ?? [])]) {
      try {
        subscriber.onPayload(payload);
      } catch (err) {
        this.logger.error({ err, channel }, "notification handler threw");
      }
    }
  }

  private lost(client: pg.Client, err?: Error): void {
    if (this.client !== client) return;
    this.client = undefined;
    client.end().catch(() => undefined);
    if (this.closed) return;
    this.logger.warn({ err: err?.message, channels: [...this.channels.keys()] }, "LISTEN connection lost; reconnecting");
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.retryTimer || this.channels.size === 0) return;
    const delayMs = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, maxRetryMs);
    this.retryTimer = setTimeout(() => {
      void this.serial(async () => {
        this.retryTimer = undefined;
        if (this.closed || this.client || this.channels.size === 0) return;
        try {
          await this.connect();
        } catch (err) {
          this.logger.warn({ err: String(err), retryMs: this.retryMs }, "LISTEN reconnect failed");
          this.scheduleReconnect();
          return;
        }
        this.logger.info({ channels: [...this.channels.keys()] }, "LISTEN connection restored");
        for (const subscribers of this.channels.values()) {
          for (const s of subscribers) {
            try {
              s.onReconnect?.();
            } catch (err) {
              this.logger.error({ err }, "reconnect handler threw");
            }
          }
        }
      });
    }, delayMs);
    this.retryTimer.unref();
  }

  private async unsubscribe(channel: string, subscriber: Subscriber): Promise<void> {
    const emptied = this.remove(channel, subscriber);
    if (emptied && this.client) await this.client.query(`UNLISTEN ${channel}`).catch(() => undefined);
    if (this.channels.size === 0) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      await this.disconnect();
    }
  }

  /** Returns whether the channel has no subscriber left. */
  private remove(channel: string, subscriber: Subscriber): boolean {
    const subscribers = this.channels.get(channel);
    subscribers?.delete(subscriber);
    if (subscribers && subscribers.size > 0) return false;
    this.channels.delete(channel);
    return true;
  }
}

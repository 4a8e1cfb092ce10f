import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import type { Logger } from "pino";
import { migrate } from "./migrations.js";

export interface QueryResult<R> {
  rows: R[];
  rowCount: number;
}

export interface Queryable {
  query<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<QueryResult<R>>;
}

/** PostgreSQL through `pg` in production, PGlite (embedded PostgreSQL) by default: same SQL, same migrations. */
export interface Database extends Queryable {
  readonly kind: "pglite" | "postgres";
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** LISTEN on a channel; returns the unsubscribe function. */
  listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>>;
  notify(channel: string, payload: string): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** postgres://… ; unset: PGlite in dataDir. */
  readonly url?: string;
  /** PGlite directory; "memory://" keeps it in memory. */
  readonly dataDir?: string;
  readonly logger: Logger;
  readonly poolSize?: number;
}

/** Opens the database and applies migrations before returning. */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  const db = options.url ? new PostgresDatabase(options.url, options.logger, options.poolSize ?? 10) : await PgliteDatabase.open(options.dataDir ?? "./.data");
  try {
    await migrate(db);
  } catch (err) {
    await db.close();
    throw err;
  }
  return db;
}

/** int8 and numeric come back as strings from pg: callers convert explicitly and exactly. */
export function toNumber(value: unknown): number {
  if (typeof value === "number") return value;
  if (typeof value === "bigint" || typeof value === "string") {
    const n = Number(value);
    if (!Number.isSafeInteger(n) && Number.isInteger(n)) throw new Error(`value ${value} is beyond 2^53`);
    return n;
  }
  return value == null ? 0 : Number(value);
}

class PgliteDatabase implements Database {
  readonly kind = "pglite" as const;
  private constructor(private readonly db: PGlite) {}

  static async open(dataDir: string): Promise<PgliteDatabase> {
    if (dataDir !== "memory://") mkdirSync(dataDir, { recursive: true });
    const db = await PGlite.create(dataDir === "memory://" ? undefined : dataDir);
    return new PgliteDatabase(db);
  }

  async query<R>(sql: string, params: unknown[] = []): Promise<QueryResult<R>> {
    const r = await this.db.query<R>(sql, params);
    return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
  }

  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.db.transaction(async (tx) =>
      fn({
        query: async <R>(sql: string, params: unknown[] = []) => {
          const r = await tx.query<R>(sql, params);
          return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
        },
      }),
    );
  }

  async listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>> {
    return this.db.listen(channel, onPayload);
  }

  async notify(channel: string, payload: string): Promise<void> {
    await this.db.query("SELECT pg_notify($1, $2)", [channel, payload]);
  }

  async ping(): Promise<void> {
    await this.db.query("SELECT 1");
  }

  async close(): Promise<void> {
    if (!this.db.closed) await this.db.close();
  }
}

class PostgresDatabase implements Database {
  readonly kind = "postgres" as const;
  private readonly pool: pg.Pool;
  private readonly listeners = new Set<PgListener>();

  constructor(private readonly url: string, private readonly logger: Logger, poolSize: number) {
    this.pool = new pg.Pool({ connectionString: url, max: poolSize, connectionTimeoutMillis: 5_000 });
    // An idle client whose server went away must not crash the process.
    this.pool.on("error", (err) => logger.warn({ err: err.message }, "idle PostgreSQL client error"));
  }

  async query<R>(sql: string, params: unknown[] = []): Promise<QueryResult<R>> {
    const r = await this.pool.query(sql, params);
    return { rows: r.rows as R[], rowCount: r.rowCount ?? r.rows.length };
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      const result = await fn({
        query: async <R>(sql: string, params: unknown[] = []) => {
          const r = await client.query(sql, params);
          return { rows: r.rows as R[], rowCount: r.rowCount ?? r.rows.length };
        },
      });
      await client.query("COMMIT");
      return result;
    } catch (err) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>> {
    const listener = new PgListener(this.url, channel, onPayload, this.logger);
    this.listeners.add(listener);
    await listener.start();
    return async () => {
      this.listeners.delete(listener);
      await listener.stop();
    };
  }

  async notify(channel: string, payload: string): Promise<void> {
    await this.pool.query("SELECT pg_notify($1, $2)", [channel, payload]);
  }

  async ping(): Promise<void> {
    await this.pool.query("SELECT 1");
  }

  async close(): Promise<void> {
    await Promise.all([...this.listeners].map((l) => l.stop()));
    await this.pool.end();
  }
}

/** A dedicated connection for LISTEN that reconnects with backoff when the server restarts. */
class PgListener {
  private client: pg.Client | undefined;
  private stopped = false;
  private retryMs = 250;

  constructor(private readonly url: string, private readonly channel: string, private readonly onPayload: (p: string) => void, private readonly logger: Logger) {}

  async start(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url });
    client.on("notification", (msg) => {
      if (msg.channel === this.channel) this.onPayload(msg.payload ?? "");
    });
    client.on("error", (err) => {
      this.logger.warn({ err: err.message, channel: this.channel }, "LISTEN connection lost; reconnecting");
      this.reconnect(client);
    });
    client.on("end", () => this.reconnect(client));
    await client.connect();
    await client.query(`LISTEN "${this.channel.replace(/"/g, "")}"`);
    this.client = client;
    this.retryMs = 250;
  }

  private reconnect(failed: pg.Client): void {
    if (this.stopped || this.client !== failed) return;
    this.client = undefined;
    failed.end().catch(() => undefined);
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, 10_000);
    setTimeout(() => {
      if (this.stopped) return;
      this.start().catch((err) => {
        this.logger.warn({ err: String(err) }, "LISTEN reconnect failed");
        this.client = failed;
        this.reconnect(failed);
      });
    }, delay).unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }
}

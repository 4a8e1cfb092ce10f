import { mkdirSync } from "node:fs";
import { PGlite, types as pgliteTypes } from "@electric-sql/pglite";
import pg from "pg";
import { migrate } from "./migrations.js";
/** Opens the database and applies pending migrations before returning. */
export async function openDatabase(options) {
    const db = options.url
        ? new PostgresDatabase(options.url, options.logger, options.poolSize ?? 10)
        : await PgliteDatabase.open(options.dataDir ?? "./.data");
    try {
        await migrate(db, options.logger);
    }
    catch (err) {
        await db.close();
        throw err;
    }
    return db;
}
/** The int8 parser of both backends: a number when it is exact, else the decimal string. */
export function parseInt8(text) {
    const n = Number(text);
    return Number.isSafeInteger(n) ? n : text;
}
/**
 * An integer-valued column (int8, numeric sums, counts) as a number; throws
 * rather than round beyond 2^53. null (an empty sum) is 0.
 */
export function toNumber(value) {
    if (value == null)
        return 0;
    if (typeof value === "number")
        return value;
    if (typeof value === "bigint" || typeof value === "string") {
        const n = Number(value);
        if (Number.isNaN(n))
            throw new Error(`"${String(value)}" is not a number`);
        if (Number.isInteger(n) && !Number.isSafeInteger(n))
            throw new Error(`value ${String(value)} is beyond 2^53`);
        return n;
    }
    throw new Error(`cannot read ${typeof value} as a number`);
}
const channelPattern = /^[a-z_][a-z0-9_]{0,62}$/;
function checkChannel(channel) {
    // Lower-case identifiers mean the same unquoted on PGlite and quoted or not on pg.
    if (!channelPattern.test(channel))
        throw new Error(`channel "${channel}" must be a lower-case SQL identifier`);
}
class PgliteDatabase {
    db;
    kind = "pglite";
    closing;
    constructor(db) {
        this.db = db;
    }
    static async open(dataDir) {
        const inMemory = dataDir === "memory://";
        if (!inMemory)
            mkdirSync(dataDir, { recursive: true });
        const db = await PGlite.create({ dataDir: inMemory ? undefined : dataDir, parsers: { [pgliteTypes.INT8]: parseInt8 } });
        return new PgliteDatabase(db);
    }
    // PGlite is one connection: query() waits for a running transaction() to finish.
    async query(sql, params = []) {
        return resultOf(await this.db.query(sql, params));
    }
    transaction(fn) {
        return this.db.transaction(async (tx) => fn({
            query: async (sql, params = []) => resultOf(await tx.query(sql, params)),
            exec: async (sql) => {
                await tx.exec(sql);
            },
        }));
    }
    async listen(channel, onPayload) {
        checkChannel(channel);
        const unlisten = await this.db.listen(channel, onPayload);
        let done = false;
        return async () => {
            if (done || this.db.closed)
                return;
            done = true;
            await unlisten();
        };
    }
    async notify(channel, payload) {
        checkChannel(channel);
        await this.db.query("SELECT pg_notify($1, $2)", [channel, payload]);
    }
    async ping() {
        await this.db.query("SELECT 1");
    }
    close() {
        this.closing ??= this.db.closed ? Promise.resolve() : this.db.close();
        return this.closing;
    }
}
function resultOf(r) {
    // PGlite reports affectedRows 0 for a SELECT; pg counts the rows returned.
    return { rows: r.rows, rowCount: r.affectedRows ? r.affectedRows : r.rows.length };
}
const applicationName = "admission-control-plane";
/** pg's parsers with int8 parsed as on PGlite. */
const pgTypes = {
    getTypeParser: ((oid, format) => (oid === 20 && format !== "binary" ? parseInt8 : pg.types.getTypeParser(oid, format))),
};
class PostgresDatabase {
    logger;
    kind = "postgres";
    pool;
    notifier;
    closing;
    constructor(url, logger, poolSize) {
        this.logger = logger;
        this.pool = new pg.Pool({ connectionString: url, max: poolSize, connectionTimeoutMillis: 5_000, application_name: applicationName, types: pgTypes });
        // An idle client whose server went away must not crash the process.
        this.pool.on("error", (err) => logger.warn({ err: err.message }, "idle PostgreSQL client error"));
        this.notifier = new PgNotifier(url, logger);
    }
    async query(sql, params = [], options) {
        const r = await this.pool.query(options?.prepareAs ? { name: options.prepareAs, text: sql, values: params } : { text: sql, values: params });
        return { rows: r.rows, rowCount: r.rowCount ?? r.rows.length };
    }
    async transaction(fn) {
        const client = await this.pool.connect();
        let broken;
        try {
            await client.query("BEGIN");
            const result = await fn({
                query: async (sql, params = []) => {
                    const r = await client.query(sql, params);
                    return { rows: r.rows, rowCount: r.rowCount ?? r.rows.length };
                },
                exec: async (sql) => {
                    await client.query(sql); // no parameters: the simple protocol, which runs several statements
                },
            });
            await client.query("COMMIT");
            return result;
        }
        catch (err) {
            await client.query("ROLLBACK").catch((rollbackErr) => {
                broken = rollbackErr; // the connection is unusable: destroy it rather than pool it
            });
            throw err;
        }
        finally {
            client.release(broken);
        }
    }
    listen(channel, onPayload, options = {}) {
        checkChannel(channel);
        return this.notifier.subscribe(channel, { onPayload, onReconnect: options.onReconnect });
    }
    async notify(channel, payload) {
        checkChannel(channel);
        await this.pool.query("SELECT pg_notify($1, $2)", [channel, payload]);
    }
    async ping() {
        await this.pool.query("SELECT 1");
    }
    close() {
        this.closing ??= (async () => {
            await this.notifier.close();
            await this.pool.end();
        })();
        return this.closing;
    }
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
    url;
    logger;
    channels = new Map();
    client;
    retryTimer;
    retryMs = firstRetryMs;
    closed = false;
    queue = Promise.resolve();
    constructor(url, logger) {
        this.url = url;
        this.logger = logger;
    }
    subscribe(channel, subscriber) {
        return this.serial(async () => {
            if (this.closed)
                throw new Error("database is closed");
            let subscribers = this.channels.get(channel);
            const first = !subscribers;
            if (!subscribers)
                this.channels.set(channel, (subscribers = new Set()));
            subscribers.add(subscriber);
            try {
                if (this.client) {
                    if (first)
                        await this.client.query(`LISTEN ${channel}`);
                }
                else if (!this.retryTimer) {
                    await this.connect();
                } // else: reconnecting; the channel is LISTENed when the connection is back
            }
            catch (err) {
                this.remove(channel, subscriber);
                throw err;
            }
            let done = false;
            return async () => {
                if (done)
                    return;
                done = true;
                await this.serial(() => this.unsubscribe(channel, subscriber));
            };
        });
    }
    close() {
        this.closed = true;
        clearTimeout(this.retryTimer);
        this.retryTimer = undefined;
        return this.serial(async () => {
            this.channels.clear();
            await this.disconnect();
        });
    }
    serial(op) {
        const run = this.queue.then(op);
        this.queue = run.catch(() => undefined);
        return run;
    }
    async connect() {
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
            for (const channel of this.channels.keys())
                await client.query(`LISTEN ${channel}`);
            if (lost)
                throw new Error("LISTEN connection lost while connecting");
        }
        catch (err) {
            await client.end().catch(() => undefined);
            throw err;
        }
        this.client = client;
        this.retryMs = firstRetryMs;
    }
    async disconnect() {
        const client = this.client;
        this.client = undefined;
        await client?.end().catch(() => undefined);
    }
    dispatch(channel, payload) {
        for (const subscriber of [...(this.channels.get(channel) ?? [])]) {
            try {
                subscriber.onPayload(payload);
            }
            catch (err) {
                this.logger.error({ err, channel }, "notification handler threw");
            }
        }
    }
    lost(client, err) {
        if (this.client !== client)
            return;
        this.client = undefined;
        client.end().catch(() => undefined);
        if (this.closed)
            return;
        this.logger.warn({ err: err?.message, channels: [...this.channels.keys()] }, "LISTEN connection lost; reconnecting");
        this.scheduleReconnect();
    }
    scheduleReconnect() {
        if (this.closed || this.retryTimer || this.channels.size === 0)
            return;
        const delayMs = this.retryMs;
        this.retryMs = Math.min(this.retryMs * 2, maxRetryMs);
        this.retryTimer = setTimeout(() => {
            void this.serial(async () => {
                this.retryTimer = undefined;
                if (this.closed || this.client || this.channels.size === 0)
                    return;
                try {
                    await this.connect();
                }
                catch (err) {
                    this.logger.warn({ err: String(err), retryMs: this.retryMs }, "LISTEN reconnect failed");
                    this.scheduleReconnect();
                    return;
                }
                this.logger.info({ channels: [...this.channels.keys()] }, "LISTEN connection restored");
                for (const subscribers of this.channels.values()) {
                    for (const s of subscribers) {
                        try {
                            s.onReconnect?.();
                        }
                        catch (err) {
                            this.logger.error({ err }, "reconnect handler threw");
                        }
                    }
                }
            });
        }, delayMs);
        this.retryTimer.unref();
    }
    async unsubscribe(channel, subscriber) {
        const emptied = this.remove(channel, subscriber);
        if (emptied && this.client)
            await this.client.query(`UNLISTEN ${channel}`).catch(() => undefined);
        if (this.channels.size === 0) {
            clearTimeout(this.retryTimer);
            this.retryTimer = undefined;
            await this.disconnect();
        }
    }
    /** Returns whether the channel has no subscriber left. */
    remove(channel, subscriber) {
        const subscribers = this.channels.get(channel);
        subscribers?.delete(subscriber);
        if (subscribers && subscribers.size > 0)
            return false;
        this.channels.delete(channel);
        return true;
    }
}
//# sourceMappingURL=database.js.map
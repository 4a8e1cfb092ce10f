import { toNumber } from "./database.js";
const batchRows = 500;
const maxPageSize = 1_000;
/**
 * Audit events (admin changes, denials, alerts, expiries): logged at once and
 * written to the store in the background, in batches. Recording never throws
 * and never waits for the database; a failed write is retried a bounded
 * number of times.
 */
export class AuditLog {
    options;
    queue = [];
    writing;
    clock;
    maxAttempts;
    retryDelayMs;
    maxQueued;
    constructor(options) {
        this.options = options;
        this.clock = options.clock ?? Date.now;
        this.maxAttempts = Math.max(1, options.maxAttempts ?? 5);
        this.retryDelayMs = options.retryDelayMs ?? 200;
        this.maxQueued = options.maxQueued ?? 50_000;
    }
    record(event) {
        try {
            const queued = {
                atMs: this.clock(),
                kind: clean(event.kind),
                actor: clean(event.actor),
                tenant: clean(event.tenant ?? ""),
                message: clean(event.message),
                attributes: Object.fromEntries(Object.entries(event.attributes ?? {}).map(([k, v]) => [clean(k), clean(v)])),
                attempts: 0,
            };
            this.options.logger.info({ audit: queued.kind, actor: queued.actor, tenant: queued.tenant || undefined, attributes: queued.attributes }, queued.message);
            if (this.queue.length >= this.maxQueued) {
                this.options.logger.error({ audit: queued.kind }, "audit queue full; event kept in the log only");
                return;
            }
            this.queue.push(queued);
            this.writing ??= this.drain();
        }
        catch (err) {
            try {
                this.options.logger.error({ err }, "audit event not recorded");
            }
            catch {
                // Recording an audit event must never fail the caller.
            }
        }
    }
    async drain() {
        // Let every event of the current tick join the first batch.
        await new Promise((r) => setImmediate(r));
        try {
            while (this.queue.length > 0) {
                const batch = this.queue.splice(0, batchRows);
                try {
                    await this.insert(batch);
                }
                catch (err) {
                    const retry = batch.filter((e) => ++e.attempts < this.maxAttempts);
                    const dropped = batch.length - retry.length;
                    this.options.logger.warn({ err: String(err), events: batch.length, retrying: retry.length }, "audit write failed");
                    if (dropped > 0)
                        this.options.logger.error({ events: dropped }, "audit events given up after retries; they remain in the log");
                    this.queue.unshift(...retry);
                    if (retry.length > 0)
                        await sleep(this.retryDelayMs * 2 ** Math.min(retry[0].attempts - 1, 6));
                }
            }
        }
        finally {
            this.writing = undefined;
        }
    }
    async insert(batch) {
        // WITH ORDINALITY … ORDER BY: ids follow the order events were recorded in.
        await this.options.db.query(`INSERT INTO audit_events (at, kind, actor, tenant, message, attributes)
       SELECT at, kind, actor, tenant, message, attributes
       FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[])
            WITH ORDINALITY AS e(at, kind, actor, tenant, message, attributes, n)
       ORDER BY n`, [
            batch.map((e) => new Date(e.atMs).toISOString()), batch.map((e) => e.kind), batch.map((e) => e.actor),
            batch.map((e) => e.tenant), batch.map((e) => e.message), batch.map((e) => JSON.stringify(e.attributes)),
        ]);
    }
    /** Resolves once every event recorded so far is written or given up. */
    async flush() {
        while (this.writing)
            await this.writing;
    }
    /** Newest first; includes every event recorded before the call. */
    async list(filter) {
        await this.flush();
        const where = [];
        const params = [];
        const add = (sql, value) => {
            params.push(value);
            where.push(sql.replace("?", `$${params.length}`));
        };
        if (filter.tenant)
            add("tenant = ?", filter.tenant);
        if (filter.kindPrefix)
            add("starts_with(kind, ?)", filter.kindPrefix);
        if (filter.sinceMs !== undefined)
            add("at >= ?", new Date(filter.sinceMs).toISOString());
        if (filter.beforeId !== undefined)
            add("id < ?", filter.beforeId);
        params.push(Math.min(Math.max(Math.trunc(filter.pageSize), 1), maxPageSize));
        const { rows } = await this.options.db.query(`SELECT id, at, kind, actor, tenant, message, attributes FROM audit_events
       ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT $${params.length}`, params);
        return rows.map((r) => ({
            id: toNumber(r.id),
            atMs: new Date(r.at).getTime(),
            kind: String(r.kind),
            actor: String(r.actor),
            tenant: String(r.tenant),
            message: String(r.message),
            attributes: (typeof r.attributes === "string" ? JSON.parse(r.attributes) : r.attributes),
        }));
    }
    /** Writes what is queued (with its retries), then returns. */
    async close() {
        await this.flush();
    }
}
/** Text PostgreSQL can store: any value as a string, without NUL. */
function clean(value) {
    return String(value).replaceAll("\u0000", "\uFFFD");
}
function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
}
//# sourceMappingURL=audit-log.js.map
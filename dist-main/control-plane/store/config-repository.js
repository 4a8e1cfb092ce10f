import { toNumber } from "./database.js";
/** The kinds of config entity; a user's id is "tenant/user". */
export const entityKinds = ["model", "task", "plan", "ati_token", "tenant", "user", "api_key"];
/** Another writer changed the config since the version this change was based on. */
export class ConflictError extends Error {
    expected;
    actual;
    constructor(expected, actual) {
        super(`config version is ${actual}, expected ${expected}`);
        this.expected = expected;
        this.actual = actual;
        this.name = "ConflictError";
    }
}
/** The NOTIFY channel announcing each new config version (payload: the version). */
export const configChannel = "admission_config";
/** Stores config entities with a version bumped by every change and announced with NOTIFY. */
export class ConfigRepository {
    options;
    constructor(options) {
        this.options = options;
    }
    /** The version and every entity, from one snapshot (one statement). */
    async load() {
        const { rows } = await this.options.db.query(`SELECT v.version, e.kind, e.id, e.body FROM policy_version v LEFT JOIN policy_entities e ON true
       ORDER BY e.kind COLLATE "C", e.id COLLATE "C"`);
        return {
            version: toNumber(rows[0]?.version),
            entities: rows.filter((r) => r.kind !== null).map((r) => ({ kind: r.kind, id: r.id, body: jsonObject(r.body) })),
        };
    }
    async version() {
        const { rows } = await this.options.db.query("SELECT version FROM policy_version");
        return toNumber(rows[0]?.version);
    }
    /**
     * In one transaction: upserts and deletes, bumps the version and NOTIFYs
     * it (delivered on commit, so listeners never hear of a change that rolled
     * back). Returns the new version.
     */
    async save(change) {
        for (const e of [...change.upserts, ...change.deletes]) {
            if (!entityKinds.includes(e.kind))
                throw new TypeError(`unknown entity kind "${e.kind}"`);
            if (typeof e.id !== "string" || e.id === "")
                throw new TypeError(`${e.kind}: empty id`);
        }
        for (const e of change.upserts) {
            if (typeof e.body !== "object" || e.body === null || Array.isArray(e.body))
                throw new TypeError(`${e.kind} "${e.id}": body must be a JSON object`);
        }
        return this.options.db.transaction(async (tx) => {
            const { rows } = await tx.query("SELECT version FROM policy_version FOR UPDATE");
            const current = toNumber(rows[0]?.version);
            if (change.expectedVersion !== undefined && current !== change.expectedVersion)
                throw new ConflictError(change.expectedVersion, current);
            if (change.upserts.length > 0) {
                // Later upserts of the same entity in one change win, as if applied in order.
                const last = new Map(change.upserts.map((e) => [`${e.kind}\u0000${e.id}`, e]));
                const upserts = [...last.values()];
                await tx.query(`INSERT INTO policy_entities (kind, id, body, updated_at)
           SELECT kind, id, body, now() FROM unnest($1::text[], $2::text[], $3::jsonb[]) AS u(kind, id, body)
           ON CONFLICT (kind, id) DO UPDATE SET body = EXCLUDED.body, updated_at = EXCLUDED.updated_at`, [upserts.map((e) => e.kind), upserts.map((e) => e.id), upserts.map((e) => JSON.stringify(e.body))]);
            }
            if (change.deletes.length > 0) {
                await tx.query("DELETE FROM policy_entities p USING unnest($1::text[], $2::text[]) AS d(kind, id) WHERE p.kind = d.kind AND p.id = d.id", [change.deletes.map((d) => d.kind), change.deletes.map((d) => d.id)]);
            }
            const version = current + 1;
            await tx.query("UPDATE policy_version SET version = $1", [version]);
            await tx.query("SELECT pg_notify($1, $2)", [configChannel, String(version)]);
            return version;
        });
    }
    /**
     * Calls back with each version announced by any writer (this process
     * included). After the LISTEN connection was lost and restored, calls back
     * with the stored version, since announcements may have been missed.
     */
    watch(onVersion) {
        return this.options.db.listen(configChannel, (payload) => {
            const version = Number(payload);
            if (Number.isSafeInteger(version))
                onVersion(version);
        }, {
            onReconnect: () => {
                this.version().then(onVersion, () => undefined);
            },
        });
    }
    /** A shared secret, created once by whichever replica gets there first. */
    async getOrCreateSecret(name, create) {
        const existing = await this.readSecret(name);
        if (existing !== undefined)
            return existing;
        await this.options.db.query("INSERT INTO control_plane_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", [name, create()]);
        return (await this.readSecret(name));
    }
    async readSecret(name) {
        const { rows } = await this.options.db.query("SELECT value FROM control_plane_secrets WHERE name = $1", [name]);
        return rows[0]?.value;
    }
}
function jsonObject(body) {
    return (typeof body === "string" ? JSON.parse(body) : body);
}
//# sourceMappingURL=config-repository.js.map
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import pino from "pino";
import { openDatabase } from "../../control-plane/store/database.js";
import { seedPgliteDir } from "./pglite-template.js";
import { requireServices } from "./services.js";
const silent = pino({ level: "silent" });
/**
 * The backends every store test runs on: PGlite always (in a temp dir), and
 * PostgreSQL when DATABASE_URL is set (a scratch database adm_test_<random>
 * on that server per test, dropped afterwards). Without DATABASE_URL the
 * PostgreSQL variant is skipped — unless ADMISSION_REQUIRE_SERVICES=1, when
 * it runs and fails.
 */
export function backends() {
    const url = process.env.DATABASE_URL;
    return [
        { name: "pglite", skip: false, create: pgliteScratch },
        {
            name: "postgres",
            skip: url || requireServices ? false : "PostgreSQL variant skipped: DATABASE_URL is not set (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres)",
            create: () => {
                if (!url)
                    throw new Error("DATABASE_URL is not set but ADMISSION_REQUIRE_SERVICES=1: the PostgreSQL variant of the store tests is required");
                return postgresScratch(url);
            },
        },
    ];
}
/** Runs `fn` with a fresh migrated database and always removes it afterwards. */
export async function withDatabase(backend, fn) {
    const scratch = await backend.create();
    try {
        return await fn(await scratch.open(), scratch);
    }
    finally {
        await scratch.remove();
    }
}
async function pgliteScratch() {
    const dir = await mkdtemp(join(tmpdir(), "adm-store-"));
    await seedPgliteDir(join(dir, "pgdata"));
    return closingScratch((logger) => openDatabase({ dataDir: join(dir, "pgdata"), logger }), () => rm(dir, { recursive: true, force: true }));
}
async function postgresScratch(baseUrl) {
    const scratch = await scratchDatabase(baseUrl);
    return closingScratch((logger) => openDatabase({ url: scratch.url, logger, poolSize: 4 }), () => scratch.drop());
}
/** A scratch store whose removal first closes every database opened on it. */
function closingScratch(open, drop) {
    const opened = [];
    return {
        async open(options = {}) {
            const db = await open(options.logger ?? silent);
            opened.push(db);
            return db;
        },
        async remove() {
            try {
                for (const db of opened)
                    await db.close();
            }
            finally {
                await drop();
            }
        },
    };
}
/** A scratch database on DATABASE_URL's server, for a control plane (or several) to open by URL; drop() removes it. */
export async function scratchDatabase(base = process.env.DATABASE_URL) {
    if (!base)
        throw new Error("DATABASE_URL is not set");
    const name = `adm_test_${randomBytes(6).toString("hex")}`;
    await adminQuery(base, `CREATE DATABASE ${name}`);
    const url = new URL(base);
    url.pathname = `/${name}`;
    return { url: url.toString(), drop: () => adminQuery(base, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}
/**
 * Where a test control plane keeps its ledger when the test is about something
 * else: a scratch PostgreSQL database when DATABASE_URL is set (it starts in a
 * fraction of a second), otherwise PGlite in the test control plane's own data dir.
 */
export async function quickDatabase() {
    if (!process.env.DATABASE_URL)
        return { config: {}, drop: async () => undefined };
    const db = await scratchDatabase();
    return { config: { databaseUrl: db.url }, drop: db.drop };
}
async function adminQuery(url, sql) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
    await client.connect();
    try {
        await client.query(sql);
    }
    finally {
        await client.end();
    }
}
//# sourceMappingURL=databases.js.map
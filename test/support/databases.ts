import { randomBytes } from "node:crypto";
import pg from "pg";
import pino from "pino";
import { openDatabase, type Database } from "../../control-plane/store/database.js";
import { missingService } from "./services.js";

export interface Backend {
  readonly name: string;
  /** Why the backend is skipped, or false. */
  readonly skip: string | false;
  /** A fresh, empty, migrated database; drop() removes it. */
  open(): Promise<{ db: Database; url?: string; drop(): Promise<void> }>;
}

const logger = pino({ level: "silent" });

/** PGlite always; PostgreSQL when DATABASE_URL is set (a scratch database per test, dropped afterwards). */
export function backends(): Backend[] {
  const pglite: Backend = {
    name: "pglite",
    skip: false,
    async open() {
      const db = await openDatabase({ dataDir: "memory://", logger });
      return { db, drop: () => db.close() };
    },
  };
  const postgres: Backend = {
    name: "postgres",
    skip: missingService("PostgreSQL", "DATABASE_URL"),
    async open() {
      const { url, drop } = await scratchDatabase();
      const db = await openDatabase({ url, logger });
      return { db, url, drop: async () => (await db.close(), await drop()) };
    },
  };
  return [pglite, postgres];
}

/** Creates a scratch database on DATABASE_URL's server. */
export async function scratchDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const base = process.env.DATABASE_URL!;
  const name = `adm_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const c = new pg.Client({ connectionString: base });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

import type { Database } from "./database.js";
import { toNumber } from "./database.js";

/** A config entity as stored: its proto3-JSON body. */
export interface EntityRecord {
  readonly kind: string;
  readonly id: string;
  readonly body: Record<string, unknown>;
}

/** Another writer changed the config since the version this change was based on. */
export class ConflictError extends Error {
  constructor(readonly expected: number, readonly actual: number) {
    super(`config version is ${actual}, expected ${expected}`);
    this.name = "ConflictError";
  }
}

const channel = "admission_config";

/** Stores config entities with a version bumped by every change and announced with NOTIFY. */
export class ConfigRepository {
  constructor(private readonly options: { db: Database }) {}

  async load(): Promise<{ version: number; entities: EntityRecord[] }> {
    return this.options.db.transaction(async (tx) => {
      const v = await tx.query<{ version: unknown }>("SELECT version FROM policy_version");
      const { rows } = await tx.query<{ kind: string; id: string; body: unknown }>("SELECT kind, id, body FROM policy_entities ORDER BY kind, id");
      return {
        version: toNumber(v.rows[0]?.version),
        entities: rows.map((r) => ({ kind: r.kind, id: r.id, body: (typeof r.body === "string" ? JSON.parse(r.body) : r.body) as Record<string, unknown> })),
      };
    });
  }

  async version(): Promise<number> {
    const { rows } = await this.options.db.query<{ version: unknown }>("SELECT version FROM policy_version");
    return toNumber(rows[0]?.version);
  }

  /** Upserts and deletes in one transaction; returns the new version. */
  async save(change: { upserts: readonly EntityRecord[]; deletes: ReadonlyArray<{ kind: string; id: string }>; expectedVersion?: number }): Promise<number> {
    const version = await this.options.db.transaction(async (tx) => {
      const { rows } = await tx.query<{ version: unknown }>("SELECT version FROM policy_version FOR UPDATE");
      const current = toNumber(rows[0]?.version);
      if (change.expectedVersion !== undefined && current !== change.expectedVersion) throw new ConflictError(change.expectedVersion, current);
      for (const e of change.upserts) {
        await tx.query(
          `INSERT INTO policy_entities (kind, id, body, updated_at) VALUES ($1, $2, $3::jsonb, now())
           ON CONFLICT (kind, id) DO UPDATE SET body = EXCLUDED.body, updated_at = now()`,
          [e.kind, e.id, JSON.stringify(e.body)],
        );
      }
      for (const d of change.deletes) await tx.query("DELETE FROM policy_entities WHERE kind = $1 AND id = $2", [d.kind, d.id]);
      await tx.query("UPDATE policy_version SET version = $1", [current + 1]);
      return current + 1;
    });
    await this.options.db.notify(channel, String(version));
    return version;
  }

  /** Calls back with the version announced by any writer (this process included). */
  watch(onVersion: (version: number) => void): Promise<() => Promise<void>> {
    return this.options.db.listen(channel, (payload) => {
      const version = Number(payload);
      if (Number.isSafeInteger(version)) onVersion(version);
    });
  }

  /** A shared secret, created once by whichever replica gets there first. */
  async getOrCreateSecret(name: string, create: () => string): Promise<string> {
    await this.options.db.query("INSERT INTO control_plane_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", [name, create()]);
    const { rows } = await this.options.db.query<{ value: string }>("SELECT value FROM control_plane_secrets WHERE name = $1", [name]);
    return rows[0]!.value;
  }
}

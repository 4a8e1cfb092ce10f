import type { Database, Queryable } from "./database.js";
import { toNumber } from "./database.js";

/** The kinds of config entity; a user's id is "tenant/user". */
export const entityKinds = ["model", "task", "plan", "ati_token", "tenant", "user", "api_key", "webhook"] as const;
export type EntityKind = (typeof entityKinds)[number];

/** A config entity as stored: its proto3-JSON body. */
export interface EntityRecord {
  readonly kind: string;
  readonly id: string;
  readonly body: Record<string, unknown>;
}

export interface ConfigChange {
  readonly upserts: readonly EntityRecord[];
  readonly deletes: ReadonlyArray<{ kind: string; id: string }>;
  /** Refuse the change (ConflictError) unless the stored version is this one. */
  readonly expectedVersion?: number;
  /** Runs in the change's transaction, with the new version (e.g. to write the events it raises). */
  readonly alsoInTransaction?: (tx: Queryable, version: number) => Promise<void>;
}

/** Another writer changed the config since the version this change was based on. */
export class ConflictError extends Error {
  constructor(readonly expected: number, readonly actual: number) {
    super(`config version is ${actual}, expected ${expected}`);
    this.name = "ConflictError";
  }
}

/** The NOTIFY channel announcing each new config version (payload: the version). */
export const configChannel = "admission_config";

/** Stores config entities with a version bumped by every change and announced with NOTIFY. */
export class ConfigRepository {
  constructor(private readonly options: { db: Database }) {}

  /** The version and every entity, from one snapshot (one statement). */
  async load(): Promise<{ version: number; entities: EntityRecord[] }> {
    const { rows } = await this.options.db.query<{ version: unknown; kind: string | null; id: string | null; body: unknown }>(
      `SELECT v.version, e.kind, e.id, e.body FROM policy_version v LEFT JOIN policy_entities e ON true
       ORDER BY e.kind COLLATE "C", e.id COLLATE "C"`,
    );
    return {
      version: toNumber(rows[0]?.version),
      entities: rows.filter((r) => r.kind !== null).map((r) => ({ kind: r.kind!, id: r.id!, body: jsonObject(r.body) })),
    };
  }

  async version(): Promise<number> {
    const { rows } = await this.options.db.query<{ version: unknown }>("SELECT version FROM policy_version");
    return toNumber(rows[0]?.version);
  }

  /**
   * In one transaction: upserts and deletes, bumps the version and NOTIFYs
   * it (delivered on commit, so listeners never hear of a change that rolled
   * back). Returns the new version.
   */
  async save(change: ConfigChange): Promise<number> {
    for (const e of [...change.upserts, ...change.deletes]) {
      if (!(entityKinds as readonly string[]).includes(e.kind)) throw new TypeError(`unknown entity kind "${e.kind}"`);
      if (typeof e.id !== "string" || e.id === "") throw new TypeError(`${e.kind}: empty id`);
    }
    for (const e of change.upserts) {
      if (typeof e.body !== "object" || e.body === null || Array.isArray(e.body)) throw new TypeError(`${e.kind} "${e.id}": body must be a JSON object`);
    }
    return this.options.db.transaction(async (tx) => {
      const { rows } = await tx.query<{ version: unknown }>("SELECT version FROM policy_version FOR UPDATE");
      const current = toNumber(rows[0]?.version);
      if (change.expectedVersion !== undefined && current !== change.expectedVersion) throw new ConflictError(change.expectedVersion, current);
      if (change.upserts.length > 0) {
        // Later upserts of the same entity in one change win, as if applied in order.
        const last = new Map(change.upserts.map((e) => [`${e.kind}\u0000${e.id}`, e]));
        const upserts = [...last.values()];
        await tx.query(
          `INSERT INTO policy_entities (kind, id, body, updated_at)
           SELECT kind, id, body, now() FROM unnest($1::text[], $2::text[], $3::jsonb[]) AS u(kind, id, body)
           ON CONFLICT (kind, id) DO UPDATE SET body = EXCLUDED.body, updated_at = EXCLUDED.updated_at`,
          [upserts.map((e) => e.kind), upserts.map((e) => e.id), upserts.map((e) => JSON.stringify(e.body))],
        );
      }
      if (change.deletes.length > 0) {
        await tx.query(
          "DELETE FROM policy_entities p USING unnest($1::text[], $2::text[]) AS d(kind, id) WHERE p.kind = d.kind AND p.id = d.id",
          [change.deletes.map((d) => d.kind), change.deletes.map((d) => d.id)],
        );
      }
      const version = current + 1;
      await tx.query("UPDATE policy_version SET version = $1", [version]);
      await change.alsoInTransaction?.(tx, version);
      await tx.query("SELECT pg_notify($1, $2)", [configChannel, String(version)]);
      return version;
    });
  }

  /**
   * Calls back with each version announced by any writer (this process
   * included). After the LISTEN connection was lost and restored, calls back
   * with the stored version, since announcements may have been missed.
   */
  watch(onVersion: (version: number) => void): Promise<() => Promise<void>> {
    return this.options.db.listen(
      configChannel,
      (payload) => {
        const version = Number(payload);
        if (Number.isSafeInteger(version)) onVersion(version);
      },
      {
        onReconnect: () => {
          this.version().then(onVersion, () => undefined);
        },
      },
    );
  }

  /** A shared secret, created once by whichever replica gets there first. */
  async getOrCreateSecret(name: string, create: () => string): Promise<string> {
    const existing = await this.readSecret(name);
    if (existing !== undefined) return existing;
    await this.options.db.query("INSERT INTO control_plane_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", [name, create()]);
    return (await this.readSecret(name))!;
  }

  private async readSecret(name: string): Promise<string | undefined> {
    const { rows } = await this.options.db.query<{ value: string }>("SELECT value FROM control_plane_secrets WHERE name = $1", [name]);
    return rows[0]?.value;
  }
}

function jsonObject(body: unknown): Record<string, unknown> {
  return (typeof body === "string" ? JSON.parse(body) : body) as Record<string, unknown>;
}

import type { Database } from "./database.js";

/**
 * Ordered SQL migrations, written for PostgreSQL (PGlite runs the same SQL).
 * Never edit an applied migration: append a new one.
 */
export const migrations: readonly string[] = [
  `
  CREATE TABLE policy_entities (
    kind text NOT NULL,
    id text NOT NULL,
    body jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, id)
  );
  CREATE TABLE policy_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version bigint NOT NULL
  );
  INSERT INTO policy_version (singleton, version) VALUES (true, 0);
  CREATE TABLE control_plane_secrets (
    name text PRIMARY KEY,
    value text NOT NULL
  );
  CREATE TABLE usage_ledger (
    id bigserial,
    reservation_id text NOT NULL,
    request_id text NOT NULL,
    tenant text NOT NULL,
    user_id text NOT NULL,
    key_id text NOT NULL,
    task text NOT NULL,
    model text NOT NULL,
    provider text NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cost_micros bigint NOT NULL,
    outcome text NOT NULL,
    estimated boolean NOT NULL,
    latency_ms integer NOT NULL,
    reserved_at timestamptz NOT NULL,
    settled_at timestamptz NOT NULL
  ) PARTITION BY RANGE (reserved_at);
  CREATE UNIQUE INDEX usage_ledger_reservation ON usage_ledger (reservation_id, reserved_at);
  CREATE INDEX usage_ledger_tenant_time ON usage_ledger (tenant, reserved_at);
  CREATE TABLE usage_ledger_default PARTITION OF usage_ledger DEFAULT;
  CREATE TABLE audit_events (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    kind text NOT NULL,
    actor text NOT NULL,
    tenant text NOT NULL,
    message text NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}'
  );
  CREATE INDEX audit_events_tenant ON audit_events (tenant, id);
  CREATE INDEX audit_events_kind ON audit_events (kind, id);
  `,
];

/** Applies pending migrations in one transaction; concurrent starters wait on an advisory lock. */
export async function migrate(db: Database): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.query("SELECT pg_advisory_xact_lock(727274001)");
    await tx.query("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
    const { rows } = await tx.query<{ version: number }>("SELECT coalesce(max(version), 0) AS version FROM schema_migrations");
    const applied = Number(rows[0]?.version ?? 0);
    for (let i = applied; i < migrations.length; i++) {
      for (const statement of splitStatements(migrations[i]!)) await tx.query(statement);
      await tx.query("INSERT INTO schema_migrations (version) VALUES ($1)", [i + 1]);
    }
  });
}

function splitStatements(sql: string): string[] {
  return sql.split(/;\s*\n/).map((s) => s.trim()).filter(Boolean);
}

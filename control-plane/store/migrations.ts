import type { Logger } from "pino";
import type { Database } from "./database.js";

/**
 * Ordered SQL migrations, written for PostgreSQL (PGlite runs the same SQL).
 * Migration n (1-based) is recorded in schema_migrations as version n. Never
 * edit an applied migration: append a new one.
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
  // The transaction that wrote each row, so a counter rebuild can tell which rows its snapshot saw
  // (rows written before this migration have none: every later snapshot saw them).
  `
  ALTER TABLE usage_ledger ADD COLUMN xid xid8;
  `,
  // The usage record's parts: cache reads and writes (of input_tokens) and reasoning (of output_tokens).
  // Rows recorded before them had none reported: 0.
  `
  ALTER TABLE usage_ledger
    ADD COLUMN cache_read_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN reasoning_tokens bigint NOT NULL DEFAULT 0;
  `,
  // Audit retention deletes by time, in batches.
  `
  CREATE INDEX IF NOT EXISTS audit_events_at ON audit_events (at);
  `,
  // The webhook outbox: each event, written in the transaction of what raised it, one delivery per
  // endpoint it goes to (claimed by one replica at a time), and every attempt made. Idempotent, as a
  // migration after an earlier one is re-run (tests roll the schema back).
  `
  CREATE TABLE IF NOT EXISTS webhook_events (
    id text PRIMARY KEY,
    type text NOT NULL,
    tenant text NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL
  );
  CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    webhook text NOT NULL,
    state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    claimed_until timestamptz,
    created_at timestamptz NOT NULL,
    completed_at timestamptz,
    UNIQUE (event_id, webhook)
  );
  CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
  CREATE INDEX IF NOT EXISTS webhook_deliveries_webhook ON webhook_deliveries (webhook, id);
  CREATE TABLE IF NOT EXISTS webhook_attempts (
    id bigserial PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at timestamptz NOT NULL,
    http_status integer NOT NULL,
    latency_ms integer NOT NULL,
    error text NOT NULL
  );
  CREATE INDEX IF NOT EXISTS webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
  `,
  // Prepaid credits: grants are append-only rows (never updated); xid names the transaction that
  // wrote each, so a grant is applied to the counters exactly once (see credit-balances.ts).
  // ledger_cost_rollups keeps each tenant's cost of the ledger months retention drops, so the
  // all-time spend a credit balance is rebuilt from survives retention.
  `
  CREATE TABLE IF NOT EXISTS credit_grants (
    id bigserial PRIMARY KEY,
    tenant text NOT NULL,
    grant_id text NOT NULL,
    amount_micros bigint NOT NULL CHECK (amount_micros <> 0),
    note text NOT NULL,
    actor text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (tenant, grant_id)
  );
  CREATE TABLE IF NOT EXISTS ledger_cost_rollups (
    tenant text NOT NULL,
    month timestamptz NOT NULL,
    cost_micros bigint NOT NULL,
    PRIMARY KEY (tenant, month)
  );
  `,
];

/** Any fixed number: the advisory lock every starting process takes before migrating. */
const migrationLockKey = 727274001;

/**
 * Applies pending migrations in one transaction and records each in
 * schema_migrations. Processes starting at once queue on a transaction-scoped
 * advisory lock, so exactly one applies them and the others find them done.
 * Returns the versions applied by this call.
 */
export async function migrate(db: Database, logger?: Logger): Promise<number[]> {
  const applied = await db.transaction(async (tx) => {
    await tx.query("SELECT pg_advisory_xact_lock($1)", [migrationLockKey]);
    await tx.query("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
    const { rows } = await tx.query<{ version: number }>("SELECT coalesce(max(version), 0)::int4 AS version FROM schema_migrations");
    const current = rows[0]?.version ?? 0;
    if (current > migrations.length) {
      logger?.warn({ schemaVersion: current, known: migrations.length }, "database schema is newer than this build");
    }
    const done: number[] = [];
    for (let version = current + 1; version <= migrations.length; version++) {
      await tx.exec(migrations[version - 1]!);
      await tx.query("INSERT INTO schema_migrations (version) VALUES ($1)", [version]);
      done.push(version);
    }
    return done;
  });
  if (applied.length > 0) logger?.info({ versions: applied }, "database migrated");
  return applied;
}

import type { Database, Queryable } from "./database.js";
import { toNumber } from "./database.js";
import { creditSumsSql, type CreditSum } from "./ledger.js";
import { insertOutboxEvents, type OutboxEvent } from "./webhook-outbox.js";

/** One credit grant: an append-only row, never updated. */
export interface CreditGrantRecord {
  readonly tenant: string;
  readonly grantId: string;
  readonly amountMicros: number;
  readonly note: string;
  readonly actor: string;
  readonly createdAtMs: number;
}

export interface NewCreditGrant {
  readonly tenant: string;
  readonly grantId: string;
  readonly amountMicros: number;
  readonly note: string;
  readonly actor: string;
  readonly atMs: number;
}

export type GrantOutcome =
  /** Written; `xid`: its transaction (see visibleIn), `grantedMicros`: the tenant's granted total with it. */
  | { readonly status: "granted"; readonly grant: CreditGrantRecord; readonly xid: string; readonly grantedMicros: number }
  /** The tenant already has this grant id: nothing written. */
  | { readonly status: "replayed"; readonly grant: CreditGrantRecord }
  /** A negative grant would take what was granted below what is already spent: nothing written. */
  | { readonly status: "below_spent"; readonly totals: CreditSum };

/** Any fixed number: grants of one tenant take turns on it (with the tenant's hash). */
const grantLockKey = 727274003;

/**
 * The credit_grants table: grants are inserted, idempotently per (tenant, grant id), and
 * never changed; a tenant's granted total is their sum.
 */
export class CreditGrantStore {
  constructor(private readonly db: Database) {}

  /**
   * Inserts a grant unless the tenant has its id already. Grants of one tenant are
   * serialized, so a refund is checked against every grant before it; `events` (built
   * from the new grant) commit with it.
   */
  async grant(input: NewCreditGrant, events?: (grant: CreditGrantRecord) => readonly OutboxEvent[]): Promise<GrantOutcome> {
    return this.db.transaction(async (tx) => {
      await tx.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [grantLockKey, input.tenant]);
      const { rows: existing } = await tx.query<Record<string, unknown>>(
        "SELECT tenant, grant_id, amount_micros, note, actor, created_at FROM credit_grants WHERE tenant = $1 AND grant_id = $2",
        [input.tenant, input.grantId],
      );
      if (existing[0]) return { status: "replayed", grant: grantOf(existing[0]) };
      if (input.amountMicros < 0) {
        const totals = await creditTotals(tx, input.tenant);
        if (totals.grantedMicros + input.amountMicros < totals.spentMicros) return { status: "below_spent", totals };
      }
      const { rows } = await tx.query<Record<string, unknown>>(
        `INSERT INTO credit_grants (tenant, grant_id, amount_micros, note, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING tenant, grant_id, amount_micros, note, actor, created_at, xid::text AS xid`,
        [input.tenant, input.grantId, String(input.amountMicros), input.note, input.actor, new Date(input.atMs).toISOString()],
      );
      const grant = grantOf(rows[0]!);
      if (events) await insertOutboxEvents(tx, events(grant));
      return { status: "granted", grant, xid: String(rows[0]!.xid), grantedMicros: await grantedTotal(tx, input.tenant) };
    });
  }

  /** A tenant's grants, newest first. */
  async list(tenant: string, limit: number): Promise<CreditGrantRecord[]> {
    const { rows } = await this.db.query<Record<string, unknown>>(
      "SELECT tenant, grant_id, amount_micros, note, actor, created_at FROM credit_grants WHERE tenant = $1 ORDER BY id DESC LIMIT $2",
      [tenant, limit],
    );
    return rows.map(grantOf);
  }

  /** The sum of a tenant's grants (no ledger read: what the display cache refreshes). */
  granted(tenant: string): Promise<number> {
    return grantedTotal(this.db, tenant);
  }

  /** A tenant's all-time spend and granted total, read in one snapshot. */
  totals(tenant: string): Promise<CreditSum> {
    return creditTotals(this.db, tenant);
  }
}

async function grantedTotal(db: Queryable, tenant: string): Promise<number> {
  const { rows } = await db.query<{ granted: unknown }>("SELECT coalesce(sum(amount_micros), 0) AS granted FROM credit_grants WHERE tenant = $1", [tenant]);
  return toNumber(rows[0]!.granted);
}

async function creditTotals(db: Queryable, tenant: string): Promise<CreditSum> {
  const { rows } = await db.query<{ credits: string }>(`SELECT (${creditSumsSql("$1")}) AS credits`, [[tenant]]);
  const [, spent, granted] = (JSON.parse(rows[0]!.credits) as Array<[string, string, string]>)[0]!;
  return { spentMicros: toNumber(spent), grantedMicros: toNumber(granted) };
}

function grantOf(r: Record<string, unknown>): CreditGrantRecord {
  return {
    tenant: String(r.tenant), grantId: String(r.grant_id), amountMicros: toNumber(r.amount_micros), note: String(r.note), actor: String(r.actor),
    createdAtMs: new Date(r.created_at as string | Date).getTime(),
  };
}

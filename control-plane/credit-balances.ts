import { status as Code } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { LimitKind } from "../gen/admission/v1/policy_pb.js";
import type { CounterRebuild } from "./counter-rebuild.js";
import { snapshotOf } from "./counter-rebuild.js";
import type { CounterStore } from "./counter-store.js";
import { CounterStoreUnavailableError } from "./counter-store.js";
import type { BoundMeter } from "./meters.js";
import { creditsKey } from "./meters.js";
import type { PolicySnapshot } from "./policy/policy-snapshot.js";
import { RpcError } from "./rpc-error.js";
import type { AuditLog } from "./store/audit-log.js";
import type { CreditGrantRecord, CreditGrantStore } from "./store/credit-grants.js";
import { visibleIn } from "./store/ledger.js";
import type { WebhookEvents } from "./webhook-events.js";

/**
 * Prepaid credits.
 *
 * A prepaid tenant's balance is one counter-store meter (unit cost, no window, never
 * expiring) holding spent + reserved - granted in micro-USD, with limit 0: it joins the
 * one atomic reserve step like every meter, a reservation that would take it above 0 is
 * refused (CREDITS_EXHAUSTED), a settle moves it from the estimate to the actual cost, an
 * expired lease leaves its estimate. A rebuild sets it to the ledger's all-time cost minus
 * the grants, read in the rebuild's snapshot; a grant is applied to it once: by the
 * rebuild whose snapshot saw the grant's row, else by a charge in the current generation.
 *
 * Shown as a meter, it reports limit = granted, used = spent + reserved, remaining = the
 * balance. The granted total for that (and for threshold alerts) is cached per tenant for
 * a short while; enforcement never reads the cache.
 */
export interface CreditBalancesDeps {
  readonly grants: CreditGrantStore;
  readonly counters: Pick<CounterStore, "generation" | "charge" | "read">;
  readonly rebuild: Pick<CounterRebuild, "warm" | "ensureWarm">;
  readonly policy: () => PolicySnapshot;
  readonly audit: Pick<AuditLog, "record">;
  readonly events?: Pick<WebhookEvents, "event" | "committed">;
  readonly logger: Logger;
  readonly clock?: () => number;
  /** How long a granted total read from the database is shown (default 10 s; this process's own grants update it at once). */
  readonly grantedTtlMs?: number;
  /** Wait between background tries to apply a grant the counter store could not take (default 1 s). */
  readonly retryDelayMs?: number;
}

export interface CreditBalance {
  readonly tenant: string;
  readonly balanceMicros: number;
  readonly reservedMicros: number;
  readonly grantedMicros: number;
  readonly spentMicros: number;
  readonly prepaid: boolean;
}

export interface GrantRequest {
  readonly tenant: string;
  readonly amountMicros: bigint;
  readonly grantId: string;
  readonly note: string;
}

/** Largest amount of one grant, either way (10^9 USD): sums of grants stay exact. */
export const maxGrantMicros = 1_000_000_000_000_000;
const grantIdPattern = /^[\x21-\x7e]{1,128}$/;
const maxNoteChars = 256;

/**
 * A credit meter as shown and alerted on: limit = granted, and its value (spent + reserved -
 * granted) becomes used = spent + reserved. Other meters pass through.
 */
export function creditsShown(m: BoundMeter, value: number, grantedMicros: number): { meter: BoundMeter; used: number } {
  if (m.limit.kind !== LimitKind.CREDITS_MICROS) return { meter: m, used: value };
  return { meter: { ...m, limit: { ...m.limit, value: grantedMicros }, limitBig: BigInt(grantedMicros) }, used: value + grantedMicros };
}

export class CreditBalances {
  private readonly clock: () => number;
  private readonly grantedTtlMs: number;
  private readonly retryDelayMs: number;
  private readonly granted = new Map<string, { micros: number; atMs: number }>();
  private readonly loading = new Map<string, Promise<number>>();
  /** Grants committed whose counter charge is still to be made (the counter store was unavailable). */
  private readonly unapplied = new Map<string, { tenant: string; amountMicros: number; xid: string }>();
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: CreditBalancesDeps) {
    this.clock = deps.clock ?? Date.now;
    this.grantedTtlMs = deps.grantedTtlMs ?? 10_000;
    this.retryDelayMs = deps.retryDelayMs ?? 1_000;
  }

  /**
   * The tenant's granted total for display and alerts: cached, refreshed in the
   * background once older than the TTL, read from the database (awaited) when unknown.
   * Never throws: a database error shows 0 until the next read.
   */
  grantedMicros(tenant: string): number | Promise<number> {
    const cached = this.granted.get(tenant);
    if (cached) {
      if (this.clock() - cached.atMs >= this.grantedTtlMs) void this.loadGranted(tenant);
      return cached.micros;
    }
    return this.loadGranted(tenant);
  }

  private loadGranted(tenant: string): Promise<number> {
    let load = this.loading.get(tenant);
    if (!load) {
      const atMs = this.clock();
      load = this.deps.grants.granted(tenant)
        .then((granted) => {
          this.remember(tenant, granted, atMs);
          return granted;
        })
        .catch((err) => {
          this.deps.logger.warn({ err: String(err), tenant }, "credit grants unreadable: granted shown as last known");
          return this.granted.get(tenant)?.micros ?? 0;
        })
        .finally(() => this.loading.delete(tenant));
      this.loading.set(tenant, load);
    }
    return load;
  }

  private remember(tenant: string, micros: number, atMs: number): void {
    const cached = this.granted.get(tenant);
    if (!cached || cached.atMs <= atMs) this.granted.set(tenant, { micros, atMs });
  }

  /**
   * GrantCredits: validated (nothing changes on bad input), written once per grant id with
   * its audit event and credits.granted webhook event, then applied to the counters.
   */
  async grant(req: GrantRequest, actor: string): Promise<{ grant: CreditGrantRecord; replayed: boolean; balance: CreditBalance }> {
    if (!req.tenant) throw new RpcError(Code.INVALID_ARGUMENT, "tenant is required");
    if (!this.deps.policy().tenants.has(req.tenant)) throw new RpcError(Code.NOT_FOUND, `tenant "${req.tenant}" not found`);
    if (req.amountMicros === 0n) throw new RpcError(Code.INVALID_ARGUMENT, "amount_micros must not be zero");
    if (req.amountMicros > BigInt(maxGrantMicros) || req.amountMicros < -BigInt(maxGrantMicros)) {
      throw new RpcError(Code.INVALID_ARGUMENT, `amount_micros must be between -${maxGrantMicros} and ${maxGrantMicros}`);
    }
    if (!grantIdPattern.test(req.grantId)) throw new RpcError(Code.INVALID_ARGUMENT, "grant_id must be 1-128 printable ASCII characters");
    if (req.note.length > maxNoteChars || req.note.includes("\u0000")) throw new RpcError(Code.INVALID_ARGUMENT, `note must be at most ${maxNoteChars} characters without NUL`);
    const amountMicros = Number(req.amountMicros);
    const atMs = this.clock();
    const outcome = await this.deps.grants.grant(
      { tenant: req.tenant, grantId: req.grantId, amountMicros, note: req.note, actor, atMs },
      (grant) => {
        const event = this.deps.events?.event("credits.granted", grant.tenant, {
          tenant: grant.tenant, grantId: grant.grantId, amountMicros: grant.amountMicros, ...(grant.note ? { note: grant.note } : {}), actor: grant.actor,
        });
        return event ? [event] : [];
      },
    );
    if (outcome.status === "below_spent") {
      const { grantedMicros, spentMicros } = outcome.totals;
      throw new RpcError(
        Code.FAILED_PRECONDITION,
        `tenant "${req.tenant}": taking back ${-amountMicros} micro-USD would leave ${grantedMicros + amountMicros} granted, below the ${spentMicros} already spent; at most ${Math.max(0, grantedMicros - spentMicros)} can be taken back`,
      );
    }
    if (outcome.status === "replayed") {
      if (outcome.grant.amountMicros !== amountMicros) {
        throw new RpcError(
          Code.FAILED_PRECONDITION,
          `tenant "${req.tenant}" already has grant_id "${req.grantId}" for ${outcome.grant.amountMicros} micro-USD, not ${amountMicros}: a grant id names one grant (use a new one)`,
        );
      }
      return { grant: outcome.grant, replayed: true, balance: await this.balance(req.tenant) };
    }
    this.deps.events?.committed();
    this.remember(req.tenant, outcome.grantedMicros, atMs);
    this.deps.audit.record({
      kind: "admin.grant_credits", actor, tenant: req.tenant,
      message: `granted ${amountMicros} micro-USD of credits (grant "${req.grantId}"${req.note ? `: ${req.note}` : ""}); granted now ${outcome.grantedMicros}`,
      attributes: { grant_id: req.grantId, amount_micros: String(amountMicros) },
    });
    // Applied whether or not this replica's policy has the tenant prepaid (another's may already:
    // snapshots reach replicas a moment apart); a tenant that is not prepaid just never reads it.
    try {
      await this.apply(req.tenant, amountMicros, outcome.xid);
    } catch (err) {
      if (!(err instanceof CounterStoreUnavailableError)) throw err;
      this.applyLater(req.tenant, req.grantId, amountMicros, outcome.xid);
      throw new RpcError(Code.UNAVAILABLE, `grant "${req.grantId}" is recorded, but the counter store is unavailable (${err.message}): it is applied to the balance once the store answers; repeat the call (same grant_id) to see the balance`);
    }
    return { grant: outcome.grant, replayed: false, balance: await this.balance(req.tenant) };
  }

  /**
   * Adds a committed grant (transaction `xid`) to the tenant's credit meter exactly once: a
   * generation whose rebuild snapshot saw the row counted it already; otherwise it is charged
   * to the current generation (only while that generation stands).
   */
  private async apply(tenant: string, amountMicros: number, xid: string): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.deps.counters.generation(tenant);
      if (current === undefined) {
        await this.deps.rebuild.warm(tenant);
        continue;
      }
      if (visibleIn(snapshotOf(current), xid)) return;
      if (await this.deps.counters.charge(tenant, [{ key: creditsKey(tenant), amount: -amountMicros, expiresAtMs: 0 }], current)) return;
    }
    throw new CounterStoreUnavailableError("the tenant's counters kept changing generation");
  }

  private applyLater(tenant: string, grantId: string, amountMicros: number, xid: string): void {
    this.unapplied.set(`${tenant}\u0000${grantId}`, { tenant, amountMicros, xid });
    this.deps.logger.error({ tenant, grantId }, "credit grant recorded but not yet applied to the counters: retrying");
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.unapplied.size === 0) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.retryUnapplied();
    }, this.retryDelayMs);
    this.retryTimer.unref();
  }

  private async retryUnapplied(): Promise<void> {
    for (const [key, g] of [...this.unapplied]) {
      try {
        await this.apply(g.tenant, g.amountMicros, g.xid);
        this.unapplied.delete(key);
      } catch (err) {
        this.deps.logger.warn({ err: String(err), tenant: g.tenant }, "credit grant still not applied to the counters");
      }
    }
    this.scheduleRetry();
  }

  /**
   * GetCreditBalance: granted and spent (all-time settled cost, expired leases at their
   * estimate) from the database in one snapshot; reserved = the credit meter + granted -
   * spent (what open reservations hold, read a moment later: a settle landing between the
   * two reads shows as reserved for that moment), never below 0.
   */
  async balance(tenant: string): Promise<CreditBalance> {
    if (!tenant) throw new RpcError(Code.INVALID_ARGUMENT, "tenant is required");
    const ctx = this.deps.policy().tenantContext(tenant);
    if (!ctx) throw new RpcError(Code.NOT_FOUND, `tenant "${tenant}" not found`);
    const atMs = this.clock();
    const { grantedMicros, spentMicros } = await this.deps.grants.totals(tenant);
    this.remember(tenant, grantedMicros, atMs);
    let reservedMicros = 0;
    if (ctx.credits) {
      try {
        await this.deps.rebuild.ensureWarm(tenant);
        const [value] = await this.deps.counters.read(tenant, [creditsKey(tenant)]);
        reservedMicros = Math.max(0, value! + grantedMicros - spentMicros);
      } catch (err) {
        if (!(err instanceof CounterStoreUnavailableError)) throw err;
        throw new RpcError(Code.UNAVAILABLE, `credit balance of tenant "${tenant}" unknown: ${err.message}`);
      }
    }
    return { tenant, grantedMicros, spentMicros, reservedMicros, balanceMicros: grantedMicros - spentMicros - reservedMicros, prepaid: ctx.credits !== undefined };
  }

  /** ListCreditGrants: newest first, `limit` default 100, at most 1000. */
  async list(tenant: string, limit: number): Promise<CreditGrantRecord[]> {
    if (!tenant) throw new RpcError(Code.INVALID_ARGUMENT, "tenant is required");
    if (!this.deps.policy().tenants.has(tenant)) throw new RpcError(Code.NOT_FOUND, `tenant "${tenant}" not found`);
    if (limit < 0 || limit > 1000) throw new RpcError(Code.INVALID_ARGUMENT, "limit must be between 0 and 1000");
    return this.deps.grants.list(tenant, limit || 100);
  }

  close(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }
}

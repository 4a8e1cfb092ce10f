import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { LimitKind } from "../gen/admission/v1/policy_pb.js";
import type { CounterStore, LeaseUsage, MeterCharge } from "./counter-store.js";
import { CounterStoreUnavailableError, settledAmount } from "./counter-store.js";
import { bindMeters, creditsKey } from "./meters.js";
import type { Metrics } from "./metrics.js";
import type { PolicySnapshot } from "./policy/policy-snapshot.js";
import type { ReservationClaims } from "./reservation-id.js";
import type { CreditSum, Ledger, WindowSum } from "./store/ledger.js";
import { visibleIn } from "./store/ledger.js";
import { timeWindows, windowSpan } from "./windows.js";

export interface CounterRebuildDeps {
  readonly counters: CounterStore;
  readonly ledger: Pick<Ledger, "rebuildSums" | "xidOf">;
  readonly policy: () => PolicySnapshot;
  readonly metrics: Pick<Metrics, "counterRebuilds" | "counterReconciles">;
  readonly logger: Logger;
  readonly clock: () => number;
}

/**
 * Keeps a tenant's counters equal to its ledger across counter-store data loss.
 *
 * A cold tenant (see CounterStore) is rebuilt from sums the ledger reads in one
 * snapshot; the generation names that snapshot. Nothing else touches a cold
 * tenant's counters, so a row the snapshot saw is counted by the rebuild alone.
 * A row the snapshot did not see is counted by its own settle: in the lease's
 * generation when the lease survived, or — when the lease was lost with an
 * earlier generation — by `reconcile`, which charges the row to the current
 * generation unless that generation's snapshot already saw it.
 */
export class CounterRebuild {
  private readonly running = new Map<string, Promise<void>>();

  constructor(private readonly deps: CounterRebuildDeps) {}

  /**
   * Rebuilds a cold tenant's counters from the ledger: once per tenant at a time
   * in this process; across replicas the store keeps the first rebuild to land.
   * Throws CounterStoreUnavailableError when the ledger or the store cannot be reached.
   */
  warm(tenant: string): Promise<void> {
    let run = this.running.get(tenant);
    if (!run) {
      run = this.rebuild(tenant).finally(() => this.running.delete(tenant));
      this.running.set(tenant, run);
    }
    return run;
  }

  /**
   * Runs a counter-store call for a tenant; when the store answers that the tenant
   * is cold, rebuilds it and runs the call once more (that answer stands, cold or not).
   */
  async afterWarming<R extends { readonly status: string }>(tenant: string, call: () => Promise<R>): Promise<R> {
    const result = await call();
    if (result.status !== "cold") return result;
    await this.warm(tenant);
    return call();
  }

  /**
   * Rebuilds the cold tenants of `tenants` from one read of their ledger rows (at
   * start: one statement instead of one per tenant on its first call; nothing to
   * read when the store kept them all). Returns how many were rebuilt.
   */
  async warmAll(tenants: readonly string[], trigger: "start" | "bundle"): Promise<number> {
    const generations = await Promise.all(tenants.map((t) => this.deps.counters.generation(t)));
    const cold = tenants.filter((t, i) => generations[i] === undefined && !this.running.has(t));
    if (cold.length === 0) return 0;
    const nowMs = this.deps.clock();
    const { snapshot, sums, credits } = await this.ledgerCall(() => this.deps.ledger.rebuildSums(cold, this.windowStarts(nowMs), this.prepaid(cold)));
    const generation = newGeneration(snapshot);
    const byTenant = new Map<string, WindowSum[][]>();
    sums.forEach((window, i) => {
      for (const sum of window) {
        let mine = byTenant.get(sum.tenant);
        if (!mine) byTenant.set(sum.tenant, (mine = sums.map(() => [])));
        mine[i]!.push(sum);
      }
    });
    const none = sums.map(() => []);
    let rebuilt = 0;
    for (const tenant of cold) {
      if (await this.deps.counters.rebuild(tenant, generation, this.chargesOf(tenant, byTenant.get(tenant) ?? none, nowMs, credits.get(tenant)))) rebuilt++;
    }
    this.deps.metrics.counterRebuilds.inc({ trigger }, rebuilt);
    this.deps.logger.info({ tenants: tenants.length, rebuilt, trigger }, "counters rebuilt from the ledger");
    return rebuilt;
  }

  /** Warms the tenant if it is cold (reads of usage would show nothing otherwise). */
  async ensureWarm(tenant: string): Promise<void> {
    if ((await this.deps.counters.generation(tenant)) === undefined) await this.warm(tenant);
  }

  /**
   * Makes sure a recorded ledger row's usage is in the tenant's current counters
   * exactly once. `appliedIn`: the generation in which a counter script already
   * applied it (the lease's), if any. `xid`: the row's transaction when known.
   * False when it cannot be decided yet (the row still sits in the ledger spool):
   * call again later. Throws CounterStoreUnavailableError.
   */
  async reconcile(claims: ReservationClaims, usage: LeaseUsage, appliedIn: string | undefined, xid?: string | null): Promise<boolean> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const current = await this.deps.counters.generation(claims.tenant);
      if (current !== undefined && current === appliedIn) return true;
      if (current === undefined) {
        // Whichever rebuild lands decides; its snapshot is then compared below.
        await this.warm(claims.tenant);
        continue;
      }
      if (xid === undefined) xid = await this.ledgerCall(() => this.deps.ledger.xidOf(claims.leaseId));
      if (xid === undefined) break;
      if (visibleIn(snapshotOf(current), xid)) {
        this.deps.metrics.counterReconciles.inc({ result: "counted" });
        return true;
      }
      if (await this.deps.counters.charge(claims.tenant, this.lateCharges(claims, usage), current)) {
        this.deps.metrics.counterReconciles.inc({ result: "charged" });
        return true;
      }
    }
    this.deps.metrics.counterReconciles.inc({ result: "pending" });
    return false;
  }

  /**
   * A lease expired (charged its estimate) in `generation`, but the ledger holds a
   * settle's usage for it (written by a replica that died before it could settle the
   * lease): moves the meters from the estimate to that usage, if the generation is
   * still the tenant's (otherwise its rebuild counted the row as it is).
   */
  async correctExpired(claims: ReservationClaims, estimate: LeaseUsage, recorded: LeaseUsage, generation: string): Promise<void> {
    const recordedCharges = this.lateCharges(claims, recorded);
    const estimated = new Map(this.lateCharges(claims, estimate).map((c) => [c.key, c.amount]));
    const deltas = recordedCharges.map((c) => ({ ...c, amount: c.amount - (estimated.get(c.key) ?? 0) })).filter((c) => c.amount !== 0);
    if (deltas.length > 0) await this.deps.counters.charge(claims.tenant, deltas, generation);
  }

  /** A settled lease's usage on the meters of the windows it was reserved in (concurrency aside). */
  private lateCharges(claims: ReservationClaims, usage: Pick<LeaseUsage, "inputTokens" | "outputTokens" | "costMicros">): MeterCharge[] {
    const snapshot = this.deps.policy();
    const ctx = snapshot.tenantContext(claims.tenant);
    if (!ctx) return [];
    const limits = snapshot.effectiveLimits(ctx, claims.user, claims.task).filter((l) => l.kind !== LimitKind.CONCURRENCY);
    // A token bucket's settles move its TAT in the lease's generation only; a lost bucket starts full (see chargesOf).
    return bindMeters(limits, { tenant: claims.tenant, user: claims.user, keyId: claims.keyId }, claims.reservedAtMs)
      .filter((m) => !m.bucket)
      .map((m) => ({ key: m.key, amount: settledAmount(m.unit, usage), expiresAtMs: m.expiresAtMs }))
      .filter((c) => c.amount !== 0);
  }

  private async rebuild(tenant: string): Promise<void> {
    const nowMs = this.deps.clock();
    const { snapshot, sums, credits } = await this.ledgerCall(() => this.deps.ledger.rebuildSums([tenant], this.windowStarts(nowMs), this.prepaid([tenant])));
    const charges = this.chargesOf(tenant, sums, nowMs, credits.get(tenant));
    if (await this.deps.counters.rebuild(tenant, newGeneration(snapshot), charges)) {
      this.deps.metrics.counterRebuilds.inc({ trigger: "cold" });
      this.deps.logger.info({ tenant, charges: charges.length }, "tenant counters rebuilt from the ledger");
    }
  }

  private windowStarts(nowMs: number): number[] {
    return timeWindows.map((w) => windowSpan(w, nowMs).startMs);
  }

  /** The prepaid ones among `tenants`: their credit meter is rebuilt too. */
  private prepaid(tenants: readonly string[]): string[] {
    const policy = this.deps.policy();
    return tenants.filter((t) => policy.tenantContext(t)?.credits !== undefined);
  }

  /**
   * The charges that set a tenant's meters of the current windows from its ledger sums (one
   * list per window), and a prepaid tenant's credit meter from its all-time spend and grants.
   */
  private chargesOf(tenant: string, sums: readonly (readonly WindowSum[])[], nowMs: number, credit?: CreditSum): MeterCharge[] {
    const policy = this.deps.policy();
    const ctx = policy.tenantContext(tenant);
    const charges: MeterCharge[] = [];
    if (!ctx) return charges;
    if (ctx.credits && credit && credit.spentMicros !== credit.grantedMicros) {
      charges.push({ key: creditsKey(tenant), amount: credit.spentMicros - credit.grantedMicros, expiresAtMs: 0 });
    }
    timeWindows.forEach((window, i) => {
      for (const sum of sums[i]!) {
        const limits = policy.effectiveLimits(ctx, sum.user, sum.task).filter((l) => l.window === window && l.kind !== LimitKind.CONCURRENCY);
        for (const m of bindMeters(limits, { tenant, user: sum.user, keyId: sum.keyId }, nowMs)) {
          // A token bucket is not rebuilt from the ledger: a lost bucket starts full (a known limit, see the README).
          if (m.bucket) continue;
          const amount = m.unit === "requests" ? sum.requests : m.unit === "tokens" ? sum.tokens : sum.costMicros;
          if (amount !== 0) charges.push({ key: m.key, amount, expiresAtMs: m.expiresAtMs });
        }
      }
    });
    return charges;
  }

  private async ledgerCall<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw new CounterStoreUnavailableError(`ledger unreadable, counters cannot be rebuilt: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }
}

/** A generation for counters rebuilt from `snapshot`; the random part tells two rebuilds from identical snapshots apart. */
function newGeneration(snapshot: string): string {
  return `${randomBytes(6).toString("base64url")}/${snapshot}`;
}

/** The database snapshot a generation was rebuilt from. */
export function snapshotOf(generation: string): string {
  return generation.slice(generation.indexOf("/") + 1);
}

import { create } from "@bufbuild/protobuf";
import type { Meter } from "../gen/admission/v1/admission_pb.js";
import { Per, Window } from "../gen/admission/v1/policy_pb.js";
import { TenantStatusSchema, type TenantStatus } from "../gen/admission/v1/policy_service_pb.js";
import type { CounterRebuild } from "./counter-rebuild.js";
import type { CounterStore } from "./counter-store.js";
import { CounterStoreUnavailableError } from "./counter-store.js";
import { meterView } from "./decide.js";
import { bindMeters, type BoundMeter, type MeterSubject } from "./meters.js";
import type { PolicySnapshot, TenantContext } from "./policy/policy-snapshot.js";
import type { Ledger, UsageTotals } from "./store/ledger.js";
import { usageTotalsMessage } from "./usage-totals.js";
import { windowSpan } from "./windows.js";
import type { CreditBalances } from "./credit-balances.js";

export interface TenantStatusDeps {
  readonly policy: () => PolicySnapshot;
  readonly counters: Pick<CounterStore, "read" | "openLeases">;
  readonly rebuild: Pick<CounterRebuild, "ensureWarm">;
  readonly ledger: Pick<Ledger, "usageByTenant">;
  readonly clock?: () => number;
  /** Prepaid tenants' granted totals, to show their credit meter (see CreditBalances). */
  readonly credits?: Pick<CreditBalances, "grantedMicros">;
}

/** Tenants whose counters are read at once. */
const tenantsAtOnce = 32;

const noUsage: UsageTotals = { requests: 0, inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, costMicros: 0 };

/**
 * Tenants at a glance, for an overview: status, plan and mode from the policy, this
 * month's usage from the ledger (one statement for every tenant), and from the counter
 * store the live meters of the tenant, its users and its API keys (the ones nearest
 * their limit) and how many of its reservations are open.
 */
export class TenantStatusReader {
  private readonly clock: () => number;

  constructor(private readonly deps: TenantStatusDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  async list(options: { readonly tenant?: string; readonly nearest: number }): Promise<TenantStatus[]> {
    const snapshot = this.deps.policy();
    const nowMs = this.clock();
    const ids = options.tenant ? [options.tenant] : [...snapshot.tenants.keys()].sort();
    const month = windowSpan(Window.MONTH, nowMs);
    const usage = await this.deps.ledger.usageByTenant({ tenants: options.tenant ? ids : undefined, startMs: month.startMs, endMs: nowMs + 1 });
    const keysByTenant = new Map<string, MeterSubject[]>();
    for (const key of snapshot.apiKeys.values()) {
      if (!options.tenant || key.tenant === options.tenant) {
        let keys = keysByTenant.get(key.tenant);
        if (!keys) keysByTenant.set(key.tenant, (keys = []));
        keys.push({ tenant: key.tenant, user: key.user, keyId: key.id });
      }
    }
    const out: TenantStatus[] = [];
    for (let i = 0; i < ids.length; i += tenantsAtOnce) {
      const batch = ids.slice(i, i + tenantsAtOnce).map((id) => snapshot.tenantContext(id)).filter((c) => c !== undefined);
      out.push(...await Promise.all(batch.map((ctx) => this.status(snapshot, ctx, keysByTenant.get(ctx.tenant.id) ?? [], usage.get(ctx.tenant.id) ?? noUsage, options.nearest, nowMs))));
    }
    return out;
  }

  private async status(snapshot: PolicySnapshot, ctx: TenantContext, keys: readonly MeterSubject[], usage: UsageTotals, nearest: number, nowMs: number): Promise<TenantStatus> {
    const tenant = ctx.tenant.id;
    const status = create(TenantStatusSchema, {
      tenant, name: ctx.tenant.name, status: ctx.tenant.status, plan: ctx.plan.code, atiToken: ctx.token.id, mode: ctx.mode,
      month: usageTotalsMessage(usage),
    });
    const meters = metersOf(snapshot, ctx, keys, nowMs);
    try {
      await this.deps.rebuild.ensureWarm(tenant);
      const [used, open] = await Promise.all([this.deps.counters.read(tenant, meters.map((m) => m.key)), this.deps.counters.openLeases(tenant)]);
      const granted = ctx.credits ? await (this.deps.credits?.grantedMicros(tenant) ?? 0) : 0;
      const views = meters.map((m, i) => meterView(m, used[i]!, nowMs, granted));
      views.sort((a, b) => fill(b) - fill(a));
      status.nearest = views.slice(0, nearest);
      status.openReservations = BigInt(open);
    } catch (err) {
      if (!(err instanceof CounterStoreUnavailableError)) throw err;
      status.problem = `meters and open reservations not shown: ${err.message}`;
    }
    return status;
  }
}

/**
 * Every metered limit of the tenant, its users and its keys, bound to its subject in the
 * current window, each meter once: a subject contributes the meters of its own `per`
 * (a key without a user is its own user).
 */
function metersOf(snapshot: PolicySnapshot, ctx: TenantContext, keys: readonly MeterSubject[], nowMs: number): BoundMeter[] {
  const tenant = ctx.tenant.id;
  const subjects: Array<{ subject: MeterSubject; pers: readonly Per[] }> = [
    { subject: { tenant, user: "", keyId: "" }, pers: [Per.TENANT] },
    ...[...ctx.users.keys()].map((user) => ({ subject: { tenant, user, keyId: "" }, pers: [Per.USER] })),
    ...keys.map((k) => ({ subject: k, pers: k.user ? [Per.KEY] : [Per.KEY, Per.USER] })),
  ];
  const byKey = new Map<string, BoundMeter>();
  for (const { subject, pers } of subjects) {
    for (const m of bindMeters(snapshot.effectiveLimits(ctx, subject.user, "*"), subject, nowMs)) {
      if (pers.includes(m.limit.per) && !byKey.has(m.key)) byKey.set(m.key, m);
    }
  }
  return [...byKey.values()];
}

/** How full a meter is: used / limit (a limit of 0 blocks: full); a token bucket's: what it lacks / its burst. */
function fill(m: Meter): number {
  if (m.burst > 0n) return Number(m.used) / Number(m.burst);
  return m.limit > 0n ? Number(m.used) / Number(m.limit) : 1;
}

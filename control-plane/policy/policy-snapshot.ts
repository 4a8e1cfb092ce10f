import { create } from "@bufbuild/protobuf";
import { RouteSchema, type Route } from "../../gen/admission/v1/admission_pb.js";
import type { ApiKey, AtiToken, Bundle, Limit, LimitAlgorithm, Model, Plan, Task, Tenant, User, Webhook } from "../../gen/admission/v1/policy_pb.js";
import { AccountStatus, FailurePolicy, LimitKind, LimitSource, Mode, Per, TokenStatus, Window } from "../../gen/admission/v1/policy_pb.js";
import { BundleValidationError, isPerRequestKind, normalizedPer, normalizedWindow, validateBundle } from "./validate-bundle.js";
import { timestampMs } from "../timestamps.js";
import { subscribed } from "../webhook-events.js";
import type { Principal } from "../credentials.js";

/** One limit after precedence (user > tenant > plan) for a subject and task. */
export interface EffectiveLimit {
  readonly kind: LimitKind;
  readonly window: Window;
  readonly per: Per;
  /** Task scope ("" for every task). */
  readonly task: string;
  /** -1: lifted. */
  readonly value: number;
  readonly mode: Mode;
  readonly source: LimitSource;
  /** Less specific limits this one overrides, e.g. "PLAN=1000". */
  readonly overrides: readonly string[];
  /** The winning limit's algorithm (absent or UNSPECIFIED: a fixed window) and burst (absent or 0: value). */
  readonly algorithm?: LimitAlgorithm;
  readonly burst?: number;
}

export interface CompiledApiKey {
  readonly id: string;
  readonly tenant: string;
  readonly user: string;
  readonly hash: Buffer;
  readonly tasks: ReadonlySet<string> | null;
  readonly expiresAtMs: number;
  readonly revoked: boolean;
  /** What authenticating with this key yields: one object per key and snapshot, not one per call. */
  readonly authenticated: { readonly ok: true; readonly principal: Principal };
}

export interface TenantContext {
  readonly tenant: Tenant;
  /** The tenant's users by id. */
  readonly users: ReadonlyMap<string, User>;
  readonly token: AtiToken;
  readonly plan: Plan;
  readonly features: ReadonlySet<string>;
  readonly mode: Mode;
  readonly failurePolicy: FailurePolicy;
  readonly tokenExpiresAtMs: number;
  /**
   * A prepaid tenant's (Tenant.prepaid, else its plan's) credit meter as a limit of its own:
   * the balance is one cost meter holding spent + reserved - granted, blocking above 0.
   */
  readonly credits?: EffectiveLimit;
}

export type RouteResult = { ok: true; routes: Route[] } | { ok: false; message: string };

/**
 * The whole config compiled for decisions: immutable once built and swapped
 * atomically by the policy holder. Derived lookups are memoized inside.
 */
export class PolicySnapshot {
  readonly models = new Map<string, Model>();
  readonly tasks = new Map<string, Task>();
  readonly plans = new Map<string, Plan>();
  readonly atiTokens = new Map<string, AtiToken>();
  readonly tenants = new Map<string, Tenant>();
  readonly apiKeys = new Map<string, CompiledApiKey>();
  readonly apiKeysByHash = new Map<string, CompiledApiKey>();
  /** Webhook endpoints by id (secrets included: never hand these to a caller). */
  readonly webhooks = new Map<string, Webhook>();
  private readonly modelsByClass = new Map<string, Model[]>();
  private readonly tenantContexts = new Map<string, TenantContext>();
  /** Effective limits by tenant, user ("" for none) and task: nested maps, so a lookup builds no key string. */
  private readonly limitCache = new Map<string, Map<string, Map<string, readonly EffectiveLimit[]>>>();
  private limitCacheSize = 0;
  private readonly routeCache = new Map<string, Route[]>();

  private constructor(readonly bundle: Bundle, readonly version: number, private readonly defaultFailurePolicy: FailurePolicy) {}

  /** Validates and compiles; throws BundleValidationError naming every problem. */
  static compile(bundle: Bundle, version: number, defaultFailurePolicy = FailurePolicy.FAIL_CLOSED): PolicySnapshot {
    const problems = validateBundle(bundle);
    if (problems.length > 0) throw new BundleValidationError(problems);
    const s = new PolicySnapshot(bundle, version, defaultFailurePolicy);
    for (const m of bundle.models) {
      s.models.set(m.name, m);
      const list = s.modelsByClass.get(m.modelClass) ?? [];
      list.push(m);
      s.modelsByClass.set(m.modelClass, list);
    }
    for (const t of bundle.tasks) s.tasks.set(t.code, t);
    for (const p of bundle.plans) s.plans.set(p.code, p);
    for (const t of bundle.atiTokens) s.atiTokens.set(t.id, t);
    for (const t of bundle.tenants) s.tenants.set(t.id, t);
    const usersByTenant = new Map<string, Map<string, User>>();
    for (const u of bundle.users) {
      let users = usersByTenant.get(u.tenant);
      if (!users) usersByTenant.set(u.tenant, (users = new Map()));
      users.set(u.id, u);
    }
    for (const k of bundle.apiKeys) {
      const tasks = k.tasks.length > 0 ? new Set(k.tasks) : null;
      const compiled: CompiledApiKey = {
        id: k.id,
        tenant: k.tenant,
        user: k.user,
        hash: Buffer.from(k.secretSha256, "hex"),
        tasks,
        expiresAtMs: timestampMs(k.expiresAt),
        revoked: k.revoked,
        authenticated: { ok: true, principal: { tenant: k.tenant, user: k.user, keyId: k.id, tasks } },
      };
      s.apiKeys.set(k.id, compiled);
      s.apiKeysByHash.set(k.secretSha256, compiled);
    }
    for (const w of bundle.webhooks) s.webhooks.set(w.id, w);
    for (const tenant of bundle.tenants) {
      const token = s.atiTokens.get(tenant.atiToken)!;
      const plan = s.plans.get(token.plan)!;
      const mode = tenant.mode === Mode.UNSPECIFIED ? Mode.ENFORCE : tenant.mode;
      s.tenantContexts.set(tenant.id, {
        tenant,
        users: usersByTenant.get(tenant.id) ?? new Map(),
        token,
        plan,
        features: new Set(plan.features),
        mode,
        credits: creditLimit(tenant, plan, mode),
        failurePolicy: tenant.failurePolicy === FailurePolicy.UNSPECIFIED ? defaultFailurePolicy : tenant.failurePolicy,
        tokenExpiresAtMs: timestampMs(token.expiresAt),
      });
    }
    return s;
  }

  static empty(defaultFailurePolicy = FailurePolicy.FAIL_CLOSED): PolicySnapshot {
    return PolicySnapshot.compile({ $typeName: "admission.v1.Bundle", models: [], tasks: [], plans: [], atiTokens: [], tenants: [], users: [], apiKeys: [], webhooks: [] }, 0, defaultFailurePolicy);
  }

  /** The enabled endpoints subscribed to an event of `type` about `tenant` ("": none): the tenant's own and the operators'. */
  webhooksFor(type: string, tenant: string): Webhook[] {
    return subscribed(this.webhooks.values(), type, tenant);
  }

  tenantContext(tenantId: string): TenantContext | undefined {
    return this.tenantContexts.get(tenantId);
  }

  user(tenantId: string, userId: string): User | undefined {
    return this.tenantContexts.get(tenantId)?.users.get(userId);
  }

  /** Why the tenant (or its token, or the user) may not run requests now, or undefined. */
  inactiveReason(ctx: TenantContext, userId: string, nowMs: number): { reason: "tenant" | "token"; message: string } | undefined {
    if (ctx.tenant.status === AccountStatus.SUSPENDED) return { reason: "tenant", message: `tenant "${ctx.tenant.id}" is suspended` };
    if (userId && ctx.users.get(userId)?.status === AccountStatus.SUSPENDED) {
      return { reason: "tenant", message: `user "${userId}" is suspended` };
    }
    if (ctx.token.status === TokenStatus.REVOKED) return { reason: "token", message: `ATI token "${ctx.token.id}" is revoked` };
    if (ctx.tokenExpiresAtMs > 0 && nowMs >= ctx.tokenExpiresAtMs) return { reason: "token", message: `ATI token "${ctx.token.id}" expired` };
    return undefined;
  }

  /**
   * Limits that apply to (tenant, user, task): for one (kind, window, task, per)
   * the most specific wins; a task-scoped limit and an unscoped one both apply.
   * Lifted limits (-1) are included so explanations can show them.
   */
  effectiveLimits(ctx: TenantContext, userId: string, task: string): readonly EffectiveLimit[] {
    const user = userId ? ctx.users.get(userId) : undefined;
    let byUser = this.limitCache.get(ctx.tenant.id);
    if (!byUser) this.limitCache.set(ctx.tenant.id, (byUser = new Map()));
    let byTask = byUser.get(user ? userId : "");
    if (!byTask) byUser.set(user ? userId : "", (byTask = new Map()));
    const cached = byTask.get(task);
    if (cached) return cached;

    const winners = new Map<string, { limit: Limit; source: LimitSource; overrides: string[] }>();
    const layers: Array<[LimitSource, Limit[]]> = [
      [LimitSource.PLAN, ctx.plan.limits],
      [LimitSource.TENANT, ctx.tenant.limits],
      [LimitSource.USER, user?.limits ?? []],
    ];
    for (const [source, limits] of layers) {
      for (const limit of limits) {
        if (limit.task && task !== "*" && limit.task !== task) continue;
        const key = `${limit.kind}|${normalizedWindow(limit)}|${limit.task}|${normalizedPer(limit)}`;
        const previous = winners.get(key);
        const overrides = previous ? [...previous.overrides, `${LimitSource[previous.source]}=${previous.limit.value}`] : [];
        winners.set(key, { limit, source, overrides });
      }
    }
    const result: EffectiveLimit[] = [];
    for (const { limit, source, overrides } of winners.values()) {
      result.push({
        kind: limit.kind,
        window: normalizedWindow(limit),
        per: normalizedPer(limit),
        task: limit.task,
        value: Number(limit.value),
        mode: limit.mode === Mode.UNSPECIFIED ? ctx.mode : limit.mode,
        source,
        overrides,
        algorithm: limit.algorithm,
        burst: Number(limit.burst),
      });
    }
    if (ctx.credits) result.push(ctx.credits);
    result.sort(compareLimits);
    if (this.limitCacheSize < 100_000) {
      byTask.set(task, result);
      this.limitCacheSize++;
    }
    return result;
  }

  /**
   * Route candidates for a task and a requested model name or class (empty:
   * the plan's first class for the task): the model itself first, then the
   * other models of its class, in catalog order.
   */
  routes(plan: Plan, task: string, requested: string): RouteResult {
    const cacheKey = `${plan.code}\u0000${task}\u0000${requested}`;
    const cached = this.routeCache.get(cacheKey);
    if (cached) return { ok: true, routes: cached };
    const classes = plan.taskAccess.find((a) => a.task === task)?.modelClasses ?? [];
    if (classes.length === 0) return { ok: false, message: `plan "${plan.code}" allows no model class for task "${task}"` };
    let models: Model[];
    const model = this.models.get(requested);
    if (!requested) {
      models = this.modelsByClass.get(classes[0]!) ?? [];
    } else if (model) {
      if (!classes.includes(model.modelClass)) {
        return { ok: false, message: `model "${requested}" (class ${model.modelClass}) is not allowed for task "${task}" on plan "${plan.code}"; allowed classes: ${classes.join(", ")}` };
      }
      models = [model, ...(this.modelsByClass.get(model.modelClass) ?? []).filter((m) => m !== model)];
    } else if (this.modelsByClass.has(requested)) {
      if (!classes.includes(requested)) return { ok: false, message: `model class "${requested}" is not allowed for task "${task}" on plan "${plan.code}"` };
      models = this.modelsByClass.get(requested)!;
    } else {
      return { ok: false, message: `unknown model "${requested.slice(0, 128)}"` };
    }
    const routes = models.map((m) =>
      create(RouteSchema, { provider: m.provider, model: m.name, providerModel: m.providerModel || m.name, modelClass: m.modelClass }),
    );
    this.routeCache.set(cacheKey, routes);
    return { ok: true, routes };
  }

  /** Ids of every tenant. */
  tenantIds(): string[] {
    return [...this.tenants.keys()];
  }
}

/** The credit meter's limit of a prepaid tenant (the tenant's `prepaid` wins over its plan's); undefined when not prepaid. */
function creditLimit(tenant: Tenant, plan: Plan, mode: Mode): EffectiveLimit | undefined {
  const prepaid = tenant.prepaid ?? plan.prepaid ?? false;
  if (!prepaid) return undefined;
  return {
    kind: LimitKind.CREDITS_MICROS, window: Window.UNSPECIFIED, per: Per.TENANT, task: "", value: 0, mode,
    source: tenant.prepaid !== undefined ? LimitSource.TENANT : LimitSource.PLAN, overrides: [],
  };
}

const kindOrder: Record<LimitKind, number> = {
  [LimitKind.UNSPECIFIED]: 99,
  [LimitKind.INPUT_TOKENS]: 0,
  [LimitKind.OUTPUT_TOKENS]: 1,
  [LimitKind.FILES]: 2,
  [LimitKind.AGENT_STEPS]: 3,
  [LimitKind.API_CALLS]: 4,
  [LimitKind.CONCURRENCY]: 5,
  [LimitKind.REQUESTS]: 6,
  [LimitKind.TOKENS]: 7,
  [LimitKind.BUDGET_MICROS]: 8,
  [LimitKind.CREDITS_MICROS]: 9,
};

/** Stable order: caps first, then concurrency, rates and quotas from the shortest window. */
function compareLimits(a: EffectiveLimit, b: EffectiveLimit): number {
  return kindOrder[a.kind] - kindOrder[b.kind] || a.window - b.window || a.per - b.per || a.task.localeCompare(b.task);
}

export { isPerRequestKind };

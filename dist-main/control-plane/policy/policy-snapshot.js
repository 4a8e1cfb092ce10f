import { create } from "@bufbuild/protobuf";
import { RouteSchema } from "../../gen/admission/v1/admission_pb.js";
import { AccountStatus, FailurePolicy, LimitKind, LimitSource, Mode, TokenStatus } from "../../gen/admission/v1/policy_pb.js";
import { BundleValidationError, isPerRequestKind, normalizedPer, normalizedWindow, validateBundle } from "./validate-bundle.js";
import { timestampMs } from "../timestamps.js";
/**
 * The whole config compiled for decisions: immutable once built and swapped
 * atomically by the policy holder. Derived lookups are memoized inside.
 */
export class PolicySnapshot {
    bundle;
    version;
    defaultFailurePolicy;
    models = new Map();
    tasks = new Map();
    plans = new Map();
    atiTokens = new Map();
    tenants = new Map();
    apiKeys = new Map();
    apiKeysByHash = new Map();
    modelsByClass = new Map();
    tenantContexts = new Map();
    /** Effective limits by tenant, user ("" for none) and task: nested maps, so a lookup builds no key string. */
    limitCache = new Map();
    limitCacheSize = 0;
    routeCache = new Map();
    constructor(bundle, version, defaultFailurePolicy) {
        this.bundle = bundle;
        this.version = version;
        this.defaultFailurePolicy = defaultFailurePolicy;
    }
    /** Validates and compiles; throws BundleValidationError naming every problem. */
    static compile(bundle, version, defaultFailurePolicy = FailurePolicy.FAIL_CLOSED) {
        const problems = validateBundle(bundle);
        if (problems.length > 0)
            throw new BundleValidationError(problems);
        const s = new PolicySnapshot(bundle, version, defaultFailurePolicy);
        for (const m of bundle.models) {
            s.models.set(m.name, m);
            const list = s.modelsByClass.get(m.modelClass) ?? [];
            list.push(m);
            s.modelsByClass.set(m.modelClass, list);
        }
        for (const t of bundle.tasks)
            s.tasks.set(t.code, t);
        for (const p of bundle.plans)
            s.plans.set(p.code, p);
        for (const t of bundle.atiTokens)
            s.atiTokens.set(t.id, t);
        for (const t of bundle.tenants)
            s.tenants.set(t.id, t);
        const usersByTenant = new Map();
        for (const u of bundle.users) {
            let users = usersByTenant.get(u.tenant);
            if (!users)
                usersByTenant.set(u.tenant, (users = new Map()));
            users.set(u.id, u);
        }
        for (const k of bundle.apiKeys) {
            const tasks = k.tasks.length > 0 ? new Set(k.tasks) : null;
            const compiled = {
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
        for (const tenant of bundle.tenants) {
            const token = s.atiTokens.get(tenant.atiToken);
            const plan = s.plans.get(token.plan);
            s.tenantContexts.set(tenant.id, {
                tenant,
                users: usersByTenant.get(tenant.id) ?? new Map(),
                token,
                plan,
                features: new Set(plan.features),
                mode: tenant.mode === Mode.UNSPECIFIED ? Mode.ENFORCE : tenant.mode,
                failurePolicy: tenant.failurePolicy === FailurePolicy.UNSPECIFIED ? defaultFailurePolicy : tenant.failurePolicy,
                tokenExpiresAtMs: timestampMs(token.expiresAt),
            });
        }
        return s;
    }
    static empty(defaultFailurePolicy = FailurePolicy.FAIL_CLOSED) {
        return PolicySnapshot.compile({ $typeName: "admission.v1.Bundle", models: [], tasks: [], plans: [], atiTokens: [], tenants: [], users: [], apiKeys: [] }, 0, defaultFailurePolicy);
    }
    tenantContext(tenantId) {
        return this.tenantContexts.get(tenantId);
    }
    user(tenantId, userId) {
        return this.tenantContexts.get(tenantId)?.users.get(userId);
    }
    /** Why the tenant (or its token, or the user) may not run requests now, or undefined. */
    inactiveReason(ctx, userId, nowMs) {
        if (ctx.tenant.status === AccountStatus.SUSPENDED)
            return { reason: "tenant", message: `tenant "${ctx.tenant.id}" is suspended` };
        if (userId && ctx.users.get(userId)?.status === AccountStatus.SUSPENDED) {
            return { reason: "tenant", message: `user "${userId}" is suspended` };
        }
        if (ctx.token.status === TokenStatus.REVOKED)
            return { reason: "token", message: `ATI token "${ctx.token.id}" is revoked` };
        if (ctx.tokenExpiresAtMs > 0 && nowMs >= ctx.tokenExpiresAtMs)
            return { reason: "token", message: `ATI token "${ctx.token.id}" expired` };
        return undefined;
    }
    /**
     * Limits that apply to (tenant, user, task): for one (kind, window, task, per)
     * the most specific wins; a task-scoped limit and an unscoped one both apply.
     * Lifted limits (-1) are included so explanations can show them.
     */
    effectiveLimits(ctx, userId, task) {
        const user = userId ? ctx.users.get(userId) : undefined;
        let byUser = this.limitCache.get(ctx.tenant.id);
        if (!byUser)
            this.limitCache.set(ctx.tenant.id, (byUser = new Map()));
        let byTask = byUser.get(user ? userId : "");
        if (!byTask)
            byUser.set(user ? userId : "", (byTask = new Map()));
        const cached = byTask.get(task);
        if (cached)
            return cached;
        const winners = new Map();
        const layers = [
            [LimitSource.PLAN, ctx.plan.limits],
            [LimitSource.TENANT, ctx.tenant.limits],
            [LimitSource.USER, user?.limits ?? []],
        ];
        for (const [source, limits] of layers) {
            for (const limit of limits) {
                if (limit.task && task !== "*" && limit.task !== task)
                    continue;
                const key = `${limit.kind}|${normalizedWindow(limit)}|${limit.task}|${normalizedPer(limit)}`;
                const previous = winners.get(key);
                const overrides = previous ? [...previous.overrides, `${LimitSource[previous.source]}=${previous.limit.value}`] : [];
                winners.set(key, { limit, source, overrides });
            }
        }
        const result = [];
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
            });
        }
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
    routes(plan, task, requested) {
        const cacheKey = `${plan.code}\u0000${task}\u0000${requested}`;
        const cached = this.routeCache.get(cacheKey);
        if (cached)
            return { ok: true, routes: cached };
        const classes = plan.taskAccess.find((a) => a.task === task)?.modelClasses ?? [];
        if (classes.length === 0)
            return { ok: false, message: `plan "${plan.code}" allows no model class for task "${task}"` };
        let models;
        const model = this.models.get(requested);
        if (!requested) {
            models = this.modelsByClass.get(classes[0]) ?? [];
        }
        else if (model) {
            if (!classes.includes(model.modelClass)) {
                return { ok: false, message: `model "${requested}" (class ${model.modelClass}) is not allowed for task "${task}" on plan "${plan.code}"; allowed classes: ${classes.join(", ")}` };
            }
            models = [model, ...(this.modelsByClass.get(model.modelClass) ?? []).filter((m) => m !== model)];
        }
        else if (this.modelsByClass.has(requested)) {
            if (!classes.includes(requested))
                return { ok: false, message: `model class "${requested}" is not allowed for task "${task}" on plan "${plan.code}"` };
            models = this.modelsByClass.get(requested);
        }
        else {
            return { ok: false, message: `unknown model "${requested.slice(0, 128)}"` };
        }
        const routes = models.map((m) => create(RouteSchema, { provider: m.provider, model: m.name, providerModel: m.providerModel || m.name, modelClass: m.modelClass }));
        this.routeCache.set(cacheKey, routes);
        return { ok: true, routes };
    }
    /** Ids of every tenant. */
    tenantIds() {
        return [...this.tenants.keys()];
    }
}
const kindOrder = {
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
};
/** Stable order: caps first, then concurrency, rates and quotas from the shortest window. */
function compareLimits(a, b) {
    return kindOrder[a.kind] - kindOrder[b.kind] || a.window - b.window || a.per - b.per || a.task.localeCompare(b.task);
}
export { isPerRequestKind };
//# sourceMappingURL=policy-snapshot.js.map
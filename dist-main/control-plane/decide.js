import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { AdmitResponseSchema, DenyReason, EffectiveLimitSchema, GetEffectivePolicyResponseSchema, MeterSchema, TaskPolicySchema, } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Mode, Window } from "../gen/admission/v1/policy_pb.js";
import { CounterStoreUnavailableError, reservedAmount } from "./counter-store.js";
import { reasonMapping, reasonName } from "./deny-reasons.js";
import { bindMeters, BoundMeterCache, costMicros } from "./meters.js";
import { FailurePolicy } from "../gen/admission/v1/policy_pb.js";
import { msTimestamp } from "./timestamps.js";
import { isTimeWindow } from "./windows.js";
/** Plans kept per snapshot at the most (a plan per principal, task and model asked for). */
const maxPlans = 200_000;
/** Upper bound of any count in a request: far above real use, far below 2^53. */
export const maxCount = 1_000_000_000;
/**
 * Admit: authenticate, check status, plan and model, per-request caps, then one
 * atomic step over every applicable meter. Denials are values, not throws.
 */
export class DecisionEngine {
    deps;
    clock;
    random;
    boundMeters = new BoundMeterCache();
    lowestThreshold;
    /** Plans by principal, task and model, for the snapshot `plansOf` (see planFor). */
    plans = new WeakMap();
    plansOf;
    planCount = 0;
    constructor(deps) {
        this.deps = deps;
        this.clock = deps.clock ?? Date.now;
        this.random = deps.random ?? pooledRandomBytes();
        this.lowestThreshold = Math.min(...deps.settings.alertThresholds);
    }
    async admit(req) {
        const started = performance.now();
        const response = await this.decide(req);
        const outcome = response.allowed ? (response.unmetered ? "unmetered" : "allowed") : "denied";
        this.deps.metrics.decisions.inc({ outcome, reason: response.allowed ? "" : reasonName(response.reason) });
        this.deps.metrics.decisionSeconds.observe((performance.now() - started) / 1000);
        return response;
    }
    async decide(req) {
        const nowMs = this.clock();
        const invalid = validateAdmit(req);
        if (invalid)
            return deny(DenyReason.INVALID_REQUEST, invalid, req.requestId);
        const snapshot = this.deps.policy();
        const auth = await this.deps.credentials.authenticate(req.credential, snapshot);
        if (!auth.ok)
            return deny(DenyReason.UNAUTHENTICATED, auth.message, req.requestId);
        const principal = auth.principal;
        const ctx = snapshot.tenantContext(principal.tenant);
        if (!ctx)
            return deny(DenyReason.UNAUTHENTICATED, `unknown tenant "${principal.tenant}"`, req.requestId);
        const who = principal;
        const inactive = snapshot.inactiveReason(ctx, principal.user, nowMs);
        if (inactive) {
            return this.denied(who, req, deny(inactive.reason === "tenant" ? DenyReason.TENANT_INACTIVE : DenyReason.TOKEN_INACTIVE, inactive.message, req.requestId));
        }
        const plan = this.planFor(snapshot, ctx, principal, req);
        if ("denial" in plan)
            return this.denied(who, req, plan.denial);
        const { task, routes, limits } = plan;
        const warnings = [];
        const caps = this.applyCaps(plan.caps, req, warnings, who);
        if ("denial" in caps)
            return this.denied(who, req, caps.denial);
        const maxOutputTokens = caps.maxOutputTokens;
        const inputTokens = Number(req.inputTokens);
        let reservedCost = 0;
        for (const model of plan.models) {
            reservedCost = Math.max(reservedCost, costMicros(inputTokens, maxOutputTokens, model.inputMicrosPerMtok, model.outputMicrosPerMtok));
        }
        const bound = this.boundMeters.bind(limits, who, nowMs);
        const meters = bound.meters;
        const amounts = { tokens: inputTokens + maxOutputTokens, costMicros: reservedCost };
        const leaseId = this.random(16).toString("base64url");
        const requestId = req.requestId || `req_${leaseId}`;
        const reservationId = this.deps.signer.sign({
            tenant: who.tenant, leaseId, user: who.user, keyId: who.keyId, task: task.code, model: routes[0].model,
            provider: routes[0].provider, requestId, reservedAtMs: nowMs, inputTokens, maxOutputTokens, costMicros: reservedCost,
        });
        const leaseExpiresAtMs = nowMs + this.deps.settings.leaseTtlMs;
        const base = {
            tenant: who.tenant, user: who.user, keyId: who.keyId, requestId, maxOutputTokens: BigInt(maxOutputTokens), routes,
        };
        const reserve = { tenant: who.tenant, leaseId, reservationId, requestId: req.requestId, meters: bound.ops, amounts, leaseExpiresAtMs, nowMs };
        let result;
        try {
            // A store without counters for this tenant (started empty, or lost them) has them rebuilt from the ledger first.
            result = await this.deps.rebuild.afterWarming(who.tenant, () => this.deps.counters.reserve(reserve));
            if (result.status === "cold")
                throw new CounterStoreUnavailableError("tenant counters lost again while rebuilding");
        }
        catch (err) {
            if (!(err instanceof CounterStoreUnavailableError))
                throw err;
            return this.storeUnavailable(ctx, who, req, { ...base, reservationId, leaseExpiresAt: msTimestamp(leaseExpiresAtMs) }, err);
        }
        if (result.status === "duplicate") {
            const used = await this.deps.counters.read(who.tenant, meters.map((m) => m.key)).catch(() => meters.map(() => 0));
            return create(AdmitResponseSchema, {
                ...base,
                allowed: true,
                httpStatus: 200,
                reservationId: result.lease.reservationId,
                leaseExpiresAt: msTimestamp(result.lease.expiresAtMs),
                meters: meters.map((m, i) => meterView(m, used[i], nowMs)),
                replayed: true,
                message: "replay of an earlier admit with the same request_id",
            });
        }
        if (result.status === "blocked") {
            const m = meters[result.index];
            const denial = limitDenial(m, result.used[result.index], reservedAmount(m.unit, amounts), nowMs);
            denial.meters = meters.map((bm, i) => meterView(bm, result.used[i], nowMs));
            Object.assign(denial, base, { maxOutputTokens: 0n, routes: [] });
            return this.denied(who, req, denial);
        }
        const views = new Array(meters.length);
        for (let i = 0; i < meters.length; i++) {
            const m = meters[i];
            const used = result.used[i];
            views[i] = meterView(m, used, nowMs);
            this.checkThresholds(m, used, reservedAmount(m.unit, amounts), warnings, who);
        }
        this.deps.metrics.activeReservations.inc();
        // The answer to nearly every call: a literal with every field, as create() would build it.
        return {
            $typeName: "admission.v1.AdmitResponse",
            allowed: true,
            reason: DenyReason.UNSPECIFIED,
            httpStatus: 200,
            message: "",
            retryAfterMs: 0n,
            reservationId,
            maxOutputTokens: base.maxOutputTokens,
            routes: routes.slice(),
            meters: views,
            warnings,
            deniedMeter: undefined,
            tenant: who.tenant,
            user: who.user,
            keyId: who.keyId,
            requestId,
            leaseExpiresAt: msTimestamp(leaseExpiresAtMs),
            unmetered: false,
            reservedCostMicros: BigInt(reservedCost),
            replayed: false,
        };
    }
    /**
     * What a decision needs about a principal, task and model that only a new policy
     * snapshot changes: the task, its routes and their models, the effective limits and
     * among them the per-request caps. Built on the first request and kept per snapshot;
     * a request the plan would deny gets its denial (not kept).
     */
    planFor(snapshot, ctx, principal, req) {
        if (this.plansOf !== snapshot) {
            this.plans = new WeakMap();
            this.plansOf = snapshot;
            this.planCount = 0;
        }
        let byTask = this.plans.get(principal);
        if (!byTask)
            this.plans.set(principal, (byTask = new Map()));
        let byModel = byTask.get(req.task);
        const cached = byModel?.get(req.model);
        if (cached)
            return cached;
        const task = snapshot.tasks.get(req.task);
        if (!task)
            return { denial: deny(DenyReason.TASK_UNKNOWN, `unknown task "${req.task}"`, req.requestId) };
        if (principal.tasks && !principal.tasks.has(task.code)) {
            return { denial: deny(DenyReason.FEATURE_NOT_IN_PLAN, `API key "${principal.keyId}" is not scoped to task "${task.code}"`, req.requestId) };
        }
        if (!ctx.features.has(task.feature)) {
            return { denial: deny(DenyReason.FEATURE_NOT_IN_PLAN, `feature "${task.feature}" of task "${task.code}" is not in plan "${ctx.plan.code}"`, req.requestId) };
        }
        const routed = snapshot.routes(ctx.plan, task.code, req.model);
        if (!routed.ok)
            return { denial: deny(DenyReason.MODEL_NOT_ALLOWED, routed.message, req.requestId) };
        const limits = snapshot.effectiveLimits(ctx, principal.user, task.code);
        const plan = {
            task,
            routes: routed.routes,
            models: routed.routes.map((r) => snapshot.models.get(r.model)),
            limits,
            caps: limits.filter((l) => l.window === Window.REQUEST && l.value >= 0),
        };
        // Bounded like the snapshot's own caches: past the bound, plans are built per request.
        if (this.planCount < maxPlans) {
            if (!byModel)
                byTask.set(req.task, (byModel = new Map()));
            byModel.set(req.model, plan);
            this.planCount++;
        }
        return plan;
    }
    /** Per-request caps: input, files, steps and API calls deny; output tokens clamp. */
    applyCaps(caps, req, warnings, who) {
        const requestedOut = Number(req.maxOutputTokens);
        let maxOutputTokens = requestedOut > 0 ? requestedOut : this.deps.settings.defaultMaxOutputTokens;
        let outputCapped = false;
        for (const limit of caps) {
            if (limit.kind === LimitKind.OUTPUT_TOKENS) {
                if (requestedOut > 0 && requestedOut <= limit.value)
                    continue;
                if (limit.mode === Mode.ENFORCE) {
                    maxOutputTokens = outputCapped ? Math.min(maxOutputTokens, limit.value) : requestedOut > 0 ? Math.min(requestedOut, limit.value) : limit.value;
                    outputCapped = true;
                }
                else if (requestedOut > limit.value) {
                    this.overLimit(limit, `max_output_tokens ${requestedOut} over the ${limit.value} cap`, warnings, who, req);
                }
                continue;
            }
            const asked = requestCount(limit.kind, req);
            if (asked <= limit.value)
                continue;
            const what = `${LimitKind[limit.kind].toLowerCase()} ${asked} over the per-request cap of ${limit.value}`;
            if (limit.mode === Mode.ENFORCE) {
                const denial = deny(DenyReason.REQUEST_TOO_LARGE, what, req.requestId);
                denial.deniedMeter = create(MeterSchema, {
                    kind: limit.kind, window: Window.REQUEST, task: limit.task, limit: BigInt(limit.value), used: BigInt(asked), mode: limit.mode, source: limit.source,
                });
                return { denial };
            }
            this.overLimit(limit, what, warnings, who, req);
        }
        return { maxOutputTokens };
    }
    /** A SOFT or SHADOW limit that would have denied. */
    overLimit(limit, what, warnings, who, req) {
        const shadow = limit.mode === Mode.SHADOW;
        if (!shadow)
            warnings.push(`soft limit exceeded: ${what}`);
        this.deps.metrics.wouldDeny.inc({ mode: shadow ? "shadow" : "soft", kind: LimitKind[limit.kind] });
        this.deps.audit.record({
            kind: shadow ? "decision.shadow_denied" : "decision.soft_exceeded",
            actor: actorOf(who),
            tenant: who.tenant,
            message: `${shadow ? "would have denied" : "soft limit exceeded"}: ${what}`,
            attributes: { task: req.task, model: req.model, kind: LimitKind[limit.kind], window: Window[limit.window] },
        });
    }
    /**
     * Warnings at the thresholds, for SOFT meters over their limit, and alerts
     * once per meter and window: only the decision that crosses a threshold
     * raises it. SHADOW meters over their limit are counted as would-be denials.
     */
    checkThresholds(m, used, amount, warnings, who) {
        const limit = m.limit.value;
        if (limit <= 0)
            return;
        const mode = m.limit.mode;
        // Nearly every decision ends here: within the limit and below every threshold, nothing to say.
        if (used <= limit && used < limit * this.lowestThreshold)
            return;
        const thresholds = this.deps.settings.alertThresholds;
        const before = used - amount;
        const label = meterLabel(m);
        if (used > limit && mode !== Mode.ENFORCE) {
            this.deps.metrics.wouldDeny.inc({ mode: mode === Mode.SHADOW ? "shadow" : "soft", kind: LimitKind[m.limit.kind] });
            if (mode === Mode.SOFT)
                warnings.push(`soft limit exceeded: ${label} at ${used}/${limit}`);
        }
        else if (mode !== Mode.SHADOW && used >= limit * thresholds[0]) {
            warnings.push(`${label} at ${Math.floor((used * 100) / limit)}% (${used}/${limit})`);
        }
        for (const threshold of thresholds) {
            const at = limit * threshold;
            if (before < at && used >= at) {
                this.deps.metrics.alerts.inc({ kind: LimitKind[m.limit.kind], threshold: String(threshold) });
                this.deps.audit.record({
                    kind: "alert.threshold",
                    actor: actorOf(who),
                    tenant: who.tenant,
                    message: `${label} reached ${Math.round(threshold * 100)}% of its limit (${used}/${limit}, mode ${Mode[mode]})`,
                    attributes: { key: m.key, threshold: String(threshold), mode: Mode[mode] },
                });
            }
        }
    }
    storeUnavailable(ctx, who, req, base, err) {
        this.deps.metrics.storeErrors.inc({ op: "reserve" });
        this.deps.logger.warn({ err: err.message, tenant: who.tenant }, "counter store unavailable");
        if (ctx.failurePolicy === FailurePolicy.FAIL_OPEN) {
            this.deps.audit.record({ kind: "store.unavailable", actor: actorOf(who), tenant: who.tenant, message: "allowed unmetered (FAIL_OPEN): counter store unavailable", attributes: { task: req.task } });
            return create(AdmitResponseSchema, { ...base, allowed: true, httpStatus: 200, unmetered: true, warnings: ["counter store unavailable: allowed unmetered"] });
        }
        return deny(DenyReason.UNAVAILABLE, "counter store unavailable (FAIL_CLOSED)", req.requestId, 1000);
    }
    denied(who, req, response) {
        response.tenant = who.tenant;
        response.user = who.user;
        response.keyId = who.keyId;
        this.deps.audit.record({
            kind: "decision.denied",
            actor: actorOf(who),
            tenant: who.tenant,
            message: `${reasonName(response.reason)}: ${response.message}`,
            attributes: { task: req.task.slice(0, 64), model: req.model.slice(0, 128), request_id: response.requestId, ...req.attributes },
        });
        return response;
    }
    /** Every limit that applies to a subject and task, where it came from and its usage. */
    async explain(subject, task) {
        const { principal, ctx, snapshot } = subject;
        const nowMs = this.clock();
        const limits = snapshot.effectiveLimits(ctx, principal.user, task || "*");
        const who = { tenant: principal.tenant, user: principal.user, keyId: principal.keyId };
        const meters = bindMeters(limits, who, nowMs);
        const status = [];
        await this.deps.rebuild.ensureWarm(who.tenant).catch((err) => {
            if (!(err instanceof CounterStoreUnavailableError))
                throw err;
            status.push("usage not shown: the counters could not be rebuilt from the ledger yet");
        });
        const used = await this.deps.counters.read(who.tenant, meters.map((m) => m.key));
        const usedByLimit = new Map(meters.map((m, i) => [m.limit, { used: used[i], meter: m }]));
        const inactive = snapshot.inactiveReason(ctx, principal.user, nowMs);
        status.push(inactive ? inactive.message : "tenant, user and ATI token active");
        if (principal.keyId) {
            const key = snapshot.apiKeys.get(principal.keyId);
            if (key?.revoked)
                status.push(`API key "${key.id}" is revoked`);
            else if (key && key.expiresAtMs > 0 && key.expiresAtMs <= nowMs)
                status.push(`API key "${key.id}" expired`);
        }
        return create(GetEffectivePolicyResponseSchema, {
            tenant: principal.tenant,
            user: principal.user,
            keyId: principal.keyId,
            atiToken: ctx.token.id,
            plan: ctx.plan.code,
            mode: ctx.mode,
            failurePolicy: ctx.failurePolicy,
            status,
            limits: limits.map((l) => {
                const u = usedByLimit.get(l);
                return create(EffectiveLimitSchema, {
                    kind: l.kind, window: l.window, per: l.per, task: l.task, value: BigInt(l.value), mode: l.mode, source: l.source,
                    overrides: [...l.overrides], subject: u?.meter.subject ?? "",
                    used: BigInt(u?.used ?? 0),
                    remaining: BigInt(l.value < 0 ? -1 : l.window === Window.REQUEST ? l.value : Math.max(0, l.value - (u?.used ?? 0))),
                    resetMs: BigInt(u && u.meter.resetAtMs > 0 ? u.meter.resetAtMs - nowMs : 0),
                });
            }),
            tasks: [...snapshot.tasks.values()].filter((t) => !task || t.code === task).map((t) => {
                const access = ctx.plan.taskAccess.find((a) => a.task === t.code);
                const allowed = ctx.features.has(t.feature) && (!principal.tasks || principal.tasks.has(t.code)) && !!access;
                const classes = access?.modelClasses ?? [];
                const routes = allowed ? classes.flatMap((c) => {
                    const r = snapshot.routes(ctx.plan, t.code, c);
                    return r.ok ? r.routes : [];
                }) : [];
                return create(TaskPolicySchema, { task: t.code, feature: t.feature, allowed, modelClasses: classes, routes });
            }),
        });
    }
}
/** How warnings and alerts name a meter, e.g. "TOKENS/DAY/DRAFT alice". */
function meterLabel(m) {
    return `${LimitKind[m.limit.kind]}/${Window[m.limit.window]}${m.limit.task ? `/${m.limit.task}` : ""} ${m.subject}`;
}
function actorOf(who) {
    return who.keyId ? `key:${who.keyId}` : who.user ? `user:${who.user}` : "anonymous";
}
function requestCount(kind, req) {
    switch (kind) {
        case LimitKind.INPUT_TOKENS:
            return Number(req.inputTokens);
        case LimitKind.FILES:
            return Number(req.files);
        case LimitKind.AGENT_STEPS:
            return Number(req.agentSteps);
        case LimitKind.API_CALLS:
            return Number(req.apiCalls);
        default:
            return 0;
    }
}
function deny(reason, message, requestId, retryAfterMs = 0) {
    return create(AdmitResponseSchema, {
        allowed: false,
        reason,
        httpStatus: reasonMapping(reason).httpStatus,
        message,
        requestId,
        retryAfterMs: BigInt(retryAfterMs),
    });
}
/** The denial for a meter that would exceed its limit. */
function limitDenial(m, used, amount, nowMs) {
    const { kind, window } = m.limit;
    let reason;
    if (kind === LimitKind.CONCURRENCY)
        reason = DenyReason.CONCURRENCY_LIMITED;
    else if (kind === LimitKind.BUDGET_MICROS)
        reason = DenyReason.BUDGET_EXCEEDED;
    else
        reason = window === Window.DAY || window === Window.MONTH ? DenyReason.QUOTA_EXCEEDED : DenyReason.RATE_LIMITED;
    // Concurrency frees up when a request finishes: a short hint; windows reset at their end.
    const retryAfterMs = m.resetAtMs > 0 ? m.resetAtMs - nowMs : 1000;
    const what = `${LimitKind[kind]}${isTimeWindow(window) ? `/${Window[window]}` : ""}${m.limit.task ? ` for task ${m.limit.task}` : ""} of ${m.subject}`;
    const message = amount > m.limit.value
        ? `${what}: this request needs ${amount}, more than the whole limit of ${m.limit.value}`
        : `${what}: ${used} of ${m.limit.value} used, this request needs ${amount}`;
    const denial = deny(reason, message, "", retryAfterMs);
    denial.deniedMeter = meterView(m, used, nowMs);
    return denial;
}
/** A literal rather than create(MeterSchema, …): eight of these per decision, every field set. */
function meterView(m, used, nowMs) {
    return {
        $typeName: "admission.v1.Meter",
        kind: m.limit.kind,
        window: m.limit.window,
        per: m.limit.per,
        subject: m.subject,
        task: m.limit.task,
        limit: m.limitBig,
        used: BigInt(used),
        remaining: BigInt(Math.max(0, m.limit.value - used)),
        resetMs: BigInt(m.resetAtMs > 0 ? Math.max(0, m.resetAtMs - nowMs) : 0),
        mode: m.limit.mode,
        source: m.limit.source,
    };
}
/**
 * randomBytes, drawn from a pooled buffer refilled 4 KiB at a time: one
 * CSPRNG call per 256 lease ids instead of one per decision.
 */
function pooledRandomBytes() {
    const poolSize = 4096;
    let pool = randomBytes(poolSize);
    let offset = 0;
    return (bytes) => {
        if (bytes > poolSize)
            return randomBytes(bytes);
        if (offset + bytes > poolSize) {
            pool = randomBytes(poolSize);
            offset = 0;
        }
        const out = Buffer.from(pool.subarray(offset, offset + bytes));
        offset += bytes;
        return out;
    };
}
const printable = /^[\x21-\x7e]{1,128}$/;
/** A clear message for malformed input, or undefined. */
export function validateAdmit(req) {
    if (!req.credential)
        return "credential is required";
    if (!req.task)
        return "task is required";
    if (req.task.length > 64)
        return "task is longer than 64 characters";
    if (req.model.length > 128)
        return "model is longer than 128 characters";
    if (req.requestId && !printable.test(req.requestId))
        return "request_id must be 1-128 printable ASCII characters";
    const count = countProblem("input_tokens", req.inputTokens) ?? countProblem("max_output_tokens", req.maxOutputTokens) ?? countProblem("files", req.files)
        ?? countProblem("agent_steps", req.agentSteps) ?? countProblem("api_calls", req.apiCalls);
    if (count)
        return count;
    let attributes = 0;
    for (const k in req.attributes) {
        if (++attributes > 32)
            return "at most 32 attributes";
        if (k.length > 64 || req.attributes[k].length > 256)
            return "attribute keys are at most 64 and values 256 characters";
    }
    return undefined;
}
const maxCountBigInt = BigInt(maxCount);
/** Why a count in a request is out of range (negative, or beyond maxCount), if it is. */
export function countProblem(field, value) {
    if (value < 0n)
        return `${field} must not be negative`;
    if (value > maxCountBigInt)
        return `${field} ${value} is beyond the maximum of ${maxCount}`;
    return undefined;
}
//# sourceMappingURL=decide.js.map
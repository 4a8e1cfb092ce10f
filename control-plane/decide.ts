import { randomBytes } from "node:crypto";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { AdmitRequest, AdmitResponse, GetEffectivePolicyResponse, Meter, Route } from "../gen/admission/v1/admission_pb.js";
import {
  AdmitResponseSchema, DenyReason, EffectiveLimitSchema, GetEffectivePolicyResponseSchema, MeterSchema, TaskPolicySchema,
} from "../gen/admission/v1/admission_pb.js";
import type { Model, Task } from "../gen/admission/v1/policy_pb.js";
import { LimitAlgorithm, LimitKind, Mode, Per, Window } from "../gen/admission/v1/policy_pb.js";
import type { CounterStore } from "./counter-store.js";
import {
  CounterStoreMisconfiguredError, CounterStoreUnavailableError, reservedAmount, type MeterOp, type ReservedAmounts, type ReserveRequest, type ReserveResult,
} from "./counter-store.js";
import type { CounterRebuild } from "./counter-rebuild.js";
import type { CredentialVerifier, Principal } from "./credentials.js";
import { reasonMapping, reasonName } from "./deny-reasons.js";
import type { BoundMeter } from "./meters.js";
import { bindMeters, BoundMeterCache, costMicros } from "./meters.js";
import type { Metrics } from "./metrics.js";
import type { EffectiveLimit, PolicySnapshot, TenantContext } from "./policy/policy-snapshot.js";
import type { ReservationClaims, ReservationSigner } from "./reservation-id.js";
import type { AuditLog } from "./store/audit-log.js";
import { FailurePolicy } from "../gen/admission/v1/policy_pb.js";
import { RpcError } from "./rpc-error.js";
import { msTimestamp } from "./timestamps.js";
import { isTimeWindow } from "./windows.js";
import type { Logger } from "pino";
import type { OutboxEvent } from "./store/webhook-outbox.js";
import { actorOf, meterLabel, ThresholdAlerts } from "./threshold-alerts.js";
import type { WebhookEvents } from "./webhook-events.js";
import { trace, type Tracer } from "@opentelemetry/api";
import { childSpan } from "./tracing.js";
import { creditsShown, type CreditBalances } from "./credit-balances.js";
import { backlogMicros, bucketGranularityMs, bucketRemaining, bucketResetMs, bucketRetryAfterMs, bucketStep } from "./token-bucket.js";

export interface DecisionSettings {
  /** Lease time to live when the caller does not renew. */
  readonly leaseTtlMs: number;
  /** max_output_tokens when the request names none and no OUTPUT_TOKENS cap applies. */
  readonly defaultMaxOutputTokens: number;
  /** Soft-threshold alerts, as fractions of the limit (default 0.8 and 1). */
  readonly alertThresholds: readonly number[];
}

export interface DecisionDeps {
  readonly policy: () => PolicySnapshot;
  readonly credentials: CredentialVerifier;
  readonly counters: CounterStore;
  readonly rebuild: CounterRebuild;
  readonly signer: ReservationSigner;
  readonly audit: Pick<AuditLog, "record">;
  /** Where alerts go as webhook events (written before the Admit that raised them answers). */
  readonly events?: Pick<WebhookEvents, "event" | "write">;
  /** The alert path (built from settings, audit, metrics and events when not given). */
  readonly alerts?: ThresholdAlerts;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly settings: DecisionSettings;
  readonly clock?: () => number;
  readonly random?: (bytes: number) => Buffer;
  /** The counter-store step in a child span of the decision's, when tracing is on. */
  readonly tracer?: Tracer;
  /** Prepaid tenants' granted totals, to show credit meters and alert on them (without: shown as granted 0). */
  readonly credits?: Pick<CreditBalances, "grantedMicros">;
}

/** See DecisionEngine.planFor. */
interface AdmitPlan {
  readonly task: Task;
  readonly routes: Route[];
  /** The model of each route, in order. */
  readonly models: readonly Model[];
  readonly limits: readonly EffectiveLimit[];
  /** The per-request caps among the limits (REQUEST window, not lifted). */
  readonly caps: readonly EffectiveLimit[];
  /** What a downgrade is from: the model or class asked for, or the plan's default class. */
  readonly requested: string;
  /** The class of the routes. */
  readonly modelClass: string;
  /** The task access's downgrade classes, in order, without the class asked for. */
  readonly downgrades: readonly Downgrade[];
}

/** A class a request is admitted on when its own model's estimate does not fit a budget. */
interface Downgrade {
  readonly modelClass: string;
  readonly routes: Route[];
  readonly models: readonly Model[];
}

/** Plans kept per snapshot at the most (a plan per principal, task and model asked for). */
const maxPlans = 200_000;

/** Upper bound of any count in a request: far above real use, far below 2^53. */
export const maxCount = 1_000_000_000;

/** What the explain and the admit paths both need about an authenticated caller. */
interface Subject {
  readonly principal: Principal;
  readonly ctx: TenantContext;
  readonly snapshot: PolicySnapshot;
}

/**
 * Admit: authenticate, check status, plan and model, per-request caps, then one
 * atomic step over every applicable meter. Denials are values, not throws.
 */
export class DecisionEngine {
  private readonly clock: () => number;
  private readonly random: (bytes: number) => Buffer;
  private readonly boundMeters = new BoundMeterCache();
  private readonly lowestThreshold: number;
  private readonly alerts: ThresholdAlerts;
  /** Plans by principal, task and model, for the snapshot `plansOf` (see planFor). */
  private plans = new WeakMap<Principal, Map<string, Map<string, AdmitPlan>>>();
  private plansOf: PolicySnapshot | undefined;
  private planCount = 0;

  constructor(private readonly deps: DecisionDeps) {
    this.clock = deps.clock ?? Date.now;
    this.random = deps.random ?? pooledRandomBytes();
    this.lowestThreshold = Math.min(...deps.settings.alertThresholds);
    this.alerts = deps.alerts ?? new ThresholdAlerts({ metrics: deps.metrics, audit: deps.audit, events: deps.events, thresholds: deps.settings.alertThresholds });
  }

  /**
   * Decides and, when allowed, reserves. A caller that left before the reservation
   * (its cancellation often arrives with the request, seen only after the call
   * started) gets none: the call ends CANCELLED, as if it never ran.
   */
  async admit(req: AdmitRequest, caller?: { readonly cancelled?: boolean }): Promise<AdmitResponse> {
    const started = performance.now();
    const response = await this.decide(req, caller);
    const outcome = response.allowed ? (response.unmetered ? "unmetered" : "allowed") : "denied";
    this.deps.metrics.decisions.inc({ outcome, reason: response.allowed ? "" : reasonName(response.reason) });
    this.deps.metrics.decisionSeconds.observe((performance.now() - started) / 1000);
    return response;
  }

  private async decide(req: AdmitRequest, caller: { readonly cancelled?: boolean } | undefined): Promise<AdmitResponse> {
    const invalid = validateAdmit(req);
    if (invalid) return deny(DenyReason.INVALID_REQUEST, invalid, req.requestId);
    const snapshot = this.deps.policy();
    const auth = await this.deps.credentials.authenticate(req.credential, snapshot);
    if (!auth.ok) return deny(DenyReason.UNAUTHENTICATED, auth.message, req.requestId);
    return this.decideFor(auth.principal, snapshot, req, true, caller);
  }

  /**
   * What Admit would answer now for a principal an admin names (its credential
   * is not needed: an API key's is checked by id), reserving nothing and
   * recording nothing: no lease, no audit event, no alert, no metric. The
   * meters read the counters as they are and show the request as if reserved;
   * a meter it would overflow denies as Admit would.
   */
  async simulate(principal: Principal, req: AdmitRequest): Promise<AdmitResponse> {
    const invalid = validateAdmitCounts(req);
    if (invalid) return deny(DenyReason.INVALID_REQUEST, invalid, "");
    const snapshot = this.deps.policy();
    if (principal.keyId) {
      const key = snapshot.apiKeys.get(principal.keyId);
      const auth = key ? this.deps.credentials.checkApiKey(key) : { ok: false as const, message: "invalid API key" };
      if (!auth.ok) return deny(DenyReason.UNAUTHENTICATED, auth.message, "");
    }
    return this.decideFor(principal, snapshot, req, false);
  }

  /** The decision after authentication; `effects` false: a simulation (see simulate). */
  private async decideFor(principal: Principal, snapshot: PolicySnapshot, req: AdmitRequest, effects: boolean, caller?: { readonly cancelled?: boolean }): Promise<AdmitResponse> {
    const nowMs = this.clock();
    const ctx = snapshot.tenantContext(principal.tenant);
    if (!ctx) return deny(DenyReason.UNAUTHENTICATED, `unknown tenant "${principal.tenant}"`, req.requestId);
    const who: MeterWho = principal;
    if (effects && this.deps.tracer) trace.getActiveSpan()?.setAttribute("admission.mode", Mode[ctx.mode] ?? String(ctx.mode));

    const inactive = snapshot.inactiveReason(ctx, principal.user, nowMs);
    if (inactive) {
      return this.denied(who, req, effects, deny(inactive.reason === "tenant" ? DenyReason.TENANT_INACTIVE : DenyReason.TOKEN_INACTIVE, inactive.message, req.requestId));
    }
    const plan = this.planFor(snapshot, ctx, principal, req);
    if ("denial" in plan) return this.denied(who, req, effects, plan.denial);
    const { task, routes, limits } = plan;

    const warnings: string[] = [];
    const caps = this.applyCaps(plan.caps, req, warnings, who, effects);
    if ("denial" in caps) return this.denied(who, req, effects, caps.denial);
    const maxOutputTokens = caps.maxOutputTokens;

    const inputTokens = Number(req.inputTokens);
    let reservedCost = estimatedCostMicros(plan.models, inputTokens, maxOutputTokens);
    const bound = this.boundMeters.bind(limits, who, nowMs);
    const meters = bound.meters;
    let amounts: ReservedAmounts = { tokens: inputTokens + maxOutputTokens, costMicros: reservedCost };
    const leaseId = effects ? this.random(16).toString("base64url") : "";
    const requestId = effects ? req.requestId || `req_${leaseId}` : req.requestId;
    const claims: ReservationClaims = {
      tenant: who.tenant, leaseId, user: who.user, keyId: who.keyId, task: task.code, model: routes[0]!.model,
      provider: routes[0]!.provider, requestId, reservedAtMs: nowMs, inputTokens, maxOutputTokens, costMicros: reservedCost,
    };
    let reservationId = effects ? this.deps.signer.sign(claims) : "";
    const leaseExpiresAtMs = nowMs + this.deps.settings.leaseTtlMs;
    const leaseExpiresAt = effects ? msTimestamp(leaseExpiresAtMs) : undefined;

    const base = {
      tenant: who.tenant, user: who.user, keyId: who.keyId, requestId, maxOutputTokens: BigInt(maxOutputTokens), routes,
    };
    const reserve: ReserveRequest = { tenant: who.tenant, leaseId, reservationId, requestId: req.requestId, meters: bound.ops, amounts, leaseExpiresAtMs, nowMs };
    if (caller?.cancelled) throw new RpcError(GrpcStatus.CANCELLED, "the caller left before the call ran");
    let result: Exclude<ReserveResult, { status: "cold" }>;
    let degraded: DowngradeRecord | undefined;
    let noDowngradeFits = false;
    try {
      result = await this.reserveOnce(reserve, effects);
      if (result.status === "blocked" && plan.downgrades.length > 0 && isBudgetKind(meters[result.index]!.limit.kind)) {
        // Nothing was reserved: try each downgrade class in one more atomic step, the first that fits is admitted.
        const blocked = result;
        const m = meters[blocked.index]!;
        const why = meterProblem(m, blocked.used[blocked.index]!, reservedCost);
        for (const downgrade of plan.downgrades) {
          const cost = estimatedCostMicros(downgrade.models, inputTokens, maxOutputTokens);
          if (cost >= reservedCost) continue; // no cheaper: blocked on the same budget
          const route = downgrade.routes[0]!;
          const downgradeAmounts = { tokens: amounts.tokens, costMicros: cost };
          const downgradeId = effects ? this.deps.signer.sign({ ...claims, model: route.model, provider: route.provider, costMicros: cost }) : "";
          const next = await this.reserveOnce({ ...reserve, reservationId: downgradeId, amounts: downgradeAmounts }, effects);
          if (next.status === "blocked" && isBudgetKind(meters[next.index]!.limit.kind)) continue;
          result = next;
          amounts = downgradeAmounts;
          reservedCost = cost;
          if (next.status !== "reserved") break; // blocked on another meter (that denial stands), or a replay
          reservationId = downgradeId;
          degraded = { mode: Mode.ENFORCE, downgrade, meter: m, warning: `downgraded from ${plan.requested} to ${route.model} (class ${downgrade.modelClass}): ${why}` };
          break;
        }
        noDowngradeFits = result === blocked;
      }
    } catch (err) {
      if (!(err instanceof CounterStoreUnavailableError)) throw err;
      return this.storeUnavailable(ctx, who, req, { ...base, reservationId, leaseExpiresAt }, err, effects);
    }

    if (result.status === "duplicate") {
      const used = await this.deps.counters.read(who.tenant, meters.map((m) => m.key)).catch(() => meters.map(() => 0));
      const granted = ctx.credits ? await this.grantedMicros(who.tenant) : 0;
      // The earlier admit may have been degraded: the replay routes to the model its reservation names.
      const replayedOn = replayedDowngrade(plan, this.deps.signer.verify(result.lease.reservationId));
      return create(AdmitResponseSchema, {
        ...base,
        ...(replayedOn ? { routes: replayedOn.routes, degraded: true, degradedFrom: plan.requested } : {}),
        allowed: true,
        httpStatus: 200,
        reservationId: result.lease.reservationId,
        leaseExpiresAt: msTimestamp(result.lease.expiresAtMs),
        meters: meters.map((m, i) => meterView(m, used[i]!, nowMs, granted)),
        replayed: true,
        message: "replay of an earlier admit with the same request_id",
      });
    }
    const granted = ctx.credits ? await this.grantedMicros(who.tenant) : 0;
    if (result.status === "blocked") {
      const m = meters[result.index]!;
      const denial = limitDenial(m, result.used[result.index]!, reservedAmount(m.unit, amounts), nowMs, granted);
      if (noDowngradeFits) denial.message += `; no downgrade class (${plan.downgrades.map((d) => d.modelClass).join(", ")}) fits either`;
      denial.meters = meters.map((bm, i) => meterView(bm, result.used[i]!, nowMs, granted));
      Object.assign(denial, base, { maxOutputTokens: 0n, routes: [] });
      return this.denied(who, req, effects, denial);
    }

    const views: Meter[] = new Array(meters.length);
    let raised: OutboxEvent[] | undefined;
    let overBudget: BoundMeter | undefined;
    for (let i = 0; i < meters.length; i++) {
      const m = meters[i]!;
      const used = result.used[i]!;
      views[i] = meterView(m, used, nowMs, granted);
      const alerts = m.limit.kind === LimitKind.CREDITS_MICROS
        ? this.checkThresholds(creditsShown(m, used, granted).meter, used + granted, reservedAmount(m.unit, amounts), warnings, who, effects, nowMs)
        : this.checkThresholds(m, used, reservedAmount(m.unit, amounts), warnings, who, effects, nowMs);
      if (alerts) (raised ??= []).push(...alerts);
      if (!m.enforce && used > m.limit.value && isBudgetKind(m.limit.kind)) overBudget ??= m;
    }
    if (raised) await this.writeEvents(raised, who.tenant);
    // SOFT and SHADOW budgets keep the model asked for: the downgrade that ENFORCE would have made is recorded.
    if (!degraded && overBudget && plan.downgrades.length > 0) degraded = wouldDowngrade(plan, meters, result.used, { inputTokens, maxOutputTokens, reservedCost });
    if (degraded) this.recordDowngrade(degraded, plan, who, req, requestId, warnings, effects);
    if (effects) this.deps.metrics.activeReservations.inc();
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
      routes: degraded?.mode === Mode.ENFORCE ? degraded.downgrade.routes.slice() : routes.slice(),
      meters: views,
      warnings,
      deniedMeter: undefined,
      tenant: who.tenant,
      user: who.user,
      keyId: who.keyId,
      requestId,
      leaseExpiresAt,
      unmetered: false,
      reservedCostMicros: BigInt(reservedCost),
      replayed: false,
      degraded: degraded?.mode === Mode.ENFORCE,
      degradedFrom: degraded?.mode === Mode.ENFORCE ? plan.requested : "",
    };
  }

  /** One atomic reserve (or, simulating, what it would answer). */
  private reserveOnce(reserve: ReserveRequest, effects: boolean): Promise<Exclude<ReserveResult, { status: "cold" }>> {
    if (!effects) return this.wouldReserve(reserve.tenant, reserve.meters, reserve.amounts);
    // A store without counters for this tenant (started empty, or lost them) has them rebuilt from the ledger first.
    return childSpan(this.deps.tracer, "counters.reserve", async (span) => {
      const reserved = await this.deps.rebuild.afterWarming(reserve.tenant, () => this.deps.counters.reserve(reserve));
      span?.setAttribute("admission.counters.result", reserved.status);
      if (reserved.status === "cold") throw new CounterStoreUnavailableError("tenant counters lost again while rebuilding");
      return reserved;
    }, { "admission.counters.meters": reserve.meters.length });
  }

  /** A downgrade made (ENFORCE) or that a SOFT or SHADOW budget would have made: a warning, a metric and an audit event. */
  private recordDowngrade(d: DowngradeRecord, plan: AdmitPlan, who: MeterWho, req: AdmitRequest, requestId: string, warnings: string[], effects: boolean): void {
    warnings.push(d.warning);
    if (!effects) return;
    const mode = d.mode === Mode.ENFORCE ? "enforce" : d.mode === Mode.SHADOW ? "shadow" : "soft";
    const kind = LimitKind[d.meter.limit.kind];
    this.deps.metrics.downgrades.inc({ mode, kind, from: plan.modelClass, to: d.downgrade.modelClass });
    this.deps.audit.record({
      kind: d.mode === Mode.ENFORCE ? "decision.degraded" : "decision.would_degrade",
      actor: actorOf(who),
      tenant: who.tenant,
      message: d.warning,
      attributes: {
        task: req.task, from: plan.requested, to: d.downgrade.routes[0]!.model, kind, window: Window[d.meter.limit.window], request_id: requestId,
      },
    });
  }

  /**
   * What a decision needs about a principal, task and model that only a new policy
   * snapshot changes: the task, its routes and their models, the effective limits and
   * among them the per-request caps. Built on the first request and kept per snapshot;
   * a request the plan would deny gets its denial (not kept).
   */
  private planFor(snapshot: PolicySnapshot, ctx: TenantContext, principal: Principal, req: AdmitRequest): AdmitPlan | { denial: AdmitResponse } {
    if (this.plansOf !== snapshot) {
      this.plans = new WeakMap();
      this.plansOf = snapshot;
      this.planCount = 0;
    }
    let byTask = this.plans.get(principal);
    if (!byTask) this.plans.set(principal, (byTask = new Map()));
    let byModel = byTask.get(req.task);
    const cached = byModel?.get(req.model);
    if (cached) return cached;

    const task = snapshot.tasks.get(req.task);
    if (!task) return { denial: deny(DenyReason.TASK_UNKNOWN, `unknown task "${req.task}"`, req.requestId) };
    if (principal.tasks && !principal.tasks.has(task.code)) {
      return { denial: deny(DenyReason.FEATURE_NOT_IN_PLAN, `API key "${principal.keyId}" is not scoped to task "${task.code}"`, req.requestId) };
    }
    if (!ctx.features.has(task.feature)) {
      return { denial: deny(DenyReason.FEATURE_NOT_IN_PLAN, `feature "${task.feature}" of task "${task.code}" is not in plan "${ctx.plan.code}"`, req.requestId) };
    }
    const routed = snapshot.routes(ctx.plan, task.code, req.model);
    if (!routed.ok) return { denial: deny(DenyReason.MODEL_NOT_ALLOWED, routed.message, req.requestId) };
    const limits = snapshot.effectiveLimits(ctx, principal.user, task.code);
    const access = ctx.plan.taskAccess.find((a) => a.task === task.code);
    const modelClass = routed.routes[0]?.modelClass ?? "";
    const plan: AdmitPlan = {
      task,
      routes: routed.routes,
      models: routed.routes.map((r) => snapshot.models.get(r.model)!),
      limits,
      caps: limits.filter((l) => l.window === Window.REQUEST && l.value >= 0),
      requested: req.model || (access?.modelClasses[0] ?? ""),
      modelClass,
      downgrades: downgradesOf(snapshot, ctx, task.code, modelClass, access?.downgradeClasses ?? []),
    };
    // Bounded like the snapshot's own caches: past the bound, plans are built per request.
    if (this.planCount < maxPlans) {
      if (!byModel) byTask.set(req.task, (byModel = new Map()));
      byModel.set(req.model, plan);
      this.planCount++;
    }
    return plan;
  }

  /** What reserve would answer now, from the counters as they are: the same order and rule, nothing written (simulate). */
  private async wouldReserve(tenant: string, ops: readonly MeterOp[], amounts: ReservedAmounts): Promise<Exclude<ReserveResult, { status: "cold" }>> {
    await this.deps.rebuild.ensureWarm(tenant);
    const used = await this.deps.counters.read(tenant, ops.map((op) => op.key));
    const after = new Array<number>(ops.length);
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      const amount = reservedAmount(op.unit, amounts);
      if (op.bucket) {
        // A bucket read as its backlog: the step from "now" 0.
        const step = bucketStep(used[i]! / 1000, 0, amount, op.bucket, op.enforce ? op.bucket.toleranceMs : Infinity);
        if (!step.fits) return { status: "blocked", index: i, used };
        after[i] = backlogMicros(step.tatMs, 0);
      } else {
        if (op.enforce && used[i]! + amount > op.limit) return { status: "blocked", index: i, used };
        after[i] = used[i]! + amount;
      }
    }
    return { status: "reserved", used: after };
  }

  /** A prepaid tenant's granted total (cached: see CreditBalances), to show and alert on its credit meter. */
  private grantedMicros(tenant: string): number | Promise<number> {
    return this.deps.credits?.grantedMicros(tenant) ?? 0;
  }

  /** Per-request caps: input, files, steps and API calls deny; output tokens clamp. */
  private applyCaps(caps: readonly EffectiveLimit[], req: AdmitRequest, warnings: string[], who: MeterWho, effects: boolean): { maxOutputTokens: number } | { denial: AdmitResponse } {
    const requestedOut = Number(req.maxOutputTokens);
    let maxOutputTokens = requestedOut > 0 ? requestedOut : this.deps.settings.defaultMaxOutputTokens;
    let outputCapped = false;
    for (const limit of caps) {
      if (limit.kind === LimitKind.OUTPUT_TOKENS) {
        if (requestedOut > 0 && requestedOut <= limit.value) continue;
        if (limit.mode === Mode.ENFORCE) {
          maxOutputTokens = outputCapped ? Math.min(maxOutputTokens, limit.value) : requestedOut > 0 ? Math.min(requestedOut, limit.value) : limit.value;
          outputCapped = true;
        } else if (requestedOut > limit.value) {
          this.overLimit(limit, `max_output_tokens ${requestedOut} over the ${limit.value} cap`, warnings, who, req, effects);
        }
        continue;
      }
      const asked = requestCount(limit.kind, req);
      if (asked <= limit.value) continue;
      const what = `${LimitKind[limit.kind].toLowerCase()} ${asked} over the per-request cap of ${limit.value}`;
      if (limit.mode === Mode.ENFORCE) {
        const denial = deny(DenyReason.REQUEST_TOO_LARGE, what, req.requestId);
        denial.deniedMeter = create(MeterSchema, {
          kind: limit.kind, window: Window.REQUEST, task: limit.task, limit: BigInt(limit.value), used: BigInt(asked), mode: limit.mode, source: limit.source,
        });
        return { denial };
      }
      this.overLimit(limit, what, warnings, who, req, effects);
    }
    return { maxOutputTokens };
  }

  /** A SOFT or SHADOW limit that would have denied. */
  private overLimit(limit: EffectiveLimit, what: string, warnings: string[], who: MeterWho, req: AdmitRequest, effects: boolean): void {
    const shadow = limit.mode === Mode.SHADOW;
    if (!shadow) warnings.push(`soft limit exceeded: ${what}`);
    if (!effects) return;
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
  private checkThresholds(m: BoundMeter, used: number, amount: number, warnings: string[], who: MeterWho, effects: boolean, nowMs: number): OutboxEvent[] | undefined {
    if (m.bucket) return this.checkBucket(m, used, warnings, effects);
    const limit = m.limit.value;
    if (limit <= 0) return;
    const mode = m.limit.mode;
    // Nearly every decision ends here: within the limit and below every threshold, nothing to say.
    if (used <= limit && used < limit * this.lowestThreshold) return;
    const thresholds = this.deps.settings.alertThresholds;
    const before = used - amount;
    const label = meterLabel(m);
    if (used > limit && mode !== Mode.ENFORCE) {
      if (effects) this.deps.metrics.wouldDeny.inc({ mode: mode === Mode.SHADOW ? "shadow" : "soft", kind: LimitKind[m.limit.kind] });
      if (mode === Mode.SOFT) warnings.push(`soft limit exceeded: ${label} at ${used}/${limit}`);
    } else if (mode !== Mode.SHADOW && used >= limit * thresholds[0]!) {
      warnings.push(`${label} at ${Math.floor((used * 100) / limit)}% (${used}/${limit})`);
    }
    if (!effects) return;
    return this.alerts.raise(m, before, used, who, nowMs);
  }

  /**
   * A token bucket has no thresholds to alert on (it drains and refills all the time, and has
   * no window to alert once in): only a SOFT or SHADOW bucket taken beyond its burst is said,
   * as a would-be denial. `backlogUs`: after the reservation.
   */
  private checkBucket(m: BoundMeter, backlogUs: number, warnings: string[], effects: boolean): undefined {
    const bucket = m.bucket!;
    if (m.limit.mode === Mode.ENFORCE || backlogUs / 1000 <= bucket.toleranceMs + bucketGranularityMs) return;
    if (effects) this.deps.metrics.wouldDeny.inc({ mode: m.limit.mode === Mode.SHADOW ? "shadow" : "soft", kind: LimitKind[m.limit.kind] });
    if (m.limit.mode === Mode.SOFT) warnings.push(`soft limit exceeded: ${meterLabel(m)} token bucket of ${bucket.burst} overdrawn`);
  }

  /**
   * An Admit's alerts are in the outbox (or, while the database is unreachable, fsync'd to
   * the event spool) before it answers. Should both fail, the Admit is still answered (its
   * decision does not depend on them): the alerts are logged, counted and audited.
   */
  private async writeEvents(events: OutboxEvent[], tenant: string): Promise<void> {
    try {
      await this.deps.events!.write(undefined, events);
    } catch (err) {
      for (const e of events) this.deps.metrics.webhookEventsUnrecorded.inc({ type: e.type });
      this.deps.logger.error({ err: String(err), tenant, events: events.map((e) => e.id) }, "webhook events not recorded: outbox unavailable");
    }
  }

  private storeUnavailable(ctx: TenantContext, who: MeterWho, req: AdmitRequest, base: MessageInitShape<typeof AdmitResponseSchema>, err: Error, effects: boolean): AdmitResponse {
    if (err instanceof CounterStoreMisconfiguredError) {
      // No outage that passes: FAIL_OPEN would leave the tenant unmetered for as long as nobody fixes it.
      if (effects) {
        this.deps.metrics.storeErrors.inc({ op: "reserve" });
        this.deps.metrics.storeMisconfigured.inc({ op: "reserve" });
        this.deps.logger.error({ err: err.message, tenant: who.tenant }, "counter store misconfigured; Admit denied");
      }
      return deny(DenyReason.UNAVAILABLE, "counter store misconfigured (it refuses this control plane or cannot be trusted): denied for every tenant until it is fixed", req.requestId, 1000);
    }
    if (effects) {
      this.deps.metrics.storeErrors.inc({ op: "reserve" });
      this.deps.logger.warn({ err: err.message, tenant: who.tenant }, "counter store unavailable");
    }
    if (ctx.failurePolicy === FailurePolicy.FAIL_OPEN) {
      if (effects) this.deps.audit.record({ kind: "store.unavailable", actor: actorOf(who), tenant: who.tenant, message: "allowed unmetered (FAIL_OPEN): counter store unavailable", attributes: { task: req.task } });
      return create(AdmitResponseSchema, { ...base, allowed: true, httpStatus: 200, unmetered: true, warnings: ["counter store unavailable: allowed unmetered"] });
    }
    return deny(DenyReason.UNAVAILABLE, "counter store unavailable (FAIL_CLOSED)", req.requestId, 1000);
  }

  private denied(who: MeterWho, req: AdmitRequest, effects: boolean, response: AdmitResponse): AdmitResponse {
    response.tenant = who.tenant;
    response.user = who.user;
    response.keyId = who.keyId;
    if (!effects) return response;
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
  async explain(subject: Subject, task: string): Promise<GetEffectivePolicyResponse> {
    const { principal, ctx, snapshot } = subject;
    const nowMs = this.clock();
    const limits = snapshot.effectiveLimits(ctx, principal.user, task || "*");
    const who = { tenant: principal.tenant, user: principal.user, keyId: principal.keyId };
    // A tenant explained without a user or key has no single subject for its per-user and per-key limits: no meter is shown for them.
    const named = who.user !== "" || who.keyId !== "";
    const meters = bindMeters(limits, who, nowMs).filter((m) => named || m.limit.per === Per.TENANT);
    const status: string[] = [];
    await this.deps.rebuild.ensureWarm(who.tenant).catch((err) => {
      if (!(err instanceof CounterStoreUnavailableError)) throw err;
      status.push("usage not shown: the counters could not be rebuilt from the ledger yet");
    });
    const used = await this.deps.counters.read(who.tenant, meters.map((m) => m.key));
    const granted = ctx.credits ? await this.grantedMicros(who.tenant) : 0;
    const usedByLimit = new Map(meters.map((m, i) => [m.limit, { used: used[i]!, meter: m }]));
    const inactive = snapshot.inactiveReason(ctx, principal.user, nowMs);
    status.push(inactive ? inactive.message : "tenant, user and ATI token active");
    if (principal.keyId) {
      const key = snapshot.apiKeys.get(principal.keyId);
      if (key?.revoked) status.push(`API key "${key.id}" is revoked`);
      else if (key && key.expiresAtMs > 0 && key.expiresAtMs <= nowMs) status.push(`API key "${key.id}" expired`);
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
      limits: limits.map((limit) => {
        const found = usedByLimit.get(limit);
        const bucket = found?.meter.bucket;
        if (found && bucket) {
          const l = limit;
          const view = meterView(found.meter, found.used, nowMs);
          return create(EffectiveLimitSchema, {
            kind: l.kind, window: l.window, per: l.per, task: l.task, value: BigInt(l.value), mode: l.mode, source: l.source,
            overrides: [...l.overrides], subject: found.meter.subject, used: view.used, remaining: view.remaining, resetMs: view.resetMs,
            algorithm: LimitAlgorithm.TOKEN_BUCKET, burst: view.burst,
          });
        }
        // A credit meter shows what was granted as its value and spent + reserved as used.
        const shown = found && creditsShown(found.meter, found.used, granted);
        const l = shown?.meter.limit ?? limit;
        const u = shown && { used: shown.used, meter: found!.meter };
        return create(EffectiveLimitSchema, {
          kind: l.kind, window: l.window, per: l.per, task: l.task, value: BigInt(l.value), mode: l.mode, source: l.source,
          algorithm: l.algorithm ?? LimitAlgorithm.UNSPECIFIED, burst: BigInt(l.burst ?? 0),
          overrides: [...l.overrides], subject: u?.meter.subject ?? "",
          used: BigInt(u?.used ?? 0),
          // A bucket without a meter shown (a per-user one explained for the tenant) is full.
          remaining: BigInt(l.value < 0 ? -1 : l.window === Window.REQUEST ? l.value : !u && l.algorithm === LimitAlgorithm.TOKEN_BUCKET && l.value > 0 ? l.burst || l.value : Math.max(0, l.value - (u?.used ?? 0))),
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
        return create(TaskPolicySchema, { task: t.code, feature: t.feature, allowed, modelClasses: classes, routes, downgradeClasses: access?.downgradeClasses ?? [] });
      }),
    });
  }
}

type MeterWho = { readonly tenant: string; readonly user: string; readonly keyId: string };

function requestCount(kind: LimitKind, req: AdmitRequest): number {
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

function deny(reason: DenyReason, message: string, requestId: string, retryAfterMs = 0): AdmitResponse {
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
function limitDenial(m: BoundMeter, used: number, amount: number, nowMs: number, grantedMicros: number): AdmitResponse {
  if (m.bucket) return bucketDenial(m, used, amount, nowMs);
  const { kind, window } = m.limit;
  if (kind === LimitKind.CREDITS_MICROS) return creditsDenial(m, used, amount, nowMs, grantedMicros);
  let reason: DenyReason;
  if (kind === LimitKind.CONCURRENCY) reason = DenyReason.CONCURRENCY_LIMITED;
  else if (kind === LimitKind.BUDGET_MICROS) reason = DenyReason.BUDGET_EXCEEDED;
  else reason = window === Window.DAY || window === Window.MONTH ? DenyReason.QUOTA_EXCEEDED : DenyReason.RATE_LIMITED;
  // Concurrency frees up when a request finishes: a short hint; windows reset at their end.
  const retryAfterMs = m.resetAtMs > 0 ? m.resetAtMs - nowMs : 1000;
  const denial = deny(reason, meterProblem(m, used, amount), "", retryAfterMs);
  denial.deniedMeter = meterView(m, used, nowMs);
  return denial;
}

/** A credit meter that cannot hold the request's estimated cost: no window resets it, only a grant (no retry-after). */
function creditsDenial(m: BoundMeter, value: number, amount: number, nowMs: number, grantedMicros: number): AdmitResponse {
  const balance = -value;
  const message = `credits of tenant ${m.subject}: balance ${balance} micro-USD of ${grantedMicros} granted, this request's estimated cost is ${amount}`;
  const denial = deny(DenyReason.CREDITS_EXHAUSTED, message, "", 0);
  denial.deniedMeter = meterView(m, value, nowMs, grantedMicros);
  return denial;
}

/** Why a meter holding `used` does not take `amount` more, naming it. */
function meterProblem(m: BoundMeter, used: number, amount: number): string {
  const { kind, window } = m.limit;
  // A credit meter holds spent + reserved - granted: its negation is the balance.
  if (kind === LimitKind.CREDITS_MICROS) return `credits of tenant ${m.subject}: balance ${-used} micro-USD, this request's estimated cost is ${amount}`;
  const what = `${LimitKind[kind]}${isTimeWindow(window) ? `/${Window[window]}` : ""}${m.limit.task ? ` for task ${m.limit.task}` : ""} of ${m.subject}`;
  return amount > m.limit.value
    ? `${what}: this request needs ${amount}, more than the whole limit of ${m.limit.value}`
    : `${what}: ${used} of ${m.limit.value} used, this request needs ${amount}`;
}

/** Meters a downgrade answers: a budget, or a prepaid tenant's credit balance. */
function isBudgetKind(kind: LimitKind): boolean {
  return kind === LimitKind.BUDGET_MICROS || kind === LimitKind.CREDITS_MICROS;
}

/** What an Admit reserves for a request on these candidates: the estimate at the dearest. */
function estimatedCostMicros(models: readonly Model[], inputTokens: number, maxOutputTokens: number): number {
  let cost = 0;
  for (const model of models) cost = Math.max(cost, costMicros(inputTokens, maxOutputTokens, model.inputMicrosPerMtok, model.outputMicrosPerMtok));
  return cost;
}

/** A task access's downgrade classes with their routes, in order: without the class asked for, each once. */
function downgradesOf(snapshot: PolicySnapshot, ctx: TenantContext, task: string, requestedClass: string, classes: readonly string[]): Downgrade[] {
  const downgrades: Downgrade[] = [];
  const seen = new Set([requestedClass]);
  for (const modelClass of classes) {
    if (seen.has(modelClass)) continue;
    seen.add(modelClass);
    const routed = snapshot.routes(ctx.plan, task, modelClass);
    if (!routed.ok || routed.routes.length === 0) continue;
    downgrades.push({ modelClass, routes: routed.routes, models: routed.routes.map((r) => snapshot.models.get(r.model)!) });
  }
  return downgrades;
}

/** The downgrade whose first route the claims of an earlier reservation for this plan name, if they name one. */
function replayedDowngrade(plan: AdmitPlan, claims: ReservationClaims | undefined): Downgrade | undefined {
  if (!claims || plan.routes[0]?.model === claims.model) return undefined;
  return plan.downgrades.find((d) => d.routes[0]!.model === claims.model);
}

/** A downgrade made (mode ENFORCE), or one a SOFT or SHADOW budget meter would have made. */
interface DowngradeRecord {
  readonly mode: Mode;
  readonly downgrade: Downgrade;
  /** The budget meter the requested model did not fit. */
  readonly meter: BoundMeter;
  readonly warning: string;
}

/**
 * After a reservation that took SOFT or SHADOW budget meters over their limit (`used`:
 * every meter after it): the first downgrade class whose estimate would have kept
 * every budget meter within its limit, which ENFORCE would have admitted on.
 */
function wouldDowngrade(plan: AdmitPlan, meters: readonly BoundMeter[], used: readonly number[], r: { inputTokens: number; maxOutputTokens: number; reservedCost: number }): DowngradeRecord | undefined {
  const over = meters.findIndex((m, i) => !m.enforce && used[i]! > m.limit.value && isBudgetKind(m.limit.kind));
  if (over < 0) return undefined;
  for (const downgrade of plan.downgrades) {
    const cost = estimatedCostMicros(downgrade.models, r.inputTokens, r.maxOutputTokens);
    if (cost >= r.reservedCost) continue;
    if (meters.some((m, i) => isBudgetKind(m.limit.kind) && used[i]! - r.reservedCost + cost > m.limit.value)) continue;
    const meter = meters[over]!;
    const why = meterProblem(meter, used[over]! - r.reservedCost, r.reservedCost);
    const mode = meter.limit.mode;
    return {
      mode, downgrade, meter,
      warning: `${Mode[mode]} budget: would have downgraded from ${plan.requested} to ${downgrade.routes[0]!.model} (class ${downgrade.modelClass}), kept ${plan.requested}: ${why}`,
    };
  }
  return undefined;
}

/**
 * The denial for a token bucket that lacks room: RATE_LIMITED, retry after exactly the time
 * until the request fits (see token-bucket.ts). `backlogUs`: the bucket's before the request.
 */
function bucketDenial(m: BoundMeter, backlogUs: number, amount: number, nowMs: number): AdmitResponse {
  const bucket = m.bucket!;
  const what = `${LimitKind[m.limit.kind]}/${Window[m.limit.window]}${m.limit.task ? ` for task ${m.limit.task}` : ""} of ${m.subject}`;
  const shape = `token bucket of ${bucket.burst} refilling ${m.limit.value} per ${Window[m.limit.window]}`;
  const message = amount > bucket.burst
    ? `${what}: this request needs ${amount}, more than the whole ${shape}`
    : `${what}: ${bucketRemaining(bucket, backlogUs)} left in the ${shape}, this request needs ${amount}`;
  const denial = deny(DenyReason.RATE_LIMITED, message, "", bucketRetryAfterMs(bucket, backlogUs, amount));
  denial.deniedMeter = meterView(m, backlogUs, nowMs);
  return denial;
}

/**
 * A literal rather than create(MeterSchema, …): eight of these per decision, every field set.
 * `used`: a count, or a token bucket's backlog in µs (shown as what the bucket lacks, the whole
 * units in it and the time until it is full). `grantedMicros`: for a credit meter (see
 * creditsShown), the tenant's granted total.
 */
export function meterView(m: BoundMeter, used: number, nowMs: number, grantedMicros = 0): Meter {
  if (m.bucket) {
    const remaining = bucketRemaining(m.bucket, used);
    return {
      $typeName: "admission.v1.Meter",
      kind: m.limit.kind, window: m.limit.window, per: m.limit.per, subject: m.subject, task: m.limit.task, limit: m.limitBig,
      used: BigInt(m.bucket.burst - remaining), remaining: BigInt(remaining), resetMs: BigInt(bucketResetMs(used)),
      mode: m.limit.mode, source: m.limit.source, algorithm: LimitAlgorithm.TOKEN_BUCKET, burst: BigInt(m.bucket.burst),
    };
  }
  if (m.limit.kind === LimitKind.CREDITS_MICROS) ({ meter: m, used } = creditsShown(m, used, grantedMicros));
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
    algorithm: 0,
    burst: 0n,
  };
}

/**
 * randomBytes, drawn from a pooled buffer refilled 4 KiB at a time: one
 * CSPRNG call per 256 lease ids instead of one per decision.
 */
function pooledRandomBytes(): (bytes: number) => Buffer {
  const poolSize = 4096;
  let pool = randomBytes(poolSize);
  let offset = 0;
  return (bytes) => {
    if (bytes > poolSize) return randomBytes(bytes);
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
export function validateAdmit(req: AdmitRequest): string | undefined {
  if (!req.credential) return "credential is required";
  return validateAdmitCounts(req);
}

/** validateAdmit without the credential (simulate names its subject instead). */
function validateAdmitCounts(req: AdmitRequest): string | undefined {
  if (!req.task) return "task is required";
  if (req.task.length > 64) return "task is longer than 64 characters";
  if (req.model.length > 128) return "model is longer than 128 characters";
  if (req.requestId && !printable.test(req.requestId)) return "request_id must be 1-128 printable ASCII characters";
  const count = countProblem("input_tokens", req.inputTokens) ?? countProblem("max_output_tokens", req.maxOutputTokens) ?? countProblem("files", req.files)
    ?? countProblem("agent_steps", req.agentSteps) ?? countProblem("api_calls", req.apiCalls);
  if (count) return count;
  let attributes = 0;
  for (const k in req.attributes) {
    if (++attributes > 32) return "at most 32 attributes";
    if (k.length > 64 || req.attributes[k]!.length > 256) return "attribute keys are at most 64 and values 256 characters";
  }
  return undefined;
}

const maxCountBigInt = BigInt(maxCount);

/** Why a count in a request is out of range (negative, or beyond maxCount), if it is. */
export function countProblem(field: string, value: bigint): string | undefined {
  if (value < 0n) return `${field} must not be negative`;
  if (value > maxCountBigInt) return `${field} ${value} is beyond the maximum of ${maxCount}`;
  return undefined;
}

export type { Subject as ExplainSubject };

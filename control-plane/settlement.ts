import { create } from "@bufbuild/protobuf";
import { status as Code } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { trace, type Tracer } from "@opentelemetry/api";
import { childSpan } from "./tracing.js";
import type { RenewRequest, RenewResponse, SettleRequest, SettleResponse } from "../gen/admission/v1/admission_pb.js";
import { Outcome, RenewResponseSchema } from "../gen/admission/v1/admission_pb.js";
import type { CounterStore, LeaseRecord, LeaseUsage, SettleLeaseResult } from "./counter-store.js";
import { CounterStoreUnavailableError } from "./counter-store.js";
import type { CounterRebuild } from "./counter-rebuild.js";
import type { CredentialVerifier } from "./credentials.js";
import { countProblem } from "./decide.js";
import { usageCostMicros } from "./meters.js";
import type { Metrics } from "./metrics.js";
import type { PolicySnapshot } from "./policy/policy-snapshot.js";
import type { ReservationClaims, ReservationSigner } from "./reservation-id.js";
import { RpcError } from "./rpc-error.js";
import type { AuditLog } from "./store/audit-log.js";
import type { Ledger, LedgerRow } from "./store/ledger.js";
import { msTimestamp } from "./timestamps.js";
import { settledAmount } from "./counter-store.js";
import { bindMeters } from "./meters.js";
import type { OutboxEvent } from "./store/webhook-outbox.js";
import type { ThresholdAlerts } from "./threshold-alerts.js";
import type { WebhookEvents } from "./webhook-events.js";
import { creditsShown, type CreditBalances } from "./credit-balances.js";
import { LimitKind } from "../gen/admission/v1/policy_pb.js";

export interface SettlementSettings {
  readonly leaseTtlMs: number;
  /** A lease's whole lifetime, from its Admit: Renew never moves its expiry past reservedAt + this. */
  readonly maxLeaseTtlMs: number;
  /** How long a settled lease waits for its ledger row before the sweeper writes it. */
  readonly recordGraceMs: number;
  /** Sweeper period; 0 disables the timer (tests call sweep()). */
  readonly sweepIntervalMs: number;
}

export interface SettlementDeps {
  readonly policy: () => PolicySnapshot;
  readonly credentials: CredentialVerifier;
  readonly counters: CounterStore;
  readonly rebuild: CounterRebuild;
  readonly signer: ReservationSigner;
  readonly ledger: Pick<Ledger, "append" | "find" | "replaySpool">;
  readonly audit: Pick<AuditLog, "record">;
  /** The alert path: a Settle whose usage exceeds its reservation may cross a threshold. */
  readonly alerts?: ThresholdAlerts;
  /** Builds lease.expired events. */
  readonly events?: Pick<WebhookEvents, "event">;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly settings: SettlementSettings;
  readonly clock?: () => number;
  /** Counter-store steps and ledger writes in child spans of the call's, when tracing is on. */
  readonly tracer?: Tracer;
  /** Prepaid tenants' granted totals, to alert on credit meters (see CreditBalances). */
  readonly credits?: Pick<CreditBalances, "grantedMicros">;
}

/**
 * A recorded settle whose counters could not be brought up to date yet (the store
 * was unreachable, or its row still sits in the spool): `resettle` when its counter
 * script never confirmed; otherwise it ran in `appliedIn` (if at all) and what is
 * left is to reconcile the row with the tenant's current generation.
 */
interface PendingCounterUpdate {
  readonly claims: ReservationClaims;
  readonly usage: LeaseUsage;
  readonly resettle: boolean;
  readonly appliedIn?: string;
  /** The ledger row's transaction, when known (not for spooled rows). */
  readonly xid?: string;
}

const maxPendingCounterUpdates = 100_000;

/**
 * Settles reservations exactly once, renews and expires leases, and keeps the
 * counters in step with the ledger when the counter store loses data (see
 * CounterRebuild). A Settle is acknowledged only after its ledger row is
 * durable; the ledger's unique reservation id makes every write idempotent.
 */
export class Settlement {
  private readonly clock: () => number;
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<number> | undefined;
  private readonly pending: PendingCounterUpdate[] = [];

  constructor(private readonly deps: SettlementDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  start(): void {
    const every = this.deps.settings.sweepIntervalMs;
    if (every <= 0 || this.timer) return;
    this.timer = setInterval(() => void this.sweep().catch((err) => this.deps.logger.error({ err }, "lease sweep failed")), every);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.sweeping;
  }

  async settle(req: SettleRequest): Promise<SettleResponse> {
    const claims = await this.authorize(req.reservationId, req.credential);
    const invalid = validateSettle(req);
    if (invalid) throw new RpcError(Code.INVALID_ARGUMENT, invalid);
    const nowMs = this.clock();
    const usage = this.usageOf(req, claims, nowMs);
    if (this.deps.tracer) this.traceClaims(claims);

    const result = await this.settleLease(claims, usage, nowMs);
    if (!result) {
      // The usage is recorded now; the counters catch up when the store is back.
      this.deps.metrics.storeErrors.inc({ op: "settle" });
      const { inserted, row, xid } = await this.record(ledgerRow(claims, usage));
      if (inserted) this.defer({ claims, usage, resettle: true, xid });
      return settleResponse(req.reservationId, row, !inserted);
    }

    if (result.status === "settled") {
      // Alerts this usage raised commit with its row, so they are durable before the Settle is acknowledged.
      const events = await this.settleAlerts(claims, result.lease, usage, nowMs);
      const { row, xid } = await this.record(ledgerRow(claims, usage), { generation: result.generation, events });
      await this.confirm({ claims, usage, resettle: false, appliedIn: result.generation, xid }, true);
      this.deps.metrics.activeReservations.dec();
      this.deps.metrics.settles.inc({ result: "settled" });
      return settleResponse(req.reservationId, row, false);
    }
    if (result.status === "already") {
      // The first result stands; make sure its row is durable before answering.
      const settled = result.lease.state === "settled";
      const first = settled ? result.lease.usage! : expiredUsage(claims, nowMs);
      const { row, xid } = await this.record(ledgerRow(claims, first), { generation: result.generation });
      // The first settle may have died before confirming its row (a replica killed mid-settle, the
      // data plane replaying): confirm it now rather than leave the lease to the sweeper's grace period.
      // An expired lease stays the sweeper's to record (it audits the expiry).
      await this.confirm({ claims, usage: usageOfRow(row), resettle: false, appliedIn: result.generation, xid }, settled);
      this.deps.metrics.settles.inc({ result: "duplicate" });
      return settleResponse(req.reservationId, row, true);
    }
    // The counter store no longer knows the lease (its generation was lost): the
    // signed id still says who reserved what and when. Only the database can
    // tell a first settle from a repeat here, so this one is never spooled.
    const { inserted, row, xid } = await this.record(ledgerRow(claims, usage), { spool: false });
    if (inserted) await this.reconcile({ claims, usage, resettle: false, xid });
    this.deps.metrics.settles.inc({ result: inserted ? "late" : "duplicate" });
    return settleResponse(req.reservationId, row, !inserted);
  }

  async renew(req: RenewRequest): Promise<RenewResponse> {
    const claims = await this.authorize(req.reservationId, req.credential);
    const { leaseTtlMs, maxLeaseTtlMs } = this.deps.settings;
    if (req.ttlMs < 0n || req.ttlMs > BigInt(maxLeaseTtlMs)) {
      throw new RpcError(Code.INVALID_ARGUMENT, `ttl_ms must be between 0 and ${maxLeaseTtlMs}`);
    }
    const ttlMs = req.ttlMs > 0n ? Number(req.ttlMs) : leaseTtlMs;
    // A lease lives at most maxLeaseTtlMs from its Admit, however often it is renewed: a Renew past
    // that is clamped to it, and once it is reached there is nothing left to renew.
    const nowMs = this.clock();
    const endOfLifeMs = claims.reservedAtMs + maxLeaseTtlMs;
    if (nowMs >= endOfLifeMs) {
      throw new RpcError(
        Code.FAILED_PRECONDITION,
        `reservation reached its maximum lifetime (${maxLeaseTtlMs} ms from its Admit, at ${new Date(endOfLifeMs).toISOString()}) and cannot be renewed; unless settled, it is charged its estimate`,
      );
    }
    const expiresAtMs = Math.min(nowMs + ttlMs, endOfLifeMs);
    if (this.deps.tracer) this.traceClaims(claims);
    const lease = await childSpan(this.deps.tracer, "counters.renew", () => this.counterCall("renew", () => this.deps.counters.renew(claims.tenant, claims.leaseId, expiresAtMs)));
    if (!lease) throw new RpcError(Code.NOT_FOUND, "reservation is not open: it was settled, expired or is unknown");
    return create(RenewResponseSchema, { reservationId: req.reservationId, leaseExpiresAt: msTimestamp(lease.expiresAtMs) });
  }

  /**
   * Expires open leases past their TTL (charged their estimate, marked so in
   * the ledger), writes rows of settles whose write was not confirmed, and
   * brings up to date counters deferred while the store was down.
   */
  sweep(): Promise<number> {
    this.sweeping ??= this.sweepOnce().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async sweepOnce(): Promise<number> {
    // Spooled ledger rows go to the database as soon as it is back. A row whose usage went into a
    // counter generation may commit after that generation was lost and rebuilt: reconcile each.
    await this.deps.ledger
      .replaySpool((rows) => {
        for (const { row, xid, generation } of rows) {
          if (generation !== undefined) this.defer({ claims: claimsOf(row), usage: usageOfRow(row), resettle: false, appliedIn: generation, xid });
        }
      })
      .catch((err) => this.deps.logger.warn({ err: String(err) }, "ledger spool replay failed; retrying"));
    await this.applyDeferred();
    let handled = 0;
    for (;;) {
      const nowMs = this.clock();
      const due = await this.deps.counters.claimDue(nowMs, this.deps.settings.recordGraceMs, 500);
      for (const lease of due) {
        await this.recordDue(lease, nowMs);
        handled++;
      }
      if (due.length < 500) return handled;
    }
  }

  private async recordDue(lease: LeaseRecord, nowMs: number): Promise<void> {
    const claims = this.deps.signer.verify(lease.reservationId);
    if (!claims) {
      this.deps.logger.error({ tenant: lease.tenant, leaseId: lease.leaseId }, "lease with an unverifiable reservation id dropped");
      await this.markRecorded({ tenant: lease.tenant, leaseId: lease.leaseId });
      return;
    }
    const expired = lease.state === "expired" && !lease.usage;
    const usage = expired ? expiredUsage(claims, nowMs) : lease.usage!;
    // The lease.expired event commits with the row, and only if this is the row that records the expiry.
    const event = expired ? this.deps.events?.event("lease.expired", claims.tenant, expiredData(claims, usage)) : undefined;
    const { inserted, row, xid } = await this.record(ledgerRow(claims, usage), { generation: lease.generation, events: event && [event] });
    if (expired && !inserted && lease.generation !== undefined) {
      // A settle was recorded for it, but never reached the counters (its replica died while the store was away).
      await this.deps.rebuild.correctExpired(claims, usage, usageOfRow(row), lease.generation).catch((err) => {
        this.deps.logger.warn({ err: String(err), tenant: claims.tenant }, "could not correct an expired lease's meters to its recorded settle");
      });
    }
    await this.confirm({ claims, usage: usageOfRow(row), resettle: false, appliedIn: lease.generation, xid }, true);
    if (expired && inserted) {
      this.deps.metrics.activeReservations.dec();
      this.deps.metrics.expiries.inc();
      this.deps.audit.record({
        kind: "lease.expired",
        actor: claims.keyId ? `key:${claims.keyId}` : `user:${claims.user}`,
        tenant: claims.tenant,
        message: `reservation expired unsettled; charged its estimate (${usage.inputTokens}+${usage.outputTokens} tokens, ${usage.costMicros} micro-USD)`,
        attributes: { request_id: claims.requestId, task: claims.task, model: claims.model },
      });
    }
  }

  /** Verifies the reservation id and, when a credential is given, that it belongs to the same tenant. */
  private async authorize(reservationId: string, credential: string): Promise<ReservationClaims> {
    if (!reservationId) throw new RpcError(Code.INVALID_ARGUMENT, "reservation_id is required");
    const claims = this.deps.signer.verify(reservationId);
    if (!claims) throw new RpcError(Code.NOT_FOUND, "unknown reservation");
    if (credential) {
      const auth = await this.deps.credentials.authenticate(credential, this.deps.policy());
      if (!auth.ok) throw new RpcError(Code.UNAUTHENTICATED, auth.message);
      if (auth.principal.tenant !== claims.tenant) throw new RpcError(Code.PERMISSION_DENIED, "the reservation belongs to another tenant");
    }
    return claims;
  }

  private usageOf(req: SettleRequest, claims: ReservationClaims, nowMs: number): LeaseUsage {
    const snapshot = this.deps.policy();
    const model = snapshot.models.get(req.model) ?? snapshot.models.get(claims.model);
    const tokens = {
      inputTokens: Number(req.inputTokens),
      outputTokens: Number(req.outputTokens),
      cacheReadTokens: Number(req.cacheReadTokens),
      cacheWriteTokens: Number(req.cacheWriteTokens),
      reasoningTokens: Number(req.reasoningTokens),
    };
    return {
      ...tokens,
      costMicros: model ? usageCostMicros(tokens, model) : claims.costMicros,
      outcome: req.outcome === Outcome.UNSPECIFIED ? Outcome.SUCCESS : req.outcome,
      estimated: req.estimated,
      provider: req.provider || (model?.provider ?? claims.provider),
      model: model?.name ?? claims.model,
      latencyMs: Number(req.latencyMs),
      settledAtMs: nowMs,
    };
  }

  /**
   * The alerts of the meters this usage charged beyond what the lease reserved: each such
   * meter is read after the settle and checked over [used - excess, used]. None when the
   * usage fits its reservation (nearly always) or the meters cannot be read.
   */
  private async settleAlerts(claims: ReservationClaims, lease: LeaseRecord, usage: LeaseUsage, nowMs: number): Promise<OutboxEvent[] | undefined> {
    const alerts = this.deps.alerts;
    if (!alerts) return undefined;
    const over = lease.meters.filter((m) => settledAmount(m.unit, usage) > m.amount);
    if (over.length === 0) return undefined;
    const snapshot = this.deps.policy();
    const ctx = snapshot.tenantContext(claims.tenant);
    if (!ctx) return undefined;
    const who = { tenant: claims.tenant, user: claims.user, keyId: claims.keyId };
    const bound = new Map(bindMeters(snapshot.effectiveLimits(ctx, claims.user, claims.task), who, claims.reservedAtMs).map((m) => [m.key, m]));
    const meters = over.flatMap((m) => {
      const b = bound.get(m.key);
      // A token bucket raises no threshold alerts (see DecisionEngine.checkBucket).
      return b && !b.bucket ? [{ charged: m, meter: b }] : [];
    });
    if (meters.length === 0) return undefined;
    let used: number[];
    try {
      used = await this.deps.counters.read(claims.tenant, meters.map((m) => m.charged.key));
    } catch (err) {
      this.deps.logger.warn({ err: String(err), tenant: claims.tenant }, "could not read meters for threshold alerts after a settle");
      return undefined;
    }
    // A credit meter is alerted on as granted (limit) and spent + reserved (used).
    const granted = ctx.credits && meters.some((m) => m.meter.limit.kind === LimitKind.CREDITS_MICROS) ? await (this.deps.credits?.grantedMicros(claims.tenant) ?? 0) : 0;
    let events: OutboxEvent[] | undefined;
    meters.forEach(({ charged, meter: bound }, i) => {
      const excess = settledAmount(charged.unit, usage) - charged.amount;
      const { meter, used: now } = creditsShown(bound, used[i]!, granted);
      const raised = alerts.raise(meter, now - excess, now, who, nowMs);
      if (raised) (events ??= []).push(...raised);
    });
    return events;
  }

  /** Who the reservation is for, on the call's span. */
  private traceClaims(claims: ReservationClaims): void {
    trace.getActiveSpan()?.setAttributes({
      "admission.tenant": claims.tenant, "admission.user": claims.user, "admission.key_id": claims.keyId, "admission.task": claims.task,
      "admission.reserved_cost_micros": claims.costMicros,
    });
  }

  /** Appends the row; `generation`: the counter generation its usage went into, kept with it if it is spooled; `events`: webhook events committed with it. */
  private record(row: LedgerRow, options: { spool?: boolean; generation?: string; events?: readonly OutboxEvent[] } = {}): Promise<{ inserted: boolean; row: LedgerRow; xid?: string }> {
    return childSpan(this.deps.tracer, "ledger.append", async (span) => {
      const recorded = await this.append(row, options);
      span?.setAttribute("admission.ledger.inserted", recorded.inserted);
      return recorded;
    });
  }

  private async append(row: LedgerRow, options: { spool?: boolean; generation?: string; events?: readonly OutboxEvent[] }): Promise<{ inserted: boolean; row: LedgerRow; xid?: string }> {
    const started = performance.now();
    let inserted: boolean;
    let xid: string | undefined;
    try {
      ({ inserted, xid } = await this.deps.ledger.append(row, options));
    } catch (err) {
      this.deps.logger.error({ err, tenant: row.tenant }, "ledger write failed");
      throw new RpcError(Code.UNAVAILABLE, "usage ledger unavailable; retry the settle");
    } finally {
      this.deps.metrics.ledgerWriteSeconds.observe((performance.now() - started) / 1000);
    }
    if (inserted) return { inserted, row, xid };
    return { inserted, row: (await this.deps.ledger.find(row.reservationId)) ?? row };
  }

  /**
   * Settles the lease in the counter store, rebuilding the tenant first if it is
   * cold. Undefined when the store (or, to rebuild, the ledger) is unreachable.
   */
  private async settleLease(claims: ReservationClaims, usage: LeaseUsage, nowMs: number): Promise<Exclude<SettleLeaseResult, { status: "cold" }> | undefined> {
    const request = { tenant: claims.tenant, leaseId: claims.leaseId, usage, nowMs, graceMs: this.deps.settings.recordGraceMs };
    try {
      const result = await childSpan(this.deps.tracer, "counters.settle", async (span) => {
        const settled = await this.deps.rebuild.afterWarming(claims.tenant, () => this.deps.counters.settle(request));
        span?.setAttribute("admission.counters.result", settled.status);
        return settled;
      });
      return result.status === "cold" ? undefined : result;
    } catch (err) {
      if (err instanceof CounterStoreUnavailableError) return undefined;
      throw err;
    }
  }

  /**
   * After a lease's row is durable: marks it recorded (when `mark`) and checks that
   * the generation its usage went into is still the tenant's; if it was lost
   * meanwhile, reconciles the row with the current one.
   */
  private async confirm(update: PendingCounterUpdate, mark: boolean): Promise<void> {
    let current: string | undefined;
    try {
      const { tenant, leaseId } = update.claims;
      current = mark ? await this.deps.counters.markRecorded(tenant, leaseId) : await this.deps.counters.generation(tenant);
    } catch (err) {
      // If the mark is lost, the sweeper rewrites the row (idempotently) after the grace period.
      this.deps.logger.warn({ err: String(err), tenant: update.claims.tenant }, "could not mark lease recorded");
      this.defer(update);
      return;
    }
    if (current === undefined || current !== update.appliedIn) await this.reconcile(update);
  }

  private async reconcile(update: PendingCounterUpdate): Promise<void> {
    try {
      if (await this.deps.rebuild.reconcile(update.claims, update.usage, update.appliedIn, update.xid)) return;
    } catch (err) {
      if (!(err instanceof CounterStoreUnavailableError)) throw err;
    }
    this.defer(update);
  }

  private async markRecorded(lease: { tenant: string; leaseId: string }): Promise<void> {
    // Best effort: if it fails, the sweeper rewrites the row (idempotently) after the grace period.
    await this.deps.counters.markRecorded(lease.tenant, lease.leaseId).catch((err) => {
      this.deps.logger.warn({ err: String(err), tenant: lease.tenant }, "could not mark lease recorded");
    });
  }

  private defer(update: PendingCounterUpdate): void {
    if (this.pending.length >= maxPendingCounterUpdates) {
      this.deps.logger.error({ tenant: update.claims.tenant }, "deferred counter updates full; the ledger has the usage, counters under-count until the window ends");
      return;
    }
    this.pending.push(update);
  }

  /** One pass over the deferred updates; those that cannot be done yet stay for the next sweep. */
  private async applyDeferred(): Promise<void> {
    const batch = this.pending.splice(0);
    for (let i = 0; i < batch.length; i++) {
      const update = batch[i]!;
      try {
        if (!(await this.applyOne(update))) this.pending.push(update);
      } catch (err) {
        this.pending.push(...batch.slice(i));
        if (err instanceof CounterStoreUnavailableError) return;
        throw err;
      }
    }
  }

  /** True when done; throws CounterStoreUnavailableError while the store is still away. */
  private async applyOne(update: PendingCounterUpdate): Promise<boolean> {
    const { claims, usage } = update;
    if (!update.resettle) return this.deps.rebuild.reconcile(claims, usage, update.appliedIn, update.xid);
    const result = await this.settleLease(claims, usage, this.clock());
    if (!result) throw new CounterStoreUnavailableError("counter store still unavailable");
    if (result.status === "missing") return this.deps.rebuild.reconcile(claims, usage, undefined, update.xid);
    // Settled now (or before: the first attempt ran after all): its usage is in the lease's generation.
    if (result.status === "settled") await this.markRecorded(claims);
    return true;
  }

  private async counterCall<T>(op: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof CounterStoreUnavailableError)) throw err;
      this.deps.metrics.storeErrors.inc({ op });
      throw new RpcError(Code.UNAVAILABLE, "counter store unavailable; retry");
    }
  }

  /** Pending deferred counter updates (for /readyz and tests). */
  deferredCount(): number {
    return this.pending.length;
  }
}

function expiredUsage(claims: ReservationClaims, nowMs: number): LeaseUsage {
  return {
    inputTokens: claims.inputTokens,
    outputTokens: claims.maxOutputTokens,
    cacheReadTokens: 0,
    cacheWriteTokens: 0,
    reasoningTokens: 0,
    costMicros: claims.costMicros,
    outcome: Outcome.EXPIRED,
    estimated: true,
    provider: claims.provider,
    model: claims.model,
    latencyMs: 0,
    settledAtMs: nowMs,
  };
}

/** A lease.expired event's data: whose reservation, for what, and the estimate it was charged. */
function expiredData(claims: ReservationClaims, usage: LeaseUsage): Record<string, unknown> {
  return {
    tenant: claims.tenant, ...(claims.user ? { user: claims.user } : {}), ...(claims.keyId ? { keyId: claims.keyId } : {}),
    requestId: claims.requestId, task: claims.task, model: claims.model,
    inputTokens: usage.inputTokens, outputTokens: usage.outputTokens, costMicros: usage.costMicros,
    reservedAt: new Date(claims.reservedAtMs).toISOString(), expiredAt: new Date(usage.settledAtMs).toISOString(),
  };
}

/** What a replayed ledger row says of its reservation: enough to charge its usage to the windows it was reserved in. */
function claimsOf(row: LedgerRow): ReservationClaims {
  return {
    tenant: row.tenant, leaseId: row.reservationId, user: row.user, keyId: row.keyId, task: row.task, model: row.model, provider: row.provider,
    requestId: row.requestId, reservedAtMs: row.reservedAtMs, inputTokens: row.inputTokens, maxOutputTokens: row.outputTokens, costMicros: row.costMicros,
  };
}

function usageOfRow(row: LedgerRow): LeaseUsage {
  return {
    inputTokens: row.inputTokens, outputTokens: row.outputTokens, cacheReadTokens: row.cacheReadTokens, cacheWriteTokens: row.cacheWriteTokens,
    reasoningTokens: row.reasoningTokens, costMicros: row.costMicros,
    outcome: Outcome[row.outcome as keyof typeof Outcome] ?? Outcome.SUCCESS, estimated: row.estimated,
    provider: row.provider, model: row.model, latencyMs: row.latencyMs, settledAtMs: row.settledAtMs,
  };
}

function ledgerRow(claims: ReservationClaims, usage: LeaseUsage): LedgerRow {
  return {
    reservationId: claims.leaseId,
    requestId: claims.requestId,
    tenant: claims.tenant,
    user: claims.user,
    keyId: claims.keyId,
    task: claims.task,
    model: usage.model,
    provider: usage.provider,
    inputTokens: usage.inputTokens,
    outputTokens: usage.outputTokens,
    cacheReadTokens: usage.cacheReadTokens,
    cacheWriteTokens: usage.cacheWriteTokens,
    reasoningTokens: usage.reasoningTokens,
    costMicros: usage.costMicros,
    outcome: Outcome[usage.outcome] ?? "SUCCESS",
    estimated: usage.estimated,
    latencyMs: usage.latencyMs,
    reservedAtMs: claims.reservedAtMs,
    settledAtMs: usage.settledAtMs,
  };
}

/** A literal with every field, as create() would build it: one per Settle. */
function settleResponse(reservationId: string, row: LedgerRow, duplicate: boolean): SettleResponse {
  return {
    $typeName: "admission.v1.SettleResponse",
    reservationId,
    duplicate,
    inputTokens: BigInt(row.inputTokens),
    outputTokens: BigInt(row.outputTokens),
    costMicros: BigInt(row.costMicros),
    outcome: Outcome[row.outcome as keyof typeof Outcome] ?? Outcome.SUCCESS,
    estimated: row.estimated,
    cacheReadTokens: BigInt(row.cacheReadTokens),
    cacheWriteTokens: BigInt(row.cacheWriteTokens),
    reasoningTokens: BigInt(row.reasoningTokens),
  };
}

function validateSettle(req: SettleRequest): string | undefined {
  const count = countProblem("input_tokens", req.inputTokens) ?? countProblem("output_tokens", req.outputTokens)
    ?? countProblem("cache_read_tokens", req.cacheReadTokens) ?? countProblem("cache_write_tokens", req.cacheWriteTokens)
    ?? countProblem("reasoning_tokens", req.reasoningTokens);
  if (count) return count;
  if (req.cacheReadTokens + req.cacheWriteTokens > req.inputTokens) {
    return `cache_read_tokens + cache_write_tokens (${req.cacheReadTokens + req.cacheWriteTokens}) must not exceed input_tokens (${req.inputTokens}): cache tokens are part of the input`;
  }
  if (req.reasoningTokens > req.outputTokens) return `reasoning_tokens (${req.reasoningTokens}) must not exceed output_tokens (${req.outputTokens}): reasoning tokens are part of the output`;
  if (req.latencyMs < 0n || req.latencyMs > 86_400_000n) return "latency_ms must be between 0 and 86400000";
  if (Outcome[req.outcome] === undefined) return `unknown outcome ${req.outcome}`;
  if (req.outcome === Outcome.EXPIRED || req.outcome === Outcome.UNMETERED) return `outcome ${Outcome[req.outcome]} is set by the control plane only`;
  if (req.provider.length > 64 || req.model.length > 128) return "provider is at most 64 and model 128 characters";
  return undefined;
}

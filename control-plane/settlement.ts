import { create } from "@bufbuild/protobuf";
import { status as Code } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { RenewRequest, RenewResponse, SettleRequest, SettleResponse } from "../gen/admission/v1/admission_pb.js";
import { Outcome, RenewResponseSchema, SettleResponseSchema } from "../gen/admission/v1/admission_pb.js";
import { LimitKind } from "../gen/admission/v1/policy_pb.js";
import type { CounterStore, LeaseRecord, LeaseUsage, MeterCharge } from "./counter-store.js";
import { CounterStoreUnavailableError, settledAmount } from "./counter-store.js";
import type { CredentialVerifier } from "./credentials.js";
import { maxCount } from "./decide.js";
import { bindMeters, costMicros } from "./meters.js";
import type { Metrics } from "./metrics.js";
import type { PolicySnapshot } from "./policy/policy-snapshot.js";
import type { ReservationClaims, ReservationSigner } from "./reservation-id.js";
import { RpcError } from "./rpc-error.js";
import type { AuditLog } from "./store/audit-log.js";
import type { Ledger, LedgerRow } from "./store/ledger.js";
import { msTimestamp } from "./timestamps.js";
import { timeWindows, windowSpan } from "./windows.js";

export interface SettlementSettings {
  readonly leaseTtlMs: number;
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
  readonly signer: ReservationSigner;
  readonly ledger: Pick<Ledger, "append" | "find" | "windowSums" | "replaySpool">;
  readonly audit: Pick<AuditLog, "record">;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly settings: SettlementSettings;
  readonly clock?: () => number;
}

/** A settle whose counter update waits for the counter store to come back. */
interface PendingCounterUpdate {
  readonly claims: ReservationClaims;
  readonly usage: LeaseUsage;
}

const maxPendingCounterUpdates = 100_000;

/**
 * Settles reservations exactly once, renews and expires leases, and rebuilds
 * counters from the ledger. A Settle is acknowledged only after its ledger row
 * is durable; the ledger's unique reservation id makes every write idempotent.
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

    let result;
    try {
      result = await this.deps.counters.settle({ tenant: claims.tenant, leaseId: claims.leaseId, usage, nowMs, graceMs: this.deps.settings.recordGraceMs });
    } catch (err) {
      if (!(err instanceof CounterStoreUnavailableError)) throw err;
      // The usage is recorded now; the counters catch up when the store is back.
      this.deps.metrics.storeErrors.inc({ op: "settle" });
      const { inserted, row } = await this.record(ledgerRow(claims, usage));
      if (inserted) this.deferCounterUpdate({ claims, usage });
      return settleResponse(req.reservationId, row, !inserted);
    }

    if (result.status === "settled") {
      const { row } = await this.record(ledgerRow(claims, usage));
      await this.markRecorded(claims);
      this.deps.metrics.activeReservations.dec();
      this.deps.metrics.settles.inc({ result: "settled" });
      return settleResponse(req.reservationId, row, false);
    }
    if (result.status === "already") {
      // The first result stands; make sure its row is durable before answering.
      const first = result.lease.state === "expired" ? expiredUsage(claims, nowMs) : result.lease.usage!;
      const { row } = await this.record(ledgerRow(claims, first));
      // The first settle may have died before confirming its row (a replica killed mid-settle, the
      // data plane replaying): confirm it now rather than leave the lease to the sweeper's grace period.
      if (result.lease.state === "settled") await this.markRecorded(claims);
      this.deps.metrics.settles.inc({ result: "duplicate" });
      return settleResponse(req.reservationId, row, true);
    }
    // The counter store no longer knows the lease (restarted or flushed): the
    // signed id still says who reserved what and when. Only the database can
    // tell a first settle from a repeat here, so this one is never spooled.
    const { inserted, row } = await this.record(ledgerRow(claims, usage), { spool: false });
    if (inserted) await this.chargeLate(claims, usage);
    this.deps.metrics.settles.inc({ result: inserted ? "late" : "duplicate" });
    return settleResponse(req.reservationId, row, !inserted);
  }

  async renew(req: RenewRequest): Promise<RenewResponse> {
    const claims = await this.authorize(req.reservationId, req.credential);
    if (req.ttlMs < 0n || req.ttlMs > BigInt(this.deps.settings.maxLeaseTtlMs)) {
      throw new RpcError(Code.INVALID_ARGUMENT, `ttl_ms must be between 0 and ${this.deps.settings.maxLeaseTtlMs}`);
    }
    const ttlMs = req.ttlMs > 0n ? Number(req.ttlMs) : this.deps.settings.leaseTtlMs;
    const lease = await this.counterCall("renew", () => this.deps.counters.renew(claims.tenant, claims.leaseId, this.clock() + ttlMs));
    if (!lease) throw new RpcError(Code.NOT_FOUND, "reservation is not open: it was settled, expired or is unknown");
    return create(RenewResponseSchema, { reservationId: req.reservationId, leaseExpiresAt: msTimestamp(lease.expiresAtMs) });
  }

  /**
   * Expires open leases past their TTL (charged their estimate, marked so in
   * the ledger), writes rows of settles whose write was not confirmed, and
   * applies counter updates deferred while the store was down.
   */
  sweep(): Promise<number> {
    this.sweeping ??= this.sweepOnce().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async sweepOnce(): Promise<number> {
    // Spooled ledger rows go to the database as soon as it is back.
    await this.deps.ledger.replaySpool().catch((err) => this.deps.logger.warn({ err: String(err) }, "ledger spool replay failed; retrying"));
    // A shared counter store may have lost its data (flush, restart): one replica rebuilds.
    await this.rebuild();
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
    const { inserted } = await this.record(ledgerRow(claims, usage));
    await this.markRecorded(claims);
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

  /**
   * Rebuilds the current windows from the ledger when the counter store lost
   * its data (or starts empty). Exactly one replica wins the claim.
   */
  async rebuild(): Promise<boolean> {
    const nowMs = this.clock();
    if (!(await this.deps.counters.claimRebuild(nowMs))) return false;
    const snapshot = this.deps.policy();
    const charges = new Map<string, MeterCharge[]>();
    let groups = 0;
    for (const window of timeWindows) {
      const sums = await this.deps.ledger.windowSums(windowSpan(window, nowMs).startMs);
      for (const sum of sums) {
        const ctx = snapshot.tenantContext(sum.tenant);
        if (!ctx) continue;
        groups++;
        const limits = snapshot.effectiveLimits(ctx, sum.user, sum.task).filter((l) => l.window === window && l.kind !== LimitKind.CONCURRENCY);
        const list = charges.get(sum.tenant) ?? [];
        for (const m of bindMeters(limits, { tenant: sum.tenant, user: sum.user, keyId: sum.keyId }, nowMs)) {
          const amount = m.unit === "requests" ? sum.requests : m.unit === "tokens" ? sum.tokens : sum.costMicros;
          if (amount !== 0) list.push({ key: m.key, amount, expiresAtMs: m.expiresAtMs });
        }
        charges.set(sum.tenant, list);
      }
    }
    for (const [tenant, list] of charges) await this.deps.counters.charge(tenant, list);
    this.deps.logger.info({ groups, tenants: charges.size }, "counters rebuilt from the ledger");
    return true;
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
    const inputTokens = Number(req.inputTokens);
    const outputTokens = Number(req.outputTokens);
    return {
      inputTokens,
      outputTokens,
      costMicros: model ? costMicros(inputTokens, outputTokens, model.inputMicrosPerMtok, model.outputMicrosPerMtok) : claims.costMicros,
      outcome: req.outcome === Outcome.UNSPECIFIED ? Outcome.SUCCESS : req.outcome,
      estimated: req.estimated,
      provider: req.provider || (model?.provider ?? claims.provider),
      model: model?.name ?? claims.model,
      latencyMs: Number(req.latencyMs),
      settledAtMs: nowMs,
    };
  }

  private async record(row: LedgerRow, options: { spool?: boolean } = {}): Promise<{ inserted: boolean; row: LedgerRow }> {
    const started = performance.now();
    let inserted: boolean;
    try {
      ({ inserted } = await this.deps.ledger.append(row, options));
    } catch (err) {
      this.deps.logger.error({ err, tenant: row.tenant }, "ledger write failed");
      throw new RpcError(Code.UNAVAILABLE, "usage ledger unavailable; retry the settle");
    } finally {
      this.deps.metrics.ledgerWriteSeconds.observe((performance.now() - started) / 1000);
    }
    if (inserted) return { inserted, row };
    return { inserted, row: (await this.deps.ledger.find(row.reservationId)) ?? row };
  }

  private async markRecorded(lease: { tenant: string; leaseId: string }): Promise<void> {
    // Best effort: if it fails, the sweeper rewrites the row (idempotently) after the grace period.
    await this.deps.counters.markRecorded(lease.tenant, lease.leaseId).catch((err) => {
      this.deps.logger.warn({ err: String(err), tenant: lease.tenant }, "could not mark lease recorded");
    });
  }

  /** Charges a settle whose lease the store lost to the windows it was reserved in. */
  private async chargeLate(claims: ReservationClaims, usage: LeaseUsage): Promise<void> {
    const snapshot = this.deps.policy();
    const ctx = snapshot.tenantContext(claims.tenant);
    if (!ctx) return;
    const limits = snapshot.effectiveLimits(ctx, claims.user, claims.task).filter((l) => l.kind !== LimitKind.CONCURRENCY);
    const charges = bindMeters(limits, { tenant: claims.tenant, user: claims.user, keyId: claims.keyId }, claims.reservedAtMs)
      .map((m) => ({ key: m.key, amount: settledAmount(m.unit, usage), expiresAtMs: m.expiresAtMs }))
      .filter((c) => c.amount !== 0);
    try {
      await this.deps.counters.charge(claims.tenant, charges);
    } catch (err) {
      if (!(err instanceof CounterStoreUnavailableError)) throw err;
      this.deferCounterUpdate({ claims, usage });
    }
  }

  private deferCounterUpdate(update: PendingCounterUpdate): void {
    if (this.pending.length >= maxPendingCounterUpdates) {
      this.deps.logger.error({ tenant: update.claims.tenant }, "deferred counter updates full; the ledger has the usage, counters will lag until a rebuild");
      return;
    }
    this.pending.push(update);
  }

  private async applyDeferred(): Promise<void> {
    while (this.pending.length > 0) {
      const { claims, usage } = this.pending[0]!;
      let result;
      try {
        result = await this.deps.counters.settle({ tenant: claims.tenant, leaseId: claims.leaseId, usage, nowMs: this.clock(), graceMs: this.deps.settings.recordGraceMs });
      } catch (err) {
        if (err instanceof CounterStoreUnavailableError) return;
        throw err;
      }
      this.pending.shift();
      if (result.status === "settled") await this.markRecorded(claims);
      else if (result.status === "missing") await this.chargeLate(claims, usage);
    }
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
    costMicros: claims.costMicros,
    outcome: Outcome.EXPIRED,
    estimated: true,
    provider: claims.provider,
    model: claims.model,
    latencyMs: 0,
    settledAtMs: nowMs,
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
    costMicros: usage.costMicros,
    outcome: Outcome[usage.outcome] ?? "SUCCESS",
    estimated: usage.estimated,
    latencyMs: usage.latencyMs,
    reservedAtMs: claims.reservedAtMs,
    settledAtMs: usage.settledAtMs,
  };
}

function settleResponse(reservationId: string, row: LedgerRow, duplicate: boolean): SettleResponse {
  return create(SettleResponseSchema, {
    reservationId,
    duplicate,
    inputTokens: BigInt(row.inputTokens),
    outputTokens: BigInt(row.outputTokens),
    costMicros: BigInt(row.costMicros),
    outcome: Outcome[row.outcome as keyof typeof Outcome] ?? Outcome.SUCCESS,
    estimated: row.estimated,
  });
}

function validateSettle(req: SettleRequest): string | undefined {
  for (const [field, value] of [["input_tokens", req.inputTokens], ["output_tokens", req.outputTokens]] as const) {
    if (value < 0n) return `${field} must not be negative`;
    if (value > BigInt(maxCount)) return `${field} ${value} is beyond the maximum of ${maxCount}`;
  }
  if (req.latencyMs < 0n || req.latencyMs > 86_400_000n) return "latency_ms must be between 0 and 86400000";
  if (Outcome[req.outcome] === undefined) return `unknown outcome ${req.outcome}`;
  if (req.outcome === Outcome.EXPIRED || req.outcome === Outcome.UNMETERED) return `outcome ${Outcome[req.outcome]} is set by the control plane only`;
  if (req.provider.length > 64 || req.model.length > 128) return "provider is at most 64 and model 128 characters";
  return undefined;
}

import { create } from "@bufbuild/protobuf";
import { status as Code } from "@grpc/grpc-js";
import { Outcome, RenewResponseSchema } from "../gen/admission/v1/admission_pb.js";
import { CounterStoreUnavailableError } from "./counter-store.js";
import { countProblem } from "./decide.js";
import { costMicros } from "./meters.js";
import { RpcError } from "./rpc-error.js";
import { msTimestamp } from "./timestamps.js";
const maxPendingCounterUpdates = 100_000;
/**
 * Settles reservations exactly once, renews and expires leases, and keeps the
 * counters in step with the ledger when the counter store loses data (see
 * CounterRebuild). A Settle is acknowledged only after its ledger row is
 * durable; the ledger's unique reservation id makes every write idempotent.
 */
export class Settlement {
    deps;
    clock;
    timer;
    sweeping;
    pending = [];
    constructor(deps) {
        this.deps = deps;
        this.clock = deps.clock ?? Date.now;
    }
    start() {
        const every = this.deps.settings.sweepIntervalMs;
        if (every <= 0 || this.timer)
            return;
        this.timer = setInterval(() => void this.sweep().catch((err) => this.deps.logger.error({ err }, "lease sweep failed")), every);
        this.timer.unref();
    }
    async stop() {
        if (this.timer)
            clearInterval(this.timer);
        this.timer = undefined;
        await this.sweeping;
    }
    async settle(req) {
        const claims = await this.authorize(req.reservationId, req.credential);
        const invalid = validateSettle(req);
        if (invalid)
            throw new RpcError(Code.INVALID_ARGUMENT, invalid);
        const nowMs = this.clock();
        const usage = this.usageOf(req, claims, nowMs);
        const result = await this.settleLease(claims, usage, nowMs);
        if (!result) {
            // The usage is recorded now; the counters catch up when the store is back.
            this.deps.metrics.storeErrors.inc({ op: "settle" });
            const { inserted, row, xid } = await this.record(ledgerRow(claims, usage));
            if (inserted)
                this.defer({ claims, usage, resettle: true, xid });
            return settleResponse(req.reservationId, row, !inserted);
        }
        if (result.status === "settled") {
            const { row, xid } = await this.record(ledgerRow(claims, usage), { generation: result.generation });
            await this.confirm({ claims, usage, resettle: false, appliedIn: result.generation, xid }, true);
            this.deps.metrics.activeReservations.dec();
            this.deps.metrics.settles.inc({ result: "settled" });
            return settleResponse(req.reservationId, row, false);
        }
        if (result.status === "already") {
            // The first result stands; make sure its row is durable before answering.
            const settled = result.lease.state === "settled";
            const first = settled ? result.lease.usage : expiredUsage(claims, nowMs);
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
        if (inserted)
            await this.reconcile({ claims, usage, resettle: false, xid });
        this.deps.metrics.settles.inc({ result: inserted ? "late" : "duplicate" });
        return settleResponse(req.reservationId, row, !inserted);
    }
    async renew(req) {
        const claims = await this.authorize(req.reservationId, req.credential);
        if (req.ttlMs < 0n || req.ttlMs > BigInt(this.deps.settings.maxLeaseTtlMs)) {
            throw new RpcError(Code.INVALID_ARGUMENT, `ttl_ms must be between 0 and ${this.deps.settings.maxLeaseTtlMs}`);
        }
        const ttlMs = req.ttlMs > 0n ? Number(req.ttlMs) : this.deps.settings.leaseTtlMs;
        const lease = await this.counterCall("renew", () => this.deps.counters.renew(claims.tenant, claims.leaseId, this.clock() + ttlMs));
        if (!lease)
            throw new RpcError(Code.NOT_FOUND, "reservation is not open: it was settled, expired or is unknown");
        return create(RenewResponseSchema, { reservationId: req.reservationId, leaseExpiresAt: msTimestamp(lease.expiresAtMs) });
    }
    /**
     * Expires open leases past their TTL (charged their estimate, marked so in
     * the ledger), writes rows of settles whose write was not confirmed, and
     * brings up to date counters deferred while the store was down.
     */
    sweep() {
        this.sweeping ??= this.sweepOnce().finally(() => (this.sweeping = undefined));
        return this.sweeping;
    }
    async sweepOnce() {
        // Spooled ledger rows go to the database as soon as it is back. A row whose usage went into a
        // counter generation may commit after that generation was lost and rebuilt: reconcile each.
        await this.deps.ledger
            .replaySpool((rows) => {
            for (const { row, xid, generation } of rows) {
                if (generation !== undefined)
                    this.defer({ claims: claimsOf(row), usage: usageOfRow(row), resettle: false, appliedIn: generation, xid });
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
            if (due.length < 500)
                return handled;
        }
    }
    async recordDue(lease, nowMs) {
        const claims = this.deps.signer.verify(lease.reservationId);
        if (!claims) {
            this.deps.logger.error({ tenant: lease.tenant, leaseId: lease.leaseId }, "lease with an unverifiable reservation id dropped");
            await this.markRecorded({ tenant: lease.tenant, leaseId: lease.leaseId });
            return;
        }
        const expired = lease.state === "expired" && !lease.usage;
        const usage = expired ? expiredUsage(claims, nowMs) : lease.usage;
        const { inserted, row, xid } = await this.record(ledgerRow(claims, usage), { generation: lease.generation });
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
    async authorize(reservationId, credential) {
        if (!reservationId)
            throw new RpcError(Code.INVALID_ARGUMENT, "reservation_id is required");
        const claims = this.deps.signer.verify(reservationId);
        if (!claims)
            throw new RpcError(Code.NOT_FOUND, "unknown reservation");
        if (credential) {
            const auth = await this.deps.credentials.authenticate(credential, this.deps.policy());
            if (!auth.ok)
                throw new RpcError(Code.UNAUTHENTICATED, auth.message);
            if (auth.principal.tenant !== claims.tenant)
                throw new RpcError(Code.PERMISSION_DENIED, "the reservation belongs to another tenant");
        }
        return claims;
    }
    usageOf(req, claims, nowMs) {
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
    /** Appends the row; `generation`: the counter generation its usage went into, kept with it if it is spooled. */
    async record(row, options = {}) {
        const started = performance.now();
        let inserted;
        let xid;
        try {
            ({ inserted, xid } = await this.deps.ledger.append(row, options));
        }
        catch (err) {
            this.deps.logger.error({ err, tenant: row.tenant }, "ledger write failed");
            throw new RpcError(Code.UNAVAILABLE, "usage ledger unavailable; retry the settle");
        }
        finally {
            this.deps.metrics.ledgerWriteSeconds.observe((performance.now() - started) / 1000);
        }
        if (inserted)
            return { inserted, row, xid };
        return { inserted, row: (await this.deps.ledger.find(row.reservationId)) ?? row };
    }
    /**
     * Settles the lease in the counter store, rebuilding the tenant first if it is
     * cold. Undefined when the store (or, to rebuild, the ledger) is unreachable.
     */
    async settleLease(claims, usage, nowMs) {
        const request = { tenant: claims.tenant, leaseId: claims.leaseId, usage, nowMs, graceMs: this.deps.settings.recordGraceMs };
        try {
            const result = await this.deps.rebuild.afterWarming(claims.tenant, () => this.deps.counters.settle(request));
            return result.status === "cold" ? undefined : result;
        }
        catch (err) {
            if (err instanceof CounterStoreUnavailableError)
                return undefined;
            throw err;
        }
    }
    /**
     * After a lease's row is durable: marks it recorded (when `mark`) and checks that
     * the generation its usage went into is still the tenant's; if it was lost
     * meanwhile, reconciles the row with the current one.
     */
    async confirm(update, mark) {
        let current;
        try {
            const { tenant, leaseId } = update.claims;
            current = mark ? await this.deps.counters.markRecorded(tenant, leaseId) : await this.deps.counters.generation(tenant);
        }
        catch (err) {
            // If the mark is lost, the sweeper rewrites the row (idempotently) after the grace period.
            this.deps.logger.warn({ err: String(err), tenant: update.claims.tenant }, "could not mark lease recorded");
            this.defer(update);
            return;
        }
        if (current === undefined || current !== update.appliedIn)
            await this.reconcile(update);
    }
    async reconcile(update) {
        try {
            if (await this.deps.rebuild.reconcile(update.claims, update.usage, update.appliedIn, update.xid))
                return;
        }
        catch (err) {
            if (!(err instanceof CounterStoreUnavailableError))
                throw err;
        }
        this.defer(update);
    }
    async markRecorded(lease) {
        // Best effort: if it fails, the sweeper rewrites the row (idempotently) after the grace period.
        await this.deps.counters.markRecorded(lease.tenant, lease.leaseId).catch((err) => {
            this.deps.logger.warn({ err: String(err), tenant: lease.tenant }, "could not mark lease recorded");
        });
    }
    defer(update) {
        if (this.pending.length >= maxPendingCounterUpdates) {
            this.deps.logger.error({ tenant: update.claims.tenant }, "deferred counter updates full; the ledger has the usage, counters under-count until the window ends");
            return;
        }
        this.pending.push(update);
    }
    /** One pass over the deferred updates; those that cannot be done yet stay for the next sweep. */
    async applyDeferred() {
        const batch = this.pending.splice(0);
        for (let i = 0; i < batch.length; i++) {
            const update = batch[i];
            try {
                if (!(await this.applyOne(update)))
                    this.pending.push(update);
            }
            catch (err) {
                this.pending.push(...batch.slice(i));
                if (err instanceof CounterStoreUnavailableError)
                    return;
                throw err;
            }
        }
    }
    /** True when done; throws CounterStoreUnavailableError while the store is still away. */
    async applyOne(update) {
        const { claims, usage } = update;
        if (!update.resettle)
            return this.deps.rebuild.reconcile(claims, usage, update.appliedIn, update.xid);
        const result = await this.settleLease(claims, usage, this.clock());
        if (!result)
            throw new CounterStoreUnavailableError("counter store still unavailable");
        if (result.status === "missing")
            return this.deps.rebuild.reconcile(claims, usage, undefined, update.xid);
        // Settled now (or before: the first attempt ran after all): its usage is in the lease's generation.
        if (result.status === "settled")
            await this.markRecorded(claims);
        return true;
    }
    async counterCall(op, call) {
        try {
            return await call();
        }
        catch (err) {
            if (!(err instanceof CounterStoreUnavailableError))
                throw err;
            this.deps.metrics.storeErrors.inc({ op });
            throw new RpcError(Code.UNAVAILABLE, "counter store unavailable; retry");
        }
    }
    /** Pending deferred counter updates (for /readyz and tests). */
    deferredCount() {
        return this.pending.length;
    }
}
function expiredUsage(claims, nowMs) {
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
/** What a replayed ledger row says of its reservation: enough to charge its usage to the windows it was reserved in. */
function claimsOf(row) {
    return {
        tenant: row.tenant, leaseId: row.reservationId, user: row.user, keyId: row.keyId, task: row.task, model: row.model, provider: row.provider,
        requestId: row.requestId, reservedAtMs: row.reservedAtMs, inputTokens: row.inputTokens, maxOutputTokens: row.outputTokens, costMicros: row.costMicros,
    };
}
function usageOfRow(row) {
    return {
        inputTokens: row.inputTokens, outputTokens: row.outputTokens, costMicros: row.costMicros,
        outcome: Outcome[row.outcome] ?? Outcome.SUCCESS, estimated: row.estimated,
        provider: row.provider, model: row.model, latencyMs: row.latencyMs, settledAtMs: row.settledAtMs,
    };
}
function ledgerRow(claims, usage) {
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
/** A literal with every field, as create() would build it: one per Settle. */
function settleResponse(reservationId, row, duplicate) {
    return {
        $typeName: "admission.v1.SettleResponse",
        reservationId,
        duplicate,
        inputTokens: BigInt(row.inputTokens),
        outputTokens: BigInt(row.outputTokens),
        costMicros: BigInt(row.costMicros),
        outcome: Outcome[row.outcome] ?? Outcome.SUCCESS,
        estimated: row.estimated,
    };
}
function validateSettle(req) {
    const count = countProblem("input_tokens", req.inputTokens) ?? countProblem("output_tokens", req.outputTokens);
    if (count)
        return count;
    if (req.latencyMs < 0n || req.latencyMs > 86400000n)
        return "latency_ms must be between 0 and 86400000";
    if (Outcome[req.outcome] === undefined)
        return `unknown outcome ${req.outcome}`;
    if (req.outcome === Outcome.EXPIRED || req.outcome === Outcome.UNMETERED)
        return `outcome ${Outcome[req.outcome]} is set by the control plane only`;
    if (req.provider.length > 64 || req.model.length > 128)
        return "provider is at most 64 and model 128 characters";
    return undefined;
}
//# sourceMappingURL=settlement.js.map
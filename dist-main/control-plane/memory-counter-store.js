import { leaseMeters, reservedAmount, settledAmount } from "./counter-store.js";
/**
 * Counters and leases in this process: the embedded default for a single
 * control plane. Each method runs without awaiting, so it is atomic in the
 * event loop. Starts empty, so every tenant starts cold (see CounterStore).
 *
 * A lease is held from its reservation until its ledger row is recorded, and no
 * longer: the ledger answers a later repeat of its settle (the settlement finds
 * the lease missing and the row already there), and a retried Admit after that
 * is a new request. So memory holds the requests in flight, not every request
 * of the last hour.
 */
export class MemoryCounterStore {
    tenants = new Map();
    clock;
    timer;
    constructor(options = {}) {
        this.clock = options.clock ?? Date.now;
        const every = options.housekeepingMs ?? 10_000;
        if (every > 0) {
            this.timer = setInterval(() => this.housekeep(this.clock()), every);
            this.timer.unref();
        }
    }
    async reserve(request) {
        const { nowMs, meters, amounts } = request;
        const t = this.tenants.get(request.tenant);
        if (t?.generation === undefined)
            return { status: "cold" };
        if (request.requestId) {
            const seen = t.requests.get(request.requestId);
            const lease = seen === undefined ? undefined : t.leases.get(seen);
            if (lease)
                return { status: "duplicate", lease: snapshotLease(lease) };
        }
        const used = new Array(meters.length);
        for (let i = 0; i < meters.length; i++) {
            const op = meters[i];
            used[i] = valueOf(t.cells.get(op.key), nowMs);
            if (op.enforce && used[i] + reservedAmount(op.unit, amounts) > op.limit) {
                for (let j = i + 1; j < meters.length; j++)
                    used[j] = valueOf(t.cells.get(meters[j].key), nowMs);
                return { status: "blocked", index: i, used };
            }
        }
        for (let i = 0; i < meters.length; i++) {
            const op = meters[i];
            used[i] = addTo(t.cells, op.key, reservedAmount(op.unit, amounts), op.expiresAtMs, nowMs);
        }
        t.leases.set(request.leaseId, {
            tenant: request.tenant,
            leaseId: request.leaseId,
            reservationId: request.reservationId,
            requestId: request.requestId,
            meters,
            amounts,
            expiresAtMs: request.leaseExpiresAtMs,
            state: "open",
            dueAtMs: request.leaseExpiresAtMs,
        });
        if (request.requestId)
            t.requests.set(request.requestId, request.leaseId);
        return { status: "reserved", used };
    }
    async settle(request) {
        const t = this.tenants.get(request.tenant);
        const generation = t?.generation;
        if (generation === undefined)
            return { status: "cold" };
        const lease = t.leases.get(request.leaseId);
        if (!lease)
            return { status: "missing", generation };
        if (lease.state !== "open")
            return { status: "already", lease: snapshotLease(lease), generation };
        for (const m of lease.meters) {
            const reserved = reservedAmount(m.unit, lease.amounts);
            const delta = m.unit === "concurrency" ? -reserved : settledAmount(m.unit, request.usage) - reserved;
            if (delta !== 0)
                addTo(t.cells, m.key, delta, m.expiresAtMs, request.nowMs);
        }
        lease.state = "settled";
        lease.usage = request.usage;
        lease.dueAtMs = request.nowMs + request.graceMs;
        return { status: "settled", lease: snapshotLease(lease), generation };
    }
    async renew(tenant, leaseId, expiresAtMs) {
        const lease = this.tenants.get(tenant)?.leases.get(leaseId);
        if (!lease || lease.state !== "open")
            return undefined;
        lease.expiresAtMs = expiresAtMs;
        lease.dueAtMs = expiresAtMs;
        return snapshotLease(lease);
    }
    async markRecorded(tenant, leaseId) {
        const t = this.tenants.get(tenant);
        const lease = t?.leases.get(leaseId);
        if (lease && lease.state !== "open") {
            t.leases.delete(leaseId);
            if (lease.requestId && t.requests.get(lease.requestId) === leaseId)
                t.requests.delete(lease.requestId);
        }
        return t?.generation;
    }
    async claimDue(nowMs, graceMs, limit) {
        const claimed = [];
        for (const t of this.tenants.values()) {
            for (const lease of t.leases.values()) {
                if (claimed.length >= limit)
                    return claimed;
                if (lease.dueAtMs > nowMs)
                    continue;
                if (lease.state === "open") {
                    // Expired: the estimate stands as the charge; only concurrency is released.
                    for (const m of lease.meters)
                        if (m.unit === "concurrency")
                            addTo(t.cells, m.key, -reservedAmount(m.unit, lease.amounts), 0, nowMs);
                    lease.state = "expired";
                }
                lease.dueAtMs = nowMs + graceMs;
                claimed.push({ ...snapshotLease(lease), generation: t.generation });
            }
        }
        return claimed;
    }
    async charge(tenant, charges, generation) {
        const t = this.tenants.get(tenant);
        if (t?.generation !== generation)
            return false;
        const nowMs = this.clock();
        for (const c of charges)
            addTo(t.cells, c.key, c.amount, c.expiresAtMs, nowMs);
        return true;
    }
    async rebuild(tenant, generation, charges) {
        const t = this.stateOf(tenant);
        if (t.generation !== undefined)
            return false;
        t.generation = generation;
        return this.charge(tenant, charges, generation);
    }
    async generation(tenant) {
        return this.tenants.get(tenant)?.generation;
    }
    async read(tenant, keys) {
        const nowMs = this.clock();
        const cells = this.tenants.get(tenant)?.cells;
        return keys.map((key) => valueOf(cells?.get(key), nowMs));
    }
    async reset(tenant, key) {
        const cells = this.tenants.get(tenant)?.cells;
        const previous = valueOf(cells?.get(key), this.clock());
        cells?.delete(key);
        return previous;
    }
    async ping() { }
    async close() {
        if (this.timer)
            clearInterval(this.timer);
    }
    /** Drops expired meters. */
    housekeep(nowMs) {
        for (const t of this.tenants.values()) {
            for (const [key, cell] of t.cells)
                if (cell.expiresAtMs > 0 && cell.expiresAtMs <= nowMs)
                    t.cells.delete(key);
        }
    }
    /** Number of leases still tracked (open, or settled and not yet recorded). */
    activeLeases() {
        let n = 0;
        for (const t of this.tenants.values())
            n += t.leases.size;
        return n;
    }
    stateOf(tenant) {
        let t = this.tenants.get(tenant);
        if (!t)
            this.tenants.set(tenant, (t = { generation: undefined, cells: new Map(), leases: new Map(), requests: new Map() }));
        return t;
    }
}
function valueOf(cell, nowMs) {
    if (!cell)
        return 0;
    if (cell.expiresAtMs > 0 && cell.expiresAtMs <= nowMs)
        return 0;
    return cell.value;
}
function addTo(cells, key, amount, expiresAtMs, nowMs) {
    let cell = cells.get(key);
    if (!cell || (cell.expiresAtMs > 0 && cell.expiresAtMs <= nowMs)) {
        cell = { value: 0, expiresAtMs };
        cells.set(key, cell);
    }
    cell.value += amount;
    return cell.value;
}
/** What callers see of a lease; its meters with their amounts are made only if read. */
function snapshotLease(lease) {
    return {
        tenant: lease.tenant,
        leaseId: lease.leaseId,
        reservationId: lease.reservationId,
        get meters() {
            return leaseMeters(lease.meters, lease.amounts);
        },
        expiresAtMs: lease.expiresAtMs,
        state: lease.state,
        usage: lease.usage,
    };
}
//# sourceMappingURL=memory-counter-store.js.map
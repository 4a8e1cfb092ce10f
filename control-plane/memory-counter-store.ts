import type {
  CounterStore, LeaseRecord, LeaseState, LeaseUsage, MeterCharge, ReserveRequest, ReserveResult, SettleLeaseRequest, SettleLeaseResult,
} from "./counter-store.js";
import { settledAmount } from "./counter-store.js";

interface MeterCell {
  value: number;
  expiresAtMs: number;
}

interface MutableLease {
  tenant: string;
  leaseId: string;
  reservationId: string;
  requestId: string;
  meters: LeaseRecord["meters"];
  expiresAtMs: number;
  state: LeaseState;
  usage?: LeaseUsage;
  /** When the sweeper should look at it; 0 once recorded. */
  dueAtMs: number;
  /** When the record may be forgotten (after it was recorded). */
  forgetAtMs: number;
}

export interface MemoryCounterStoreOptions {
  /** Clock for housekeeping only; decisions pass their own `nowMs`. */
  clock?: () => number;
  /** How long a recorded lease is remembered for duplicate settles. */
  tombstoneMs?: number;
  /** Housekeeping period; 0 disables the timer (tests call sweep()). */
  housekeepingMs?: number;
}

/**
 * Counters and leases in this process: the embedded default for a single
 * control plane. Each method runs without awaiting, so it is atomic in the
 * event loop. Starts empty, so every tenant starts cold (see CounterStore).
 */
export class MemoryCounterStore implements CounterStore {
  /** Per tenant, by meter key: lookups reuse the callers' key strings rather than concatenating new ones. */
  private readonly meters = new Map<string, Map<string, MeterCell>>();
  private readonly leases = new Map<string, MutableLease>();
  private readonly requestLeases = new Map<string, { leaseKey: string; expiresAtMs: number }>();
  private readonly clock: () => number;
  private readonly tombstoneMs: number;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly generations = new Map<string, string>();

  constructor(options: MemoryCounterStoreOptions = {}) {
    this.clock = options.clock ?? Date.now;
    this.tombstoneMs = options.tombstoneMs ?? 3_600_000;
    const every = options.housekeepingMs ?? 10_000;
    if (every > 0) {
      this.timer = setInterval(() => this.housekeep(this.clock()), every);
      this.timer.unref();
    }
  }

  async reserve(request: ReserveRequest): Promise<ReserveResult> {
    const { tenant, nowMs } = request;
    if (!this.generations.has(tenant)) return { status: "cold" };
    if (request.requestId) {
      const seen = this.requestLeases.get(`${tenant}\u0000${request.requestId}`);
      const lease = seen && seen.expiresAtMs > nowMs ? this.leases.get(seen.leaseKey) : undefined;
      if (lease) return { status: "duplicate", lease: snapshotLease(lease) };
    }
    const cells = this.cellsOf(tenant);
    const used = request.meters.map((op) => valueOf(cells.get(op.key), nowMs));
    for (let i = 0; i < request.meters.length; i++) {
      const op = request.meters[i]!;
      if (op.enforce && used[i]! + op.amount > op.limit) return { status: "blocked", index: i, used };
    }
    for (let i = 0; i < request.meters.length; i++) {
      const op = request.meters[i]!;
      used[i] = addTo(cells, op.key, op.amount, op.expiresAtMs, nowMs);
    }
    const leaseKey = `${tenant}\u0000${request.leaseId}`;
    this.leases.set(leaseKey, {
      tenant,
      leaseId: request.leaseId,
      reservationId: request.reservationId,
      requestId: request.requestId,
      // The request's own (immutable) ops serve as the lease's meters: no copy per lease held.
      meters: request.meters,
      expiresAtMs: request.leaseExpiresAtMs,
      state: "open",
      dueAtMs: request.leaseExpiresAtMs,
      forgetAtMs: Number.MAX_SAFE_INTEGER,
    });
    if (request.requestId) {
      this.requestLeases.set(`${tenant}\u0000${request.requestId}`, { leaseKey, expiresAtMs: request.leaseExpiresAtMs + this.tombstoneMs });
    }
    return { status: "reserved", used };
  }

  async settle(request: SettleLeaseRequest): Promise<SettleLeaseResult> {
    const generation = this.generations.get(request.tenant);
    if (generation === undefined) return { status: "cold" };
    const lease = this.leases.get(`${request.tenant}\u0000${request.leaseId}`);
    if (!lease) return { status: "missing", generation };
    if (lease.state !== "open") return { status: "already", lease: snapshotLease(lease), generation };
    for (const m of lease.meters) {
      const delta = m.unit === "concurrency" ? -m.amount : settledAmount(m.unit, request.usage) - m.amount;
      if (delta !== 0) this.add(lease.tenant, m.key, delta, m.expiresAtMs, request.nowMs);
    }
    lease.state = "settled";
    lease.usage = request.usage;
    lease.dueAtMs = request.nowMs + request.graceMs;
    return { status: "settled", lease: snapshotLease(lease), generation };
  }

  async renew(tenant: string, leaseId: string, expiresAtMs: number): Promise<LeaseRecord | undefined> {
    const lease = this.leases.get(`${tenant}\u0000${leaseId}`);
    if (!lease || lease.state !== "open") return undefined;
    lease.expiresAtMs = expiresAtMs;
    lease.dueAtMs = expiresAtMs;
    return snapshotLease(lease);
  }

  async markRecorded(tenant: string, leaseId: string): Promise<string | undefined> {
    const lease = this.leases.get(`${tenant}\u0000${leaseId}`);
    if (lease && lease.state !== "open") {
      lease.dueAtMs = 0;
      lease.forgetAtMs = this.clock() + this.tombstoneMs;
    }
    return this.generations.get(tenant);
  }

  async claimDue(nowMs: number, graceMs: number, limit: number): Promise<LeaseRecord[]> {
    const claimed: LeaseRecord[] = [];
    for (const lease of this.leases.values()) {
      if (claimed.length >= limit) break;
      if (lease.dueAtMs === 0 || lease.dueAtMs > nowMs) continue;
      if (lease.state === "open") {
        // Expired: the estimate stands as the charge; only concurrency is released.
        for (const m of lease.meters) if (m.unit === "concurrency") this.add(lease.tenant, m.key, -m.amount, 0, nowMs);
        lease.state = "expired";
      }
      lease.dueAtMs = nowMs + graceMs;
      claimed.push({ ...snapshotLease(lease), generation: this.generations.get(lease.tenant) });
    }
    return claimed;
  }

  async charge(tenant: string, charges: readonly MeterCharge[], generation: string): Promise<boolean> {
    if (this.generations.get(tenant) !== generation) return false;
    const nowMs = this.clock();
    for (const c of charges) this.add(tenant, c.key, c.amount, c.expiresAtMs, nowMs);
    return true;
  }

  async rebuild(tenant: string, generation: string, charges: readonly MeterCharge[]): Promise<boolean> {
    if (this.generations.has(tenant)) return false;
    this.generations.set(tenant, generation);
    return this.charge(tenant, charges, generation);
  }

  async generation(tenant: string): Promise<string | undefined> {
    return this.generations.get(tenant);
  }

  async read(tenant: string, keys: readonly string[]): Promise<number[]> {
    const nowMs = this.clock();
    return keys.map((key) => this.value(tenant, key, nowMs));
  }

  async reset(tenant: string, key: string): Promise<number> {
    const previous = this.value(tenant, key, this.clock());
    this.meters.get(tenant)?.delete(key);
    return previous;
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
  }

  /** Drops expired meters, forgotten leases and stale request ids. */
  housekeep(nowMs: number): void {
    for (const [tenant, cells] of this.meters) {
      for (const [key, cell] of cells) if (cell.expiresAtMs > 0 && cell.expiresAtMs <= nowMs) cells.delete(key);
      if (cells.size === 0) this.meters.delete(tenant);
    }
    for (const [key, lease] of this.leases) if (lease.dueAtMs === 0 && lease.forgetAtMs <= nowMs) this.leases.delete(key);
    for (const [key, entry] of this.requestLeases) if (entry.expiresAtMs <= nowMs) this.requestLeases.delete(key);
  }

  /** Number of leases still tracked (open, or settled and not yet recorded). */
  activeLeases(): number {
    let n = 0;
    for (const lease of this.leases.values()) if (lease.dueAtMs !== 0) n++;
    return n;
  }

  private value(tenant: string, key: string, nowMs: number): number {
    return valueOf(this.meters.get(tenant)?.get(key), nowMs);
  }

  private add(tenant: string, key: string, amount: number, expiresAtMs: number, nowMs: number): number {
    return addTo(this.cellsOf(tenant), key, amount, expiresAtMs, nowMs);
  }

  private cellsOf(tenant: string): Map<string, MeterCell> {
    let cells = this.meters.get(tenant);
    if (!cells) {
      cells = new Map();
      this.meters.set(tenant, cells);
    }
    return cells;
  }
}

function valueOf(cell: MeterCell | undefined, nowMs: number): number {
  if (!cell) return 0;
  if (cell.expiresAtMs > 0 && cell.expiresAtMs <= nowMs) return 0;
  return cell.value;
}

function addTo(cells: Map<string, MeterCell>, key: string, amount: number, expiresAtMs: number, nowMs: number): number {
  let cell = cells.get(key);
  if (!cell || (cell.expiresAtMs > 0 && cell.expiresAtMs <= nowMs)) {
    cell = { value: 0, expiresAtMs };
    cells.set(key, cell);
  }
  cell.value += amount;
  return cell.value;
}

function snapshotLease(lease: MutableLease): LeaseRecord {
  return {
    tenant: lease.tenant,
    leaseId: lease.leaseId,
    reservationId: lease.reservationId,
    meters: lease.meters,
    expiresAtMs: lease.expiresAtMs,
    state: lease.state,
    usage: lease.usage,
  };
}

import type {
  CounterStore, LeaseRecord, LeaseState, LeaseUsage, MeterCharge, MeterOp, ReserveRequest, ReserveResult, SettleLeaseRequest, SettleLeaseResult,
} from "./counter-store.js";
import { leaseMeters, reservedAmount, settledAmount } from "./counter-store.js";
import { backlogMicros, bucketKeyExpiresAtMs, bucketStep, isBucketKey } from "./token-bucket.js";

interface MeterCell {
  value: number;
  expiresAtMs: number;
}

/** A lease holds its reservation's own meters and amounts (the caller's objects, not copies). */
interface MutableLease extends Pick<ReserveRequest, "tenant" | "leaseId" | "reservationId" | "requestId" | "meters" | "amounts"> {
  expiresAtMs: number;
  state: LeaseState;
  usage?: LeaseUsage;
  /** When the sweeper should look at it. */
  dueAtMs: number;
}

/** Everything the store holds for one tenant: lookups by the callers' own strings, no keys built per call. */
interface TenantState {
  /** The tenant's generation; undefined while cold (see CounterStore). */
  generation: string | undefined;
  /** Meter cells by meter key. */
  readonly cells: Map<string, MeterCell>;
  readonly leases: Map<string, MutableLease>;
  /** Admit request id → lease id, for idempotent retries while the lease is held. */
  readonly requests: Map<string, string>;
}

export interface MemoryCounterStoreOptions {
  /** Clock for housekeeping only; decisions pass their own `nowMs`. */
  clock?: () => number;
  /** Housekeeping period; 0 disables the timer (tests call sweep()). */
  housekeepingMs?: number;
}

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
export class MemoryCounterStore implements CounterStore {
  private readonly tenants = new Map<string, TenantState>();
  private readonly clock: () => number;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(options: MemoryCounterStoreOptions = {}) {
    this.clock = options.clock ?? Date.now;
    const every = options.housekeepingMs ?? 10_000;
    if (every > 0) {
      this.timer = setInterval(() => this.housekeep(this.clock()), every);
      this.timer.unref();
    }
  }

  async reserve(request: ReserveRequest): Promise<ReserveResult> {
    const { nowMs, meters, amounts } = request;
    const t = this.tenants.get(request.tenant);
    if (t?.generation === undefined) return { status: "cold" };
    if (request.requestId) {
      const seen = t.requests.get(request.requestId);
      const lease = seen === undefined ? undefined : t.leases.get(seen);
      if (lease) return { status: "duplicate", lease: snapshotLease(lease) };
    }
    const used = new Array<number>(meters.length);
    for (let i = 0; i < meters.length; i++) {
      const op = meters[i]!;
      used[i] = valueOf(t.cells.get(op.key), nowMs);
      if (op.bucket) {
        // A bucket: used[i] holds its TAT until the write below (see token-bucket.ts).
        const step = bucketStep(used[i]!, nowMs, reservedAmount(op.unit, amounts), op.bucket, op.enforce ? op.bucket.toleranceMs : Infinity);
        if (step.fits) {
          used[i] = step.tatMs;
          continue;
        }
      } else if (!(op.enforce && used[i]! + reservedAmount(op.unit, amounts) > op.limit)) {
        continue;
      }
      for (let j = 0; j < meters.length; j++) used[j] = currentValue(t.cells, meters[j]!, nowMs);
      return { status: "blocked", index: i, used };
    }
    for (let i = 0; i < meters.length; i++) {
      const op = meters[i]!;
      if (op.bucket) {
        t.cells.set(op.key, { value: used[i]!, expiresAtMs: bucketKeyExpiresAtMs(used[i]!, request.leaseExpiresAtMs) });
        used[i] = backlogMicros(used[i]!, nowMs);
      } else {
        used[i] = addTo(t.cells, op.key, reservedAmount(op.unit, amounts), op.expiresAtMs, nowMs);
      }
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
    if (request.requestId) t.requests.set(request.requestId, request.leaseId);
    return { status: "reserved", used };
  }

  async settle(request: SettleLeaseRequest): Promise<SettleLeaseResult> {
    const t = this.tenants.get(request.tenant);
    const generation = t?.generation;
    if (generation === undefined) return { status: "cold" };
    const lease = t!.leases.get(request.leaseId);
    if (!lease) return { status: "missing", generation };
    if (lease.state !== "open") return { status: "already", lease: snapshotLease(lease), generation };
    for (const m of lease.meters) {
      const reserved = reservedAmount(m.unit, lease.amounts);
      const delta = m.unit === "concurrency" ? -reserved : settledAmount(m.unit, request.usage) - reserved;
      if (delta === 0) continue;
      if (m.bucket) moveBucket(t!.cells, m.key, delta * m.bucket.emissionMs, request.nowMs);
      else addTo(t!.cells, m.key, delta, m.expiresAtMs, request.nowMs);
    }
    lease.state = "settled";
    lease.usage = request.usage;
    lease.dueAtMs = request.nowMs + request.graceMs;
    return { status: "settled", lease: snapshotLease(lease), generation };
  }

  async renew(tenant: string, leaseId: string, expiresAtMs: number): Promise<LeaseRecord | undefined> {
    const lease = this.tenants.get(tenant)?.leases.get(leaseId);
    if (!lease || lease.state !== "open") return undefined;
    lease.expiresAtMs = expiresAtMs;
    lease.dueAtMs = expiresAtMs;
    return snapshotLease(lease);
  }

  async markRecorded(tenant: string, leaseId: string): Promise<string | undefined> {
    const t = this.tenants.get(tenant);
    const lease = t?.leases.get(leaseId);
    if (lease && lease.state !== "open") {
      t!.leases.delete(leaseId);
      if (lease.requestId && t!.requests.get(lease.requestId) === leaseId) t!.requests.delete(lease.requestId);
    }
    return t?.generation;
  }

  async claimDue(nowMs: number, graceMs: number, limit: number): Promise<LeaseRecord[]> {
    const claimed: LeaseRecord[] = [];
    for (const t of this.tenants.values()) {
      for (const lease of t.leases.values()) {
        if (claimed.length >= limit) return claimed;
        if (lease.dueAtMs > nowMs) continue;
        if (lease.state === "open") {
          // Expired: the estimate stands as the charge; only concurrency is released.
          for (const m of lease.meters) if (m.unit === "concurrency") addTo(t.cells, m.key, -reservedAmount(m.unit, lease.amounts), 0, nowMs);
          lease.state = "expired";
        }
        lease.dueAtMs = nowMs + graceMs;
        claimed.push({ ...snapshotLease(lease), generation: t.generation });
      }
    }
    return claimed;
  }

  async charge(tenant: string, charges: readonly MeterCharge[], generation: string): Promise<boolean> {
    const t = this.tenants.get(tenant);
    if (t?.generation !== generation) return false;
    const nowMs = this.clock();
    for (const c of charges) addTo(t.cells, c.key, c.amount, c.expiresAtMs, nowMs);
    return true;
  }

  async rebuild(tenant: string, generation: string, charges: readonly MeterCharge[]): Promise<boolean> {
    const t = this.stateOf(tenant);
    if (t.generation !== undefined) return false;
    t.generation = generation;
    return this.charge(tenant, charges, generation);
  }

  async generation(tenant: string): Promise<string | undefined> {
    return this.tenants.get(tenant)?.generation;
  }

  async read(tenant: string, keys: readonly string[]): Promise<number[]> {
    const nowMs = this.clock();
    const cells = this.tenants.get(tenant)?.cells;
    return keys.map((key) => (isBucketKey(key) ? backlogMicros(valueOf(cells?.get(key), nowMs), nowMs) : valueOf(cells?.get(key), nowMs)));
  }

  async openLeases(tenant: string): Promise<number> {
    let n = 0;
    for (const lease of this.tenants.get(tenant)?.leases.values() ?? []) if (lease.state === "open") n++;
    return n;
  }

  async reset(tenant: string, key: string): Promise<number> {
    const cells = this.tenants.get(tenant)?.cells;
    const nowMs = this.clock();
    const previous = isBucketKey(key) ? backlogMicros(valueOf(cells?.get(key), nowMs), nowMs) : valueOf(cells?.get(key), nowMs);
    cells?.delete(key);
    return previous;
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
  }

  /** Drops expired meters. */
  housekeep(nowMs: number): void {
    for (const t of this.tenants.values()) {
      for (const [key, cell] of t.cells) if (cell.expiresAtMs > 0 && cell.expiresAtMs <= nowMs) t.cells.delete(key);
    }
  }

  /** Number of leases still tracked (open, or settled and not yet recorded). */
  activeLeases(): number {
    let n = 0;
    for (const t of this.tenants.values()) n += t.leases.size;
    return n;
  }

  private stateOf(tenant: string): TenantState {
    let t = this.tenants.get(tenant);
    if (!t) this.tenants.set(tenant, (t = { generation: undefined, cells: new Map(), leases: new Map(), requests: new Map() }));
    return t;
  }
}

function valueOf(cell: MeterCell | undefined, nowMs: number): number {
  if (!cell) return 0;
  if (cell.expiresAtMs > 0 && cell.expiresAtMs <= nowMs) return 0;
  return cell.value;
}

/** A meter's value as reserve reports it: a bucket's backlog (µs), any other's count. */
function currentValue(cells: Map<string, MeterCell>, op: MeterOp, nowMs: number): number {
  const value = valueOf(cells.get(op.key), nowMs);
  return op.bucket ? backlogMicros(value, nowMs) : value;
}

/**
 * Moves a bucket's TAT by `deltaMs` (a settle's refund or debt). An absent bucket is full and
 * stays so: it expired once full after its lease could no longer settle (see bucketKeyExpiresAtMs).
 */
function moveBucket(cells: Map<string, MeterCell>, key: string, deltaMs: number, nowMs: number): void {
  const cell = cells.get(key);
  if (!cell || cell.expiresAtMs <= nowMs) return;
  cell.value += deltaMs;
  if (deltaMs > 0) cell.expiresAtMs = Math.max(cell.expiresAtMs, bucketKeyExpiresAtMs(cell.value, 0));
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

/** What callers see of a lease; its meters with their amounts are made only if read. */
function snapshotLease(lease: MutableLease): LeaseRecord {
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

import { Cluster, Redis, type ClusterOptions, type RedisOptions } from "ioredis";
import type { Logger } from "pino";
import type {
  CounterStore, LeaseMeter, LeaseRecord, LeaseState, LeaseUsage, MeterCharge, ReserveRequest, ReserveResult, SettleLeaseRequest, SettleLeaseResult,
} from "./counter-store.js";
import { CounterStoreUnavailableError, settledAmount } from "./counter-store.js";

/*
 * Key layout (prefix "adm", tenant "acme"). Every key of a tenant carries the hash tag
 * {acme}, so each script touches one slot and runs unchanged on Redis Cluster:
 *   adm:{acme}:m:<meter key>     meter value (integer string), PEXPIREAT its window's end
 *   adm:{acme}:lease:<lease id>  hash: rid, meters (JSON), exp, state, usage (JSON), req
 *   adm:{acme}:req:<request id>  lease id of an Admit's request id (idempotent retries)
 *   adm:{acme}:due               zset lease id → when the sweeper should look at it
 *   adm:{acme}:due-hint          a score at or below the lowest of :due that is published
 *                                in the index (see "Finding due leases" below)
 *   adm:{acme}:gen               the tenant's generation (see CounterStore): absent while
 *                                cold, so a flush or a restart without persistence (which
 *                                takes it with the data) makes the next call rebuild
 * Outside the tenant slots:
 *   adm:{~index}:due-tenants     zset tenant → when to look at its :due (a hint, never late)
 *   adm:{~index}:due-gen         hash tenant → sequence number of its last publication
 *   adm:{~index}:due-seq         counter for those sequence numbers
 *   adm:{~index}:rescan          lock: one replica per period runs the safety-net SCAN
 *
 * Numbers: Lua numbers are doubles, exact to 2^53 (amounts are checked to be safe
 * integers). Amounts travel as decimal strings, deltas computed in Lua are written with
 * %.0f (never "1e+15"), INCRBY does the adding, and values come back as integer replies:
 * meters are exact far beyond 2^32. Meter lists are JSON written by this process and
 * only decoded in Lua (cjson's encoder would round to 14 digits).
 *
 * Time: windows and lease expiries are absolute instants chosen by the caller (whose
 * clock is synchronised to the server's, see `now`). A meter key gets its expiry when it
 * is created, and Redis expires it by the server's clock, so a meter whose window ended
 * reads as absent. claimDue decides what is due by TIME inside the script, so a replica
 * whose clock runs ahead never expires a lease early; a settled lease is due graceMs
 * after the earlier of the caller's and the server's now. Scripts replicate their effects
 * (Redis >= 5), so TIME is allowed before writes.
 *
 * Finding due leases across tenants. A tenant's :due zset is in its slot; claimDue must
 * find every tenant with something due without scanning the keyspace, so the index zset
 * maps tenant → a time at or before its earliest due lease. Updating the index on every
 * reserve would put one hot key under all traffic, so the tenant scripts keep :due-hint,
 * the value last published: a script that lowers the tenant's minimum below the hint
 * returns the new minimum, and only then does this process publish it (ZADD LT; one
 * publication per tenant per sweep period in steady traffic, not one per request).
 *   Invariant, once every returned publication has landed: whenever a tenant's :due is
 *   non-empty, its index score <= :due-hint <= min(:due), so claimDue visits the tenant
 *   no later than its first lease is due. Publication keeps it (LT only lowers). A
 *   claimer raises the index after its claim script set :due-hint to the new minimum,
 *   or removes the tenant when :due was empty. The race: a reserve lands between the
 *   claim script and the raise/removal. Its publication bumps the tenant's sequence
 *   number; the claimer read that number before its claim script and raises or removes
 *   only if it is unchanged, otherwise it only lowers (ZADD LT). Sequence numbers come
 *   from one counter, so a removed and re-added tenant never shows an old number again.
 * What the invariant cannot cover is a publication that never happens: this process
 * dies (or loses the connection) between a tenant script and its publication, or an
 * index write is lost in a failover. Failed publications are retried from memory by the
 * next claimDue; for crashes and lost writes, one replica per `dueRescanMs` SCANs every
 * master for :due zsets and republishes their minimum. So even then a lease is claimed
 * at most about `dueRescanMs` late, never stranded.
 *
 * Requires `maxmemory-policy noeviction`: an evicted meter undercounts, an evicted
 * generation key makes a rebuild add the ledger to intact counters.
 */

const common = `
local p = ARGV[1]
local function n(x) if x == 0 then return '0' end return string.format('%.0f', x) end
local function generation() return redis.call('GET', p .. 'gen') end
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Adds to a meter. Its expiry is set when the key is created (the value is then the
-- amount), as in memory: later additions to the same window carry the same expiry.
local function add(key, amount, exp)
  if amount == 0 then return end
  local mk = p .. 'm:' .. key
  if redis.call('INCRBY', mk, n(amount)) == amount and exp > 0 then redis.call('PEXPIREAT', mk, n(exp)) end
end
local function lease_reply(out, id, rid, meters, exp, state, usage)
  out[#out + 1] = id
  out[#out + 1] = rid or ''
  out[#out + 1] = meters or '[]'
  out[#out + 1] = exp or '0'
  out[#out + 1] = state or 'open'
  out[#out + 1] = usage or ''
  return out
end
local function push_lease(out, id)
  local h = redis.call('HMGET', p .. 'lease:' .. id, 'rid', 'meters', 'exp', 'state', 'usage')
  return lease_reply(out, id, h[1], h[2], h[3], h[4], h[5])
end
-- Puts a lease on the tenant's due zset; returns the score to publish in the index, or ''.
local function track(id, score)
  redis.call('ZADD', KEYS[1], n(score), id)
  local hint = redis.call('GET', KEYS[2])
  if hint and tonumber(hint) <= score then return '' end
  redis.call('SET', KEYS[2], n(score))
  return n(score)
end
`;

/**
 * KEYS: due, hint. ARGV: prefix, leaseId, reservationId, requestId, leaseExpiresAtMs,
 * requestIdExpiresAtMs, meters JSON, count, then per meter: key, amount, limit, enforce, expiresAtMs.
 * A lease id that already exists is a duplicate too, so a retried call cannot reserve twice.
 * Reply: status, publish, then used values (reserved), index + used (blocked) or a lease
 * (duplicate); just 'cold' while the tenant has no generation.
 * Values are integer replies (a Lua number becomes a 64-bit integer: exact, as it is below 2^53).
 */
const reserveScript = `${common}
if not generation() then return {'cold', ''} end
local id, req = ARGV[2], ARGV[4]
local seen = id
if req ~= '' then seen = redis.call('GET', p .. 'req:' .. req) or id end
if redis.call('EXISTS', p .. 'lease:' .. seen) == 1 then return push_lease({'duplicate', ''}, seen) end
if seen ~= id and redis.call('EXISTS', p .. 'lease:' .. id) == 1 then return push_lease({'duplicate', ''}, id) end
local count = tonumber(ARGV[8])
local out = {'reserved', ''}
if count > 0 then
  local keys = {}
  for i = 1, count do keys[i] = p .. 'm:' .. ARGV[4 + i * 5] end
  local used = redis.call('MGET', unpack(keys))
  for i = 1, count do
    used[i] = tonumber(used[i] or '0')
    local b = 4 + i * 5
    if ARGV[b + 3] == '1' and used[i] + tonumber(ARGV[b + 1]) > tonumber(ARGV[b + 2]) then
      local blocked = {'blocked', '', tostring(i - 1)}
      for j = 1, count do blocked[j + 3] = tonumber(used[j] or '0') end
      return blocked
    end
  end
  for i = 1, count do
    local b = 4 + i * 5
    local amount = tonumber(ARGV[b + 1])
    local value = redis.call('INCRBY', keys[i], ARGV[b + 1])
    if value == amount and ARGV[b + 4] ~= '0' then redis.call('PEXPIREAT', keys[i], ARGV[b + 4]) end
    out[i + 2] = value
  end
end
redis.call('HSET', p .. 'lease:' .. id, 'rid', ARGV[3], 'meters', ARGV[7], 'exp', ARGV[5], 'state', 'open', 'req', req)
out[2] = track(id, tonumber(ARGV[5]))
if req ~= '' then redis.call('SET', p .. 'req:' .. req, id, 'PXAT', ARGV[6]) end
return out
`;

/**
 * KEYS: due, hint. ARGV: prefix, leaseId, caller's nowMs, graceMs, usage JSON, then the
 * settled amount of a requests, tokens and cost meter. Reply: status, publish, generation, lease.
 */
const settleScript = `${common}
local gen = generation()
if not gen then return {'cold', ''} end
local id = ARGV[2]
local lk = p .. 'lease:' .. id
local h = redis.call('HMGET', lk, 'state', 'rid', 'meters', 'exp')
if not h[1] then return {'missing', '', gen} end
if h[1] ~= 'open' then return push_lease({'already', '', gen}, id) end
local settled = {requests = tonumber(ARGV[6]), tokens = tonumber(ARGV[7]), cost = tonumber(ARGV[8])}
for _, m in ipairs(cjson.decode(h[3])) do
  if m.unit == 'concurrency' then add(m.key, -m.amount, 0)
  else add(m.key, settled[m.unit] - m.amount, m.expiresAtMs) end
end
redis.call('HSET', lk, 'state', 'settled', 'usage', ARGV[5])
-- Due for the sweeper graceMs after the settle: by the earlier of both clocks, so a
-- replica running ahead cannot push it out; one running behind only makes it earlier.
local publish = track(id, math.min(server_now(), tonumber(ARGV[3])) + tonumber(ARGV[4]))
return lease_reply({'settled', publish, gen}, id, h[2], h[3], h[4], 'settled', ARGV[5])
`;

/** KEYS: due, hint. ARGV: prefix, leaseId, expiresAtMs. Reply: status, publish, lease. */
const renewScript = `${common}
local id = ARGV[2]
local lk = p .. 'lease:' .. id
local h = redis.call('HMGET', lk, 'state', 'rid', 'meters')
if h[1] ~= 'open' then return {'missing', ''} end
redis.call('HSET', lk, 'exp', ARGV[3])
return lease_reply({'renewed', track(id, tonumber(ARGV[3]))}, id, h[2], h[3], ARGV[3], 'open', '')
`;

/** KEYS: due, hint. ARGV: prefix, leaseId, tombstoneMs. Reply: the tenant's generation ('' while cold). */
const recordedScript = `${common}
local lk = p .. 'lease:' .. ARGV[2]
local state = redis.call('HGET', lk, 'state')
if state and state ~= 'open' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', lk, ARGV[3])
end
return generation() or ''
`;

/**
 * KEYS: due, hint. ARGV: prefix, graceMs, limit. Claims this tenant's due leases by the
 * server's clock and re-scores them now + graceMs. Reply: the tenant's next due score
 * ('' when nothing is left), its generation, then 6 fields per claimed lease.
 */
const claimScript = `${common}
local now = server_now()
local out = {'', generation() or ''}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', n(now), 'LIMIT', 0, tonumber(ARGV[3]))) do
  local lk = p .. 'lease:' .. id
  local state = redis.call('HGET', lk, 'state')
  if not state then
    redis.call('ZREM', KEYS[1], id)
  else
    if state == 'open' then
      -- Expired: the estimate stands as the charge; only concurrency is released.
      for _, m in ipairs(cjson.decode(redis.call('HGET', lk, 'meters'))) do
        if m.unit == 'concurrency' then add(m.key, -m.amount, 0) end
      end
      redis.call('HSET', lk, 'state', 'expired')
    end
    redis.call('ZADD', KEYS[1], n(now + tonumber(ARGV[2])), id)
    push_lease(out, id)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  out[1] = n(tonumber(first[2]))
  redis.call('SET', KEYS[2], out[1])
else
  redis.call('DEL', KEYS[2])
end
return out
`;

/**
 * KEYS: due (routing only). ARGV: prefix, mode, generation, count, then per charge: key,
 * amount, expiresAtMs. Mode 'charge' adds only while the tenant is in that generation;
 * 'rebuild' adds only while it is cold, and makes it that generation. Reply: 1 if applied.
 */
const chargeScript = `${common}
local gen = generation()
if ARGV[2] == 'rebuild' then
  if gen then return 0 end
  redis.call('SET', p .. 'gen', ARGV[3])
elseif gen ~= ARGV[3] then
  return 0
end
for i = 0, tonumber(ARGV[4]) - 1 do
  local b = 5 + i * 3
  add(ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]))
end
return 1
`;

/** KEYS: index, gen, seq. ARGV: pairs of tenant, score. Lowers (or adds) each tenant's index score. */
const publishScript = `
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], redis.call('INCR', KEYS[3]))
  redis.call('ZADD', KEYS[1], 'LT', ARGV[i + 1], ARGV[i])
end
return 1
`;

/** KEYS: index, gen. ARGV: nowMs, max. Reply: pairs of tenant, its sequence number ('' if none). */
const dueTenantsScript = `
local out = {}
for _, t in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))) do
  out[#out + 1] = t
  out[#out + 1] = redis.call('HGET', KEYS[2], t) or ''
end
return out
`;

/**
 * KEYS: index, gen. ARGV: triples of tenant, sequence number read before its claim, next
 * due score ('' when its :due was empty). Raises or removes only if nothing was published since.
 */
const afterClaimScript = `
for i = 1, #ARGV, 3 do
  local t, seq, nxt = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if (redis.call('HGET', KEYS[2], t) or '') == seq then
    if nxt == '' then
      redis.call('ZREM', KEYS[1], t)
      redis.call('HDEL', KEYS[2], t)
    else
      redis.call('ZADD', KEYS[1], nxt, t)
    end
  elseif nxt ~= '' then
    redis.call('ZADD', KEYS[1], 'LT', nxt, t)
  end
end
return 1
`;

type Client = Redis | Cluster;

interface Scripts {
  admReserve(due: string, hint: string, ...args: string[]): Promise<Array<string | number>>;
  admSettle(due: string, hint: string, ...args: string[]): Promise<string[]>;
  admRenew(due: string, hint: string, ...args: string[]): Promise<string[]>;
  admRecorded(due: string, hint: string, ...args: string[]): Promise<string>;
  admClaim(due: string, hint: string, ...args: string[]): Promise<string[]>;
  admCharge(due: string, ...args: string[]): Promise<number>;
  admPublish(index: string, gen: string, seq: string, ...args: string[]): Promise<number>;
  admDueTenants(index: string, gen: string, ...args: string[]): Promise<string[]>;
  admAfterClaim(index: string, gen: string, ...args: string[]): Promise<number>;
}

const scripts: ReadonlyArray<[name: keyof Scripts, numberOfKeys: number, lua: string]> = [
  ["admReserve", 2, reserveScript],
  ["admSettle", 2, settleScript],
  ["admRenew", 2, renewScript],
  ["admRecorded", 2, recordedScript],
  ["admClaim", 2, claimScript],
  ["admCharge", 1, chargeScript],
  ["admPublish", 3, publishScript],
  ["admDueTenants", 2, dueTenantsScript],
  ["admAfterClaim", 2, afterClaimScript],
];

export interface RedisCounterStoreOptions {
  /** A `new Redis(...)` or `new Redis.Cluster(...)`; see `failFastRedisOptions`. */
  readonly client: Client;
  /** Prefix of every key, e.g. "adm". */
  readonly keyPrefix: string;
  readonly logger?: Logger;
  /** How long a recorded lease is kept for duplicate settles (default 1 h). */
  readonly tombstoneMs?: number;
  /** How long a request id keeps its lease beyond the lease's expiry (default 1 h). */
  readonly requestIdTtlMs?: number;
  /** Period of the safety-net SCAN for due leases, run by one replica at a time (default 60 s). */
  readonly dueRescanMs?: number;
  /** This process's clock (injected in tests to simulate a skewed replica). */
  readonly localClock?: () => number;
}

export interface RedisConnectOptions {
  /** redis://… of a single Redis; ignored when `clusterNodes` is given. */
  readonly url?: string;
  /** Seed nodes of a Redis Cluster, "host:port". */
  readonly clusterNodes?: readonly string[];
  readonly keyPrefix: string;
  readonly logger?: Logger;
  /** How long connect() waits for Redis before returning a store that fails fast (default 5 s). */
  readonly readyTimeoutMs?: number;
  readonly dueRescanMs?: number;
  readonly localClock?: () => number;
}

/**
 * Options that make commands fail fast while Redis is unreachable (no offline queue, a
 * command timeout, no resending of commands cut off by a broken connection — a resent
 * reserve would reserve twice) and reconnect by themselves with a capped backoff.
 */
export const failFastRedisOptions: RedisOptions = {
  enableOfflineQueue: false,
  // Measured on Admit over Session (64 in flight, 8 meters): autopipelining cost ~15 µs of
  // control-plane CPU per decision in its batching machinery and lowered throughput; commands
  // are written as they come instead (the socket coalesces writes under load anyway).
  enableAutoPipelining: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 1,
  commandTimeout: 2_000,
  connectTimeout: 2_000,
  retryStrategy: (times) => Math.min(50 * 2 ** times, 2_000),
  // After a failover the old master answers READONLY: reconnect (DNS may point elsewhere).
  reconnectOnError: (err) => err.message.startsWith("READONLY"),
};

/** The same for Redis Cluster (per-node connections use `failFastRedisOptions`). */
export const failFastClusterOptions: ClusterOptions = {
  enableOfflineQueue: false,
  enableAutoPipelining: true,
  redisOptions: failFastRedisOptions,
  clusterRetryStrategy: (times) => Math.min(100 * times, 2_000),
  slotsRefreshTimeout: 2_000,
  // A command is retried on CLUSTERDOWN/TRYAGAIN/failover at most this many times: ~300 ms.
  maxRedirections: 6,
  retryDelayOnClusterDown: 50,
  retryDelayOnFailover: 50,
  retryDelayOnTryAgain: 50,
};

/**
 * Reply errors that mean "the backend cannot serve now", not "the script is wrong".
 * MOVED/ASK reach us only when the redirection could not be followed (the owner is down).
 */
const transientReply = /^(CLUSTERDOWN|LOADING|TRYAGAIN|MASTERDOWN|READONLY|BUSY|OOM|NOREPLICAS|NOAUTH|WRONGPASS|MOVED|ASK)\b/;

/** Publications that failed (connection trouble) are retried by the next claimDue; beyond this many, the SCAN finds them. */
const maxUnpublished = 100_000;

/** Tenants one claimDue call looks at, at most. */
const dueTenantsPerClaim = 1_000;

/**
 * Counters and leases in Redis or Redis Cluster, shared by every control-plane
 * replica. Each operation is one Lua script over one tenant's slot (plus, rarely,
 * a publication in the due index; see the notes at the top of this file).
 */
export class RedisCounterStore implements CounterStore {
  private readonly client: Client & Scripts;
  private readonly prefix: string;
  private readonly logger: Logger | undefined;
  private readonly tombstoneMs: number;
  private readonly requestIdTtlMs: number;
  private readonly dueRescanMs: number;
  private readonly localClock: () => number;
  private readonly clockTimer: NodeJS.Timeout;
  private readonly unpublished = new Map<string, number>();
  private lastRescanCheckMs = Number.NEGATIVE_INFINITY;
  private offsetMs = 0;
  private reachable = true;

  constructor(options: RedisCounterStoreOptions) {
    this.client = options.client as Client & Scripts;
    this.prefix = options.keyPrefix;
    this.logger = options.logger;
    this.tombstoneMs = options.tombstoneMs ?? 3_600_000;
    this.requestIdTtlMs = options.requestIdTtlMs ?? 3_600_000;
    this.dueRescanMs = options.dueRescanMs ?? 60_000;
    this.localClock = options.localClock ?? Date.now;
    for (const [name, numberOfKeys, lua] of scripts) this.client.defineCommand(name, { numberOfKeys, lua });
    this.client.on("error", (err: Error) => this.unreachable(err));
    this.client.on("node error", (err: Error) => this.unreachable(err));
    this.client.on("ready", () => {
      if (!this.reachable) this.logger?.info("redis reachable again");
      this.reachable = true;
    });
    this.clockTimer = setInterval(() => void this.syncClock().catch(() => undefined), 10_000);
    this.clockTimer.unref();
  }

  /**
   * A store on a single Redis (`url`) or a Redis Cluster (`clusterNodes`). Waits up to
   * `readyTimeoutMs` for the connection; if Redis is not there yet, the store is
   * returned anyway: calls fail fast until it is, and the client keeps reconnecting.
   */
  static async connect(options: RedisConnectOptions): Promise<RedisCounterStore> {
    const client: Client = options.clusterNodes?.length
      ? new Cluster(options.clusterNodes.map(parseHostPort), failFastClusterOptions)
      : new Redis(options.url ?? "redis://127.0.0.1:6379", failFastRedisOptions);
    const store = new RedisCounterStore({
      client, keyPrefix: options.keyPrefix, logger: options.logger, dueRescanMs: options.dueRescanMs, localClock: options.localClock,
    });
    await new Promise<void>((resolve) => {
      if (client.status === "ready") return resolve();
      const timer = setTimeout(() => {
        client.off("ready", ready);
        options.logger?.warn({ status: client.status }, "redis not ready yet; decisions follow the failure policy until it is");
        resolve();
      }, options.readyTimeoutMs ?? 5_000);
      const ready = () => {
        clearTimeout(timer);
        resolve();
      };
      client.once("ready", ready);
    });
    await store.syncClock().catch((err) => options.logger?.warn({ err: String(err) }, "could not read the Redis clock yet"));
    return store;
  }

  /**
   * The Redis server's clock, as seen from here: every replica picks windows
   * (which minute, which month a request counts in) by this clock, so replicas
   * with skewed local clocks agree. Re-measured every 10 s.
   */
  readonly now = (): number => this.localClock() + this.offsetMs;

  /** Measures the offset between this process's clock and the Redis server's TIME. */
  async syncClock(): Promise<void> {
    const before = this.localClock();
    const [seconds, micros] = await this.call(() => this.client.time());
    const after = this.localClock();
    const serverMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    this.offsetMs = Math.round(serverMs - (before + after) / 2);
  }

  async reserve(r: ReserveRequest): Promise<ReserveResult> {
    const meters: LeaseMeter[] = r.meters.map((m) => ({ key: m.key, unit: m.unit, amount: integer(m.amount, "amount"), expiresAtMs: m.expiresAtMs }));
    const args = [
      this.tenantPrefix(r.tenant), r.leaseId, r.reservationId, r.requestId, String(r.leaseExpiresAtMs),
      String(r.leaseExpiresAtMs + this.requestIdTtlMs), JSON.stringify(meters), String(meters.length),
    ];
    for (const m of r.meters) args.push(m.key, String(m.amount), String(m.limit), m.enforce ? "1" : "0", String(m.expiresAtMs));
    const reply = await this.call(() => this.client.admReserve(this.dueKey(r.tenant), this.hintKey(r.tenant), ...args));
    switch (reply[0]) {
      case "cold":
        return { status: "cold" };
      case "duplicate":
        return { status: "duplicate", lease: parseLease(r.tenant, reply as string[], 2) };
      case "blocked":
        return { status: "blocked", index: Number(reply[2]), used: reply.slice(3).map(Number) };
      default:
        await this.publish(r.tenant, String(reply[1]));
        return { status: "reserved", used: reply.slice(2).map(Number) };
    }
  }

  async settle(r: SettleLeaseRequest): Promise<SettleLeaseResult> {
    const reply = await this.call(() =>
      this.client.admSettle(
        this.dueKey(r.tenant), this.hintKey(r.tenant), this.tenantPrefix(r.tenant), r.leaseId, String(r.nowMs), String(r.graceMs), JSON.stringify(r.usage),
        String(settledAmount("requests", r.usage)), String(settledAmount("tokens", r.usage)), String(settledAmount("cost", r.usage)),
      ),
    );
    if (reply[0] === "cold") return { status: "cold" };
    const generation = reply[2]!;
    if (reply[0] === "missing") return { status: "missing", generation };
    await this.publish(r.tenant, reply[1]!);
    return { status: reply[0] === "settled" ? "settled" : "already", lease: parseLease(r.tenant, reply, 3), generation };
  }

  async renew(tenant: string, leaseId: string, expiresAtMs: number): Promise<LeaseRecord | undefined> {
    const reply = await this.call(() => this.client.admRenew(this.dueKey(tenant), this.hintKey(tenant), this.tenantPrefix(tenant), leaseId, String(expiresAtMs)));
    if (reply[0] === "missing") return undefined;
    await this.publish(tenant, reply[1]!);
    return parseLease(tenant, reply, 2);
  }

  async markRecorded(tenant: string, leaseId: string): Promise<string | undefined> {
    const generation = await this.call(() =>
      this.client.admRecorded(this.dueKey(tenant), this.hintKey(tenant), this.tenantPrefix(tenant), leaseId, String(this.tombstoneMs)),
    );
    return generation || undefined;
  }

  async claimDue(nowMs: number, graceMs: number, limit: number): Promise<LeaseRecord[]> {
    await this.republish();
    await this.rescanIfDue();
    const listed = await this.call(() => this.client.admDueTenants(this.indexKey, this.genKey, String(nowMs), String(dueTenantsPerClaim)));
    const claimed: LeaseRecord[] = [];
    const after: string[] = [];
    for (let i = 0; i + 1 < listed.length && claimed.length < limit; i += 2) {
      const tenant = listed[i]!;
      const reply = await this.call(() =>
        this.client.admClaim(this.dueKey(tenant), this.hintKey(tenant), this.tenantPrefix(tenant), String(graceMs), String(limit - claimed.length)),
      );
      for (let j = 2; j + 5 < reply.length; j += 6) claimed.push({ ...parseLease(tenant, reply, j), generation: reply[1] || undefined });
      after.push(tenant, listed[i + 1]!, reply[0]!);
    }
    if (after.length > 0) await this.call(() => this.client.admAfterClaim(this.indexKey, this.genKey, ...after));
    return claimed;
  }

  charge(tenant: string, charges: readonly MeterCharge[], generation: string): Promise<boolean> {
    return this.chargeIn("charge", tenant, generation, charges);
  }

  rebuild(tenant: string, generation: string, charges: readonly MeterCharge[]): Promise<boolean> {
    return this.chargeIn("rebuild", tenant, generation, charges);
  }

  async generation(tenant: string): Promise<string | undefined> {
    return (await this.call(() => this.client.get(`${this.tenantPrefix(tenant)}gen`))) ?? undefined;
  }

  private async chargeIn(mode: "charge" | "rebuild", tenant: string, generation: string, charges: readonly MeterCharge[]): Promise<boolean> {
    if (generation === "") throw new TypeError("generation must not be empty");
    const args = [this.tenantPrefix(tenant), mode, generation, String(charges.length)];
    for (const c of charges) args.push(c.key, String(integer(c.amount, "amount")), String(c.expiresAtMs));
    return (await this.call(() => this.client.admCharge(this.dueKey(tenant), ...args))) === 1;
  }

  async read(tenant: string, keys: readonly string[]): Promise<number[]> {
    if (keys.length === 0) return [];
    const prefix = this.tenantPrefix(tenant);
    const values = await this.call(() => this.client.mget(keys.map((k) => `${prefix}m:${k}`)));
    return values.map((v) => (v === null ? 0 : Number(v)));
  }

  async reset(tenant: string, key: string): Promise<number> {
    const previous = await this.call(() => this.client.getdel(`${this.tenantPrefix(tenant)}m:${key}`));
    return previous === null ? 0 : Number(previous);
  }

  async ping(): Promise<void> {
    await this.call(() => this.client.ping());
  }

  async close(): Promise<void> {
    clearInterval(this.clockTimer);
    await this.client.quit().catch(() => this.client.disconnect());
  }

  private tenantPrefix(tenant: string): string {
    // An empty hash tag "{}" would not be a tag: the tenant's keys would spread over slots.
    if (tenant === "") throw new TypeError("tenant id must not be empty");
    return `${this.prefix}:{${tenant}}:`;
  }

  private dueKey(tenant: string): string {
    return `${this.tenantPrefix(tenant)}due`;
  }

  private hintKey(tenant: string): string {
    return `${this.tenantPrefix(tenant)}due-hint`;
  }

  private get indexKey(): string {
    return `${this.prefix}:{~index}:due-tenants`;
  }

  private get genKey(): string {
    return `${this.prefix}:{~index}:due-gen`;
  }

  private get seqKey(): string {
    return `${this.prefix}:{~index}:due-seq`;
  }

  /**
   * Publishes a tenant's lowered due minimum in the index. The tenant script has
   * already happened, so a failure must not fail the caller: it is kept and retried.
   */
  private async publish(tenant: string, score: string): Promise<void> {
    if (score === "") return;
    try {
      await this.call(() => this.client.admPublish(this.indexKey, this.genKey, this.seqKey, tenant, score));
    } catch (err) {
      if (!(err instanceof CounterStoreUnavailableError)) throw err;
      const known = this.unpublished.get(tenant);
      if (known !== undefined || this.unpublished.size < maxUnpublished) this.unpublished.set(tenant, Math.min(known ?? Infinity, Number(score)));
    }
  }

  private async republish(): Promise<void> {
    if (this.unpublished.size === 0) return;
    const pending = [...this.unpublished];
    await this.call(() => this.client.admPublish(this.indexKey, this.genKey, this.seqKey, ...pending.flatMap(([tenant, score]) => [tenant, String(score)])));
    // Publications that failed meanwhile stay for the next round.
    for (const [tenant, score] of pending) if (this.unpublished.get(tenant) === score) this.unpublished.delete(tenant);
  }

  /**
   * The safety net (see the top of this file): once per `dueRescanMs`, one replica
   * (whichever takes the lock) SCANs every master for tenants' :due zsets and publishes
   * each one's minimum. Publication only lowers index scores, so this never hides work.
   */
  private async rescanIfDue(): Promise<void> {
    const localMs = this.localClock();
    if (this.dueRescanMs <= 0 || localMs - this.lastRescanCheckMs < this.dueRescanMs) return;
    const lock = await this.call(() => this.client.set(`${this.prefix}:{~index}:rescan`, "1", "PX", this.dueRescanMs, "NX"));
    this.lastRescanCheckMs = localMs;
    if (lock !== "OK") return;
    const head = `${this.prefix}:{`;
    const tail = "}:due";
    const nodes: Redis[] = this.client instanceof Cluster ? this.client.nodes("master") : [this.client];
    let found = 0;
    for (const node of nodes) {
      let cursor = "0";
      do {
        const [next, keys] = await this.call(() => node.scan(cursor, "MATCH", `${escapeGlob(head)}*${escapeGlob(tail)}`, "COUNT", 1000, "TYPE", "zset"));
        cursor = next;
        const firsts = await this.call(() => Promise.all(keys.map((key) => this.client.zrange(key, "0", "0", "WITHSCORES"))));
        const args: string[] = [];
        keys.forEach((key, i) => {
          const score = firsts[i]![1];
          if (score !== undefined) args.push(key.slice(head.length, key.length - tail.length), score);
        });
        if (args.length > 0) await this.call(() => this.client.admPublish(this.indexKey, this.genKey, this.seqKey, ...args));
        found += args.length / 2;
      } while (cursor !== "0");
    }
    this.logger?.debug({ tenants: found }, "due-lease safety-net scan done");
  }

  private unreachable(err: Error): void {
    if (this.reachable) this.logger?.warn({ err: err.message }, "redis unreachable; counter calls fail fast until it is back");
    this.reachable = false;
  }

  /** Connection trouble becomes CounterStoreUnavailableError; script bugs stay errors. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof TypeError || err instanceof RangeError) throw err;
      const message = err instanceof Error ? err.message : String(err);
      const isReply = (err as { name?: string } | null)?.name === "ReplyError";
      if (isReply && !transientReply.test(message)) throw err;
      throw new CounterStoreUnavailableError(`redis: ${message}`, { cause: err });
    }
  }
}

/** Reads a lease from a reply: leaseId, reservationId, meters JSON, exp, state, usage JSON at `at`. */
function parseLease(tenant: string, reply: readonly string[], at: number): LeaseRecord {
  const [leaseId, reservationId, meters, exp, state, usage] = reply.slice(at, at + 6);
  return {
    tenant,
    leaseId: leaseId!,
    reservationId: reservationId ?? "",
    meters: JSON.parse(meters || "[]") as LeaseMeter[],
    expiresAtMs: Number(exp),
    state: (state || "open") as LeaseState,
    usage: usage ? (JSON.parse(usage) as LeaseUsage) : undefined,
  };
}

function integer(value: number, what: string): number {
  if (!Number.isSafeInteger(value)) throw new RangeError(`${what} ${value} is not a safe integer`);
  return value;
}

function parseHostPort(hostPort: string): { host: string; port: number } {
  const at = hostPort.lastIndexOf(":");
  return at < 0 ? { host: hostPort, port: 6379 } : { host: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)) };
}

function escapeGlob(s: string): string {
  return s.replace(/[*?[\]\\]/g, "\\$&");
}

import { Redis, Cluster, type RedisOptions } from "ioredis";
import type { Logger } from "pino";
import type {
  CounterStore, LeaseMeter, LeaseRecord, LeaseState, LeaseUsage, MeterCharge, ReserveRequest, ReserveResult, SettleLeaseRequest, SettleLeaseResult,
} from "./counter-store.js";
import { CounterStoreUnavailableError } from "./counter-store.js";

/*
 * Key layout (prefix "adm", tenant "acme"): every key of a tenant carries the hash
 * tag {acme}, so each script touches one slot and works on Redis Cluster.
 *   adm:{acme}:m:<meter key>   meter value (integer), PEXPIREAT at its window's end
 *   adm:{acme}:l:<lease id>    lease hash: rid, meters, exp, state, usage
 *   adm:{acme}:r:<request id>  lease id of a request id (idempotent Admit)
 *   adm:{acme}:due             zset lease id → when the sweeper should look at it
 *   adm:due-tenants            zset tenant → earliest due time (a hint across slots)
 *   adm:epoch                  set once counters exist; missing = data lost → rebuild
 * Numbers are Lua doubles, exact to 2^53; they are written with %.0f so INCRBY gets
 * integers, never "1e+15". Time inside scripts is the server's (TIME), so replicas with
 * skewed clocks agree on expiry.
 */

const header = `
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function n(x) return string.format('%.0f', x) end
local function lease_reply(status, id)
  local h = redis.call('HMGET', p .. 'l:' .. id, 'rid', 'meters', 'exp', 'state', 'usage')
  return {status, id, h[1], h[2], h[3], h[4], h[5] or ''}
end
local function each_meter(meters, fn)
  for line in string.gmatch(meters, '[^\\n]+') do
    local key, unit, amount, exp = string.match(line, '^(.*)\\t(%a+)\\t(%-?%d+)\\t(%d+)$')
    fn(key, unit, tonumber(amount), tonumber(exp))
  end
end
local function add(key, amount, exp)
  if amount == 0 then return end
  local mk = p .. 'm:' .. key
  redis.call('INCRBY', mk, n(amount))
  if exp > 0 then redis.call('PEXPIREAT', mk, n(exp)) end
end
`;

/** KEYS[1] due zset; ARGV: prefix, leaseId, rid, requestId, leaseExp, idemTtlMs, count, then per meter: key, unit, amount, limit, enforce, exp. */
const reserveScript = `${header}
local lease_id, rid, req = ARGV[2], ARGV[3], ARGV[4]
if req ~= '' then
  local seen = redis.call('GET', p .. 'r:' .. req)
  if seen and redis.call('EXISTS', p .. 'l:' .. seen) == 1 then return lease_reply('duplicate', seen) end
end
local count = tonumber(ARGV[7])
local used = {}
for i = 0, count - 1 do
  local b = 8 + i * 6
  used[i + 1] = tonumber(redis.call('GET', p .. 'm:' .. ARGV[b]) or '0')
end
for i = 0, count - 1 do
  local b = 8 + i * 6
  if ARGV[b + 4] == '1' and used[i + 1] + tonumber(ARGV[b + 2]) > tonumber(ARGV[b + 3]) then
    local out = {'blocked', tostring(i)}
    for j = 1, count do out[#out + 1] = n(used[j]) end
    return out
  end
end
local lines = {}
local out = {'reserved', ''}
for i = 0, count - 1 do
  local b = 8 + i * 6
  local key, unit, amount, exp = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 5])
  local mk = p .. 'm:' .. key
  out[#out + 1] = n(redis.call('INCRBY', mk, n(amount)))
  if exp > 0 then redis.call('PEXPIREAT', mk, n(exp)) end
  lines[#lines + 1] = key .. '\\t' .. unit .. '\\t' .. n(amount) .. '\\t' .. n(exp)
end
redis.call('HSET', p .. 'l:' .. lease_id, 'rid', rid, 'meters', table.concat(lines, '\\n'), 'exp', ARGV[5], 'state', 'open')
redis.call('ZADD', KEYS[1], ARGV[5], lease_id)
if req ~= '' then redis.call('SET', p .. 'r:' .. req, lease_id, 'PX', ARGV[6]) end
return out
`;

/** KEYS[1] due zset; ARGV: prefix, leaseId, tokens, costMicros, usage JSON, graceMs. */
const settleScript = `${header}
local id = ARGV[2]
local lk = p .. 'l:' .. id
if redis.call('EXISTS', lk) == 0 then return {'missing'} end
if redis.call('HGET', lk, 'state') ~= 'open' then return lease_reply('already', id) end
local tokens, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
each_meter(redis.call('HGET', lk, 'meters'), function(key, unit, amount, exp)
  if unit == 'concurrency' then add(key, -amount, 0)
  elseif unit == 'tokens' then add(key, tokens - amount, exp)
  elseif unit == 'cost' then add(key, cost - amount, exp) end
end)
redis.call('HSET', lk, 'state', 'settled', 'usage', ARGV[5])
redis.call('ZADD', KEYS[1], n(now + tonumber(ARGV[6])), id)
return lease_reply('settled', id)
`;

/** KEYS[1] due zset; ARGV: prefix, leaseId, newExp. */
const renewScript = `${header}
local lk = p .. 'l:' .. ARGV[2]
if redis.call('HGET', lk, 'state') ~= 'open' then return {'missing'} end
redis.call('HSET', lk, 'exp', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
return lease_reply('renewed', ARGV[2])
`;

/** KEYS[1] due zset; ARGV: prefix, leaseId, tombstoneMs. */
const recordedScript = `${header}
local lk = p .. 'l:' .. ARGV[2]
local state = redis.call('HGET', lk, 'state')
if not state or state == 'open' then return 0 end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('PEXPIRE', lk, ARGV[3])
return 1
`;

/** KEYS[1] due zset; ARGV: prefix, graceMs, limit. Returns the next due time, then claimed leases. */
const claimScript = `${header}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', n(now), 'LIMIT', 0, tonumber(ARGV[3]))
local out = {''}
for _, id in ipairs(ids) do
  local lk = p .. 'l:' .. id
  local state = redis.call('HGET', lk, 'state')
  if not state then
    redis.call('ZREM', KEYS[1], id)
  else
    if state == 'open' then
      each_meter(redis.call('HGET', lk, 'meters'), function(key, unit, amount, exp)
        if unit == 'concurrency' then add(key, -amount, 0) end
      end)
      redis.call('HSET', lk, 'state', 'expired')
    end
    redis.call('ZADD', KEYS[1], n(now + tonumber(ARGV[2])), id)
    local r = lease_reply('due', id)
    for j = 2, #r do out[#out + 1] = r[j] end
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
out[1] = first[2] or ''
return out
`;

/** KEYS[1] any key of the tenant (routing); ARGV: prefix, count, then key, amount, exp. */
const chargeScript = `${header}
for i = 0, tonumber(ARGV[2]) - 1 do
  local b = 3 + i * 3
  add(ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]))
end
return 1
`;

type Client = Redis | Cluster;

interface Scripts {
  admReserve(key: string, ...args: string[]): Promise<string[]>;
  admSettle(key: string, ...args: string[]): Promise<string[]>;
  admRenew(key: string, ...args: string[]): Promise<string[]>;
  admRecorded(key: string, ...args: string[]): Promise<number>;
  admClaim(key: string, ...args: string[]): Promise<string[]>;
  admCharge(key: string, ...args: string[]): Promise<number>;
}

export interface RedisCounterStoreOptions {
  readonly client: Client;
  /** Prefix of every key, e.g. "adm". */
  readonly keyPrefix: string;
  readonly logger?: Logger;
  /** How long a recorded lease is kept for duplicate settles. */
  readonly tombstoneMs?: number;
  /** How long a request id maps to its lease, beyond the lease's own expiry. */
  readonly requestIdTtlMs?: number;
  /** This process's clock (injected in tests to simulate a skewed replica). */
  readonly localClock?: () => number;
}

/** Options that make commands fail fast while Redis is unreachable, and reconnect by themselves. */
export const failFastRedisOptions: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  commandTimeout: 2_000,
  connectTimeout: 2_000,
  enableAutoPipelining: true,
  retryStrategy: (times) => Math.min(50 * 2 ** times, 2_000),
};

/**
 * Counters and leases in Redis or Redis Cluster, shared by every control-plane
 * replica. Each operation is one Lua script over one tenant's slot.
 */
export class RedisCounterStore implements CounterStore {
  private readonly client: Client & Scripts;
  private readonly prefix: string;
  private readonly tombstoneMs: number;
  private readonly requestIdTtlMs: number;
  private lastScanMs = 0;
  private offsetMs = 0;
  private readonly localClock: () => number;
  private readonly clockTimer: NodeJS.Timeout;

  constructor(private readonly options: RedisCounterStoreOptions) {
    this.localClock = options.localClock ?? Date.now;
    this.clockTimer = setInterval(() => void this.syncClock().catch(() => undefined), 10_000);
    this.clockTimer.unref();
    this.client = options.client as Client & Scripts;
    this.prefix = options.keyPrefix;
    this.tombstoneMs = options.tombstoneMs ?? 3_600_000;
    this.requestIdTtlMs = options.requestIdTtlMs ?? 3_600_000;
    const define = (name: string, lua: string) => this.client.defineCommand(name, { numberOfKeys: 1, lua });
    define("admReserve", reserveScript);
    define("admSettle", settleScript);
    define("admRenew", renewScript);
    define("admRecorded", recordedScript);
    define("admClaim", claimScript);
    define("admCharge", chargeScript);
    this.client.on("error", (err: Error) => options.logger?.warn({ err: err.message }, "redis connection error"));
  }

  /**
   * A store on REDIS_URL or REDIS_CLUSTER_NODES ("host:port,host:port"). Waits
   * up to `readyTimeoutMs` for the connection; if Redis is not there yet, the
   * store is returned anyway: calls fail fast until it is, and the client keeps
   * reconnecting.
   */
  static async connect(options: { url?: string; clusterNodes?: readonly string[]; keyPrefix: string; logger?: Logger; readyTimeoutMs?: number; localClock?: () => number }): Promise<RedisCounterStore> {
    let client: Client;
    if (options.clusterNodes && options.clusterNodes.length > 0) {
      const nodes = options.clusterNodes.map((hp) => {
        const [host, port] = hp.split(":");
        return { host: host!, port: Number(port) };
      });
      client = new Cluster(nodes, { enableOfflineQueue: false, enableAutoPipelining: true, redisOptions: failFastRedisOptions, clusterRetryStrategy: (times) => Math.min(100 * times, 2_000) });
    } else {
      client = new Redis(options.url ?? "redis://127.0.0.1:6379", failFastRedisOptions);
    }
    const store = new RedisCounterStore({ client, keyPrefix: options.keyPrefix, logger: options.logger, localClock: options.localClock });
    await new Promise<void>((resolve) => {
      if (client.status === "ready") return resolve();
      const timer = setTimeout(() => {
        options.logger?.warn({ status: client.status }, "redis not ready yet; decisions follow the failure policy until it is");
        resolve();
      }, options.readyTimeoutMs ?? 5_000);
      client.once("ready", () => {
        clearTimeout(timer);
        resolve();
      });
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

  private tenantPrefix(tenant: string): string {
    return `${this.prefix}:{${tenant}}:`;
  }

  private due(tenant: string): string {
    return `${this.tenantPrefix(tenant)}due`;
  }

  private get index(): string {
    return `${this.prefix}:due-tenants`;
  }

  async reserve(r: ReserveRequest): Promise<ReserveResult> {
    const args = [this.tenantPrefix(r.tenant), r.leaseId, r.reservationId, r.requestId, String(r.leaseExpiresAtMs), String(Math.max(1, r.leaseExpiresAtMs - r.nowMs) + this.requestIdTtlMs), String(r.meters.length)];
    for (const m of r.meters) args.push(m.key, m.unit, String(m.amount), String(m.limit), m.enforce ? "1" : "0", String(m.expiresAtMs));
    const reply = await this.call(() => this.client.admReserve(this.due(r.tenant), ...args));
    if (reply[0] === "duplicate") return { status: "duplicate", lease: parseLease(r.tenant, reply) };
    if (reply[0] === "blocked") return { status: "blocked", index: Number(reply[1]), used: reply.slice(2).map(Number) };
    await this.hint(r.tenant, r.leaseExpiresAtMs);
    return { status: "reserved", used: reply.slice(2).map(Number) };
  }

  async settle(r: SettleLeaseRequest): Promise<SettleLeaseResult> {
    const reply = await this.call(() =>
      this.client.admSettle(this.due(r.tenant), this.tenantPrefix(r.tenant), r.leaseId, String(r.usage.inputTokens + r.usage.outputTokens), String(r.usage.costMicros), JSON.stringify(r.usage), String(r.graceMs)),
    );
    if (reply[0] === "missing") return { status: "missing" };
    if (reply[0] === "settled") await this.hint(r.tenant, r.nowMs + r.graceMs);
    return { status: reply[0] === "settled" ? "settled" : "already", lease: parseLease(r.tenant, reply) };
  }

  async renew(tenant: string, leaseId: string, expiresAtMs: number): Promise<LeaseRecord | undefined> {
    const reply = await this.call(() => this.client.admRenew(this.due(tenant), this.tenantPrefix(tenant), leaseId, String(expiresAtMs)));
    return reply[0] === "missing" ? undefined : parseLease(tenant, reply);
  }

  async markRecorded(tenant: string, leaseId: string): Promise<void> {
    await this.call(() => this.client.admRecorded(this.due(tenant), this.tenantPrefix(tenant), leaseId, String(this.tombstoneMs)));
  }

  async claimDue(nowMs: number, graceMs: number, limit: number): Promise<LeaseRecord[]> {
    if (nowMs - this.lastScanMs > 15_000) await this.rescanDueSets(nowMs);
    const tenants = await this.call(() => this.client.zrangebyscore(this.index, "-inf", String(nowMs), "LIMIT", 0, 100));
    const claimed: LeaseRecord[] = [];
    for (const tenant of tenants) {
      if (claimed.length >= limit) break;
      const reply = await this.call(() => this.client.admClaim(this.due(tenant), this.tenantPrefix(tenant), String(graceMs), String(limit - claimed.length)));
      for (let i = 1; i + 5 < reply.length; i += 6) claimed.push(parseLease(tenant, ["due", ...reply.slice(i, i + 6)]));
      // The next due time of this tenant, or none. A reserve racing this update is
      // caught by the periodic rescan of every due set (below), so no lease is stranded
      // for longer than the rescan period.
      const next = reply[0];
      await this.call(() => (next ? this.client.zadd(this.index, next, tenant) : this.client.zrem(this.index, tenant)));
    }
    return claimed;
  }

  /** Safety net for the cross-slot index: re-adds every tenant whose due set is not empty. */
  private async rescanDueSets(nowMs: number): Promise<void> {
    this.lastScanMs = nowMs;
    const nodes = this.client instanceof Cluster ? this.client.nodes("master") : [this.client];
    for (const node of nodes) {
      let cursor = "0";
      do {
        const [next, keys] = await this.call(() => node.scan(cursor, "MATCH", `${this.prefix}:{*}:due`, "COUNT", 1000));
        cursor = next;
        for (const key of keys) {
          const tenant = key.slice(this.prefix.length + 2, key.length - ":due".length - 1);
          const first = await this.call(() => this.client.zrange(key, "0", "0", "WITHSCORES"));
          if (first[1]) await this.call(() => this.client.zadd(this.index, "LT", first[1]!, tenant));
        }
      } while (cursor !== "0");
    }
  }

  async charge(tenant: string, charges: readonly MeterCharge[]): Promise<void> {
    if (charges.length === 0) return;
    const args = [this.tenantPrefix(tenant), String(charges.length)];
    for (const c of charges) args.push(c.key, String(c.amount), String(c.expiresAtMs));
    await this.call(() => this.client.admCharge(this.due(tenant), ...args));
  }

  async read(tenant: string, keys: readonly string[]): Promise<number[]> {
    if (keys.length === 0) return [];
    const values = await this.call(() => this.client.mget(keys.map((k) => `${this.tenantPrefix(tenant)}m:${k}`)));
    return values.map((v) => (v === null ? 0 : Number(v)));
  }

  async reset(tenant: string, key: string): Promise<number> {
    const previous = await this.call(() => this.client.getdel(`${this.tenantPrefix(tenant)}m:${key}`));
    return previous === null ? 0 : Number(previous);
  }

  async claimRebuild(nowMs: number): Promise<boolean> {
    const set = await this.call(() => this.client.set(`${this.prefix}:epoch`, String(nowMs), "NX"));
    return set === "OK";
  }

  async ping(): Promise<void> {
    await this.call(() => this.client.ping());
  }

  async close(): Promise<void> {
    clearInterval(this.clockTimer);
    await this.client.quit().catch(() => this.client.disconnect());
  }

  private async hint(tenant: string, dueAtMs: number): Promise<void> {
    await this.call(() => this.client.zadd(this.index, "LT", String(dueAtMs), tenant));
  }

  /** Connection trouble becomes CounterStoreUnavailableError; script bugs stay errors. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const isReply = (err as { name?: string }).name === "ReplyError";
      if (!isReply || /^(CLUSTERDOWN|LOADING|TRYAGAIN|MASTERDOWN|READONLY)/.test(message)) {
        throw new CounterStoreUnavailableError(`redis: ${message}`, { cause: err });
      }
      throw err;
    }
  }
}

function parseLease(tenant: string, reply: string[]): LeaseRecord {
  const [, leaseId, reservationId, meters, exp, state, usage] = reply;
  return {
    tenant,
    leaseId: leaseId!,
    reservationId: reservationId ?? "",
    meters: (meters ?? "").split("\n").filter(Boolean).map(parseMeter),
    expiresAtMs: Number(exp),
    state: (state ?? "open") as LeaseState,
    usage: usage ? (JSON.parse(usage) as LeaseUsage) : undefined,
  };
}

function parseMeter(line: string): LeaseMeter {
  const [key, unit, amount, exp] = line.split("\t");
  return { key: key!, unit: unit as LeaseMeter["unit"], amount: Number(amount), expiresAtMs: Number(exp) };
}

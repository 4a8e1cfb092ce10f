import { Cluster, Redis } from "ioredis";
import { CounterStoreUnavailableError, settledAmount } from "./counter-store.js";
/*
 * Key layout (prefix "adm", tenant "acme"). Every key of a tenant carries the hash tag
 * {acme}, so each tenant script touches one slot and runs unchanged on Redis Cluster (where
 * a batch of them, see RedisCounterStore.run, holds one tenant's operations):
 *   adm:{acme}:m:<meter key>     meter value (integer string), PEXPIREAT its window's end
 *   adm:{acme}:lease:<lease id>  hash: state (open | settled | expired), exp, rid (the
 *                                reservation id), req (the Admit's request id), meters
 *                                (binary records, below) and, once settled, usage (a JSON
 *                                array, see encodeUsage); deleted once its ledger row is
 *                                recorded: the ledger answers a repeated settle from then on
 *   adm:{acme}:req:<request id>  lease id of an Admit's request id (idempotent retries),
 *                                deleted with its lease
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
 * Meter records. A lease's meters are one binary string written by this process (see
 * encodeMeters), one record per meter, read in Lua by struct.unpack('>c1Bc0Bc0Hc0'):
 *   unit      1 byte: r (requests), t (tokens), c (cost) or n (concurrency)
 *   amount    1 byte length, then the amount reserved in decimal
 *   expiry    1 byte length, then expiresAtMs of the meter's key in decimal (0: never)
 *   key       2 bytes length (big-endian), then the meter key (UTF-8, any bytes)
 * e.g. "t", 3, "900", 13, "1767225720000", 0, 41, "TOKENS|MINUTE|*|TENANT|acme|1767225600000".
 * Reserve gets them as one argument, with the limits as another (a big-endian float64 per
 * meter, +Infinity for a meter that does not enforce), and stores the records as they
 * came: the meters cross the wire once, one struct.unpack reads a record in Lua (settle,
 * expiry), and neither side encodes or decodes JSON for them. Numbers stay decimal
 * strings where Lua only passes them on (to INCRBY, SET PXAT, ZADD): a Lua number given to
 * redis.call costs a round of %.17g formatting and parsing.
 *
 * Numbers: Lua numbers are doubles, exact to 2^53 (amounts and instants are checked to be
 * safe integers). Decimal strings are read with tonumber; INCRBY does the adding; a number
 * computed in Lua (a settle's delta, a due score) is handed to redis.call as a number,
 * which Redis formats with %.17g, exact for every integer below 2^53; values come back as
 * integer replies. Lua never turns a number into a string itself (tostring and .. use
 * %.14g and would round), and cjson is not used (its encoder rounds to 14 digits): meters
 * are exact far beyond 2^32.
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
 * Cost. Each operation is one script doing as few redis.call as it can: the reads a
 * script starts with (generation, due-hint, the meters) are one MGET, a lease is written
 * with one HSET, and a settle reads it with one HMGET. Replies carry a lease as its stored
 * fields; this process decodes its meters only if someone reads them. The hot operations
 * (reserve, settle, markRecorded) that concurrent requests issue within one tick go to
 * Redis as one command running them in turn (see RedisCounterStore.run), and on a single
 * Redis everything sent within a tick leaves in one write (coalesceWrites).
 *
 * Requires `maxmemory-policy noeviction`: an evicted meter undercounts, an evicted
 * generation key makes a rebuild add the ledger to intact counters.
 */
/** The layout of a meter record for Lua's struct.unpack (see "Meter records" above). */
const recordLayout = ">c1Bc0Bc0Hc0";
/**
 * Lua helpers of the tenant scripts. They are made (as closures) once per script call, so
 * a script takes only those it uses, and they take the tenant's key prefix `p` and KEYS as
 * arguments, so that a batch (see batchLua) makes them once for all its operations.
 */
const helpers = {
    serverNow: `
local function server_now()
  local t = call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`,
    add: `
-- Adds \`amount\` (a number) to a meter. Its expiry (\`exp\`, decimal; '0': never) is set when
-- the key is created (the value is then the amount), as in memory: later additions to the
-- same window carry the same expiry.
local function add(p, key, amount, exp)
  if amount == 0 then return end
  local mk = p .. 'm:' .. key
  if call('INCRBY', mk, amount) == amount and exp ~= '0' then call('PEXPIREAT', mk, exp) end
end
`,
    eachMeter: `
-- Calls fn(unit, amount, exp, key) for each of a lease's meter records (amount, exp: decimal).
local function each_meter(records, fn)
  local pos, size = 1, #records
  while pos <= size do
    local unit, amount, exp, key
    unit, amount, exp, key, pos = struct.unpack('${recordLayout}', records, pos)
    fn(unit, amount, exp, key)
  end
end
`,
    pushLease: `
-- Appends a lease as replies carry it (see leaseAt): id, state, rid, exp, meters, usage.
local function push_lease(p, out, id)
  local h = call('HMGET', p .. 'lease:' .. id, 'state', 'rid', 'exp', 'meters', 'usage')
  out[#out + 1] = id
  for i = 1, 5 do out[#out + 1] = h[i] or '' end
  return out
end
`,
    track: `
-- Puts a lease on the tenant's due zset (KEYS[1]) at \`score\`; \`hint\` is :due-hint (KEYS[2])
-- as read at the start of the script. Returns the score to publish in the index (a
-- number), or ''.
local function track(KEYS, id, score, hint)
  call('ZADD', KEYS[1], score, id)
  if hint and tonumber(hint) <= tonumber(score) then return '' end
  call('SET', KEYS[2], score)
  return tonumber(score)
end
`,
};
/** The Lua of a tenant script run on its own. */
function tenantLua(script) {
    return `local call = redis.call\n${script.uses.map((h) => helpers[h]).join("")}local p = ARGV[1]\n${script.body}`;
}
/**
 * KEYS: due, hint. ARGV: prefix, leaseId, requestId, requestIdExpiresAtMs, leaseExpiresAtMs,
 * reservationId, meter records, limits. One MGET reads the generation, the hint, the request
 * id's lease and every meter. A lease id that already exists is a duplicate too, so a
 * retried call cannot reserve twice.
 * Reply: status, publish, then used values (reserved), index + used (blocked) or a lease
 * (duplicate); just 'cold' while the tenant has no generation.
 * Values are integer replies (a Lua number becomes a 64-bit integer: exact, as it is below 2^53).
 */
const reserve = {
    uses: ["pushLease", "track"],
    body: `
local id, req, records, limits = ARGV[2], ARGV[3], ARGV[7], ARGV[8]
-- Without a request id, the third key read (':req:') is one that is never written.
local keys = {p .. 'gen', KEYS[2], p .. 'req:' .. req}
local amounts, exps = {}, {}
local count, pos = 0, 1
while pos <= #records do
  count = count + 1
  local unit, key
  unit, amounts[count], exps[count], key, pos = struct.unpack('${recordLayout}', records, pos)
  keys[3 + count] = p .. 'm:' .. key
end
local got = call('MGET', unpack(keys))
if not got[1] then return {'cold'} end
local seen = req ~= '' and got[3]
if seen and seen ~= id and call('EXISTS', p .. 'lease:' .. seen) == 1 then return push_lease(p, {'duplicate', ''}, seen) end
if call('EXISTS', p .. 'lease:' .. id) == 1 then return push_lease(p, {'duplicate', ''}, id) end
local used = {}
for i = 1, count do used[i] = tonumber(got[3 + i] or '0') end
for i = 1, count do
  if used[i] + tonumber(amounts[i]) > struct.unpack('>d', limits, 8 * i - 7) then return {'blocked', '', i - 1, unpack(used)} end
end
local out = {'reserved', ''}
for i = 1, count do
  if not got[3 + i] and exps[i] ~= '0' then
    -- A new window: created with its expiry in one write.
    call('SET', keys[3 + i], amounts[i], 'PXAT', exps[i])
    out[2 + i] = tonumber(amounts[i])
  else
    out[2 + i] = call('INCRBY', keys[3 + i], amounts[i])
  end
end
call('HSET', p .. 'lease:' .. id, 'state', 'open', 'exp', ARGV[5], 'rid', ARGV[6], 'req', req, 'meters', records)
out[2] = track(KEYS, id, ARGV[5], got[2])
if req ~= '' then call('SET', p .. 'req:' .. req, id, 'PXAT', ARGV[4]) end
return out
`,
};
/**
 * KEYS: due, hint. ARGV: prefix, leaseId, caller's nowMs, graceMs, encoded usage, then the
 * settled amount of a requests, tokens and cost meter. Reply: status, publish, generation,
 * then the lease's rid, exp and meters (settled) or the lease (already).
 */
const settle = {
    uses: ["serverNow", "add", "eachMeter", "pushLease", "track"],
    body: `
local got = call('MGET', p .. 'gen', KEYS[2])
local gen = got[1]
if not gen then return {'cold'} end
local id = ARGV[2]
local lk = p .. 'lease:' .. id
local h = call('HMGET', lk, 'state', 'rid', 'exp', 'meters')
if not h[1] then return {'missing', '', gen} end
if h[1] ~= 'open' then return push_lease(p, {'already', '', gen}, id) end
local settled = {r = tonumber(ARGV[6]), t = tonumber(ARGV[7]), c = tonumber(ARGV[8]), n = 0}
each_meter(h[4], function(unit, amount, exp, key) add(p, key, settled[unit] - tonumber(amount), exp) end)
call('HSET', lk, 'state', 'settled', 'usage', ARGV[5])
-- Due for the sweeper graceMs after the settle: by the earlier of both clocks, so a
-- replica running ahead cannot push it out; one running behind only makes it earlier.
local publish = track(KEYS, id, math.min(server_now(), tonumber(ARGV[3])) + tonumber(ARGV[4]), got[2])
return {'settled', publish, gen, h[2], h[3], h[4]}
`,
};
/**
 * KEYS: due, hint (unused). ARGV: prefix, leaseId. The ledger row of a settled or expired
 * lease is durable: the lease and its request id go (a repeated settle is answered from
 * the ledger, a repeated Admit is a new request). Reply: the tenant's generation ('' while cold).
 */
const recorded = {
    uses: [],
    body: `
local id = ARGV[2]
local lk = p .. 'lease:' .. id
local h = call('HMGET', lk, 'state', 'req')
if h[1] and h[1] ~= 'open' then
  call('ZREM', KEYS[1], id)
  call('DEL', lk)
  if h[2] and h[2] ~= '' and call('GET', p .. 'req:' .. h[2]) == id then call('DEL', p .. 'req:' .. h[2]) end
end
return call('GET', p .. 'gen') or ''
`,
};
/** KEYS: due, hint. ARGV: prefix, leaseId, expiresAtMs. Reply: 'renewed', publish, rid, meters; or 'missing'. */
const renew = {
    uses: ["track"],
    body: `
local id = ARGV[2]
local lk = p .. 'lease:' .. id
local h = call('HMGET', lk, 'state', 'rid', 'meters')
if h[1] ~= 'open' then return {'missing'} end
call('HSET', lk, 'exp', ARGV[3])
return {'renewed', track(KEYS, id, ARGV[3], call('GET', KEYS[2])), h[2], h[3]}
`,
};
/**
 * KEYS: due, hint. ARGV: prefix, graceMs, limit. Claims this tenant's due leases by the
 * server's clock and re-scores them now + graceMs. Reply: the tenant's next due score
 * ('' when nothing is left), its generation, then 6 fields per claimed lease.
 */
const claim = {
    uses: ["serverNow", "add", "eachMeter", "pushLease"],
    body: `
local now = server_now()
local out = {'', call('GET', p .. 'gen') or ''}
for _, id in ipairs(call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local lk = p .. 'lease:' .. id
  local h = call('HMGET', lk, 'state', 'meters')
  if not h[1] then
    call('ZREM', KEYS[1], id)
  else
    if h[1] == 'open' then
      -- Expired: the estimate stands as the charge; only concurrency is released.
      each_meter(h[2], function(unit, amount, exp, key) if unit == 'n' then add(p, key, -tonumber(amount), '0') end end)
      call('HSET', lk, 'state', 'expired')
    end
    call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    push_lease(p, out, id)
  end
end
local first = call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  out[1] = first[2]
  call('SET', KEYS[2], first[2])
else
  call('DEL', KEYS[2])
end
return out
`,
};
/**
 * KEYS: due (routing only). ARGV: prefix, mode, generation, count, then per charge: key,
 * amount, expiresAtMs. Mode 'charge' adds only while the tenant is in that generation;
 * 'rebuild' adds only while it is cold, and makes it that generation. Reply: 1 if applied.
 */
const charge = {
    uses: ["add"],
    body: `
local gen = call('GET', p .. 'gen')
if ARGV[2] == 'rebuild' then
  if gen then return 0 end
  call('SET', p .. 'gen', ARGV[3])
elseif gen ~= ARGV[3] then
  return 0
end
for i = 0, tonumber(ARGV[4]) - 1 do
  local b = 5 + i * 3
  add(p, ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2])
end
return 1
`,
};
/** The tenant scripts a batch can carry (see RedisCounterStore.run), by name. */
const batchable = { reserve, settle, recorded };
/**
 * KEYS: a due key (routing only). ARGV: per operation: its name (a key of batchable), its
 * argument count, its arguments (the first is its tenant's prefix, which names its due and
 * due-hint keys). Runs each as its own script would, in order; reply: one reply per
 * operation, an error reply for one that failed (its writes so far stay, as they would
 * in a script of its own).
 */
const batchLua = `local call = redis.call
${Object.values(helpers).join("")}
local ops = {
${Object.entries(batchable).map(([name, s]) => `${name} = function(KEYS, ARGV)\nlocal p = ARGV[1]\n${s.body}\nend,`).join("\n")}
}
local out, i = {}, 1
while i <= #ARGV do
  local op, n = ARGV[i], tonumber(ARGV[i + 1])
  local args = {unpack(ARGV, i + 2, i + 1 + n)}
  local ok, reply = pcall(ops[op], {args[1] .. 'due', args[1] .. 'due-hint'}, args)
  out[#out + 1] = ok and reply or {err = reply}
  i = i + 2 + n
end
return out
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
const scripts = [
    ["admReserve", 2, tenantLua(reserve)],
    ["admSettle", 2, tenantLua(settle)],
    ["admRecorded", 2, tenantLua(recorded)],
    ["admBatch", 1, batchLua],
    ["admRenew", 2, tenantLua(renew)],
    ["admClaim", 2, tenantLua(claim)],
    ["admCharge", 1, tenantLua(charge)],
    ["admPublish", 3, publishScript],
    ["admDueTenants", 2, dueTenantsScript],
    ["admAfterClaim", 2, afterClaimScript],
];
/**
 * Options that make commands fail fast while Redis is unreachable (no offline queue, a
 * command timeout, no resending of commands cut off by a broken connection — a resent
 * reserve would reserve twice) and reconnect by themselves with a capped backoff.
 */
export const failFastRedisOptions = {
    enableOfflineQueue: false,
    // Measured on Admit over Session (64 in flight, 8 meters): autopipelining cost ~15 µs of
    // control-plane CPU per decision in its batching machinery and lowered throughput. The store
    // batches its hot operations per turn of the event loop itself and writes a tick's commands
    // at once (see RedisCounterStore.run and coalesceWrites).
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
export const failFastClusterOptions = {
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
/** Operations in one call of the batch script, at most (bounds how long one call holds Redis). */
const maxBatch = 100;
/** Tenants one claimDue call looks at, at most. */
const dueTenantsPerClaim = 1_000;
/**
 * Counters and leases in Redis or Redis Cluster, shared by every control-plane
 * replica. Each operation is one Lua script over one tenant's slot (plus, rarely,
 * a publication in the due index; see the notes at the top of this file); the hot
 * ones of a tick share a command (see run).
 */
export class RedisCounterStore {
    client;
    prefix;
    logger;
    requestIdTtlMs;
    dueRescanMs;
    localClock;
    clockTimer;
    unpublished = new Map();
    lastRescanCheckMs = Number.NEGATIVE_INFINITY;
    offsetMs = 0;
    reachable = true;
    corked = false;
    queue = [];
    constructor(options) {
        this.client = options.client;
        this.prefix = options.keyPrefix;
        this.logger = options.logger;
        this.requestIdTtlMs = options.requestIdTtlMs ?? 600_000;
        this.dueRescanMs = options.dueRescanMs ?? 60_000;
        this.localClock = options.localClock ?? Date.now;
        for (const [name, numberOfKeys, lua] of scripts)
            this.client.defineCommand(name, { numberOfKeys, lua });
        this.client.on("error", (err) => this.unreachable(err));
        this.client.on("node error", (err) => this.unreachable(err));
        this.client.on("ready", () => {
            if (!this.reachable)
                this.logger?.info("redis reachable again");
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
    static async connect(options) {
        const client = options.clusterNodes?.length
            ? new Cluster(options.clusterNodes.map(parseHostPort), failFastClusterOptions)
            : new Redis(options.url ?? "redis://127.0.0.1:6379", failFastRedisOptions);
        const store = new RedisCounterStore({
            client, keyPrefix: options.keyPrefix, logger: options.logger, dueRescanMs: options.dueRescanMs, localClock: options.localClock,
        });
        await new Promise((resolve) => {
            if (client.status === "ready")
                return resolve();
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
    now = () => this.localClock() + this.offsetMs;
    /** Measures the offset between this process's clock and the Redis server's TIME. */
    async syncClock() {
        const before = this.localClock();
        const [seconds, micros] = await this.call(() => this.client.time());
        const after = this.localClock();
        const serverMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
        this.offsetMs = Math.round(serverMs - (before + after) / 2);
    }
    async reserve(r) {
        const prefix = this.tenantPrefix(r.tenant);
        const [records, limits] = encodeMeters(r.meters, r.amounts);
        const args = [
            prefix, r.leaseId, r.requestId, String(instant(r.leaseExpiresAtMs) + this.requestIdTtlMs), String(r.leaseExpiresAtMs), r.reservationId, records, limits,
        ];
        const reply = (await this.run("reserve", prefix, args));
        switch (text(reply[0])) {
            case "reserved":
                if (typeof reply[1] === "number")
                    await this.publish(r.tenant, reply[1]);
                return { status: "reserved", used: reply.slice(2) };
            case "blocked":
                return { status: "blocked", index: reply[2], used: reply.slice(3) };
            case "duplicate":
                return { status: "duplicate", lease: leaseAt(r.tenant, reply, 2) };
            default:
                return { status: "cold" };
        }
    }
    async settle(r) {
        const prefix = this.tenantPrefix(r.tenant);
        const u = r.usage;
        const args = [
            prefix, r.leaseId, String(r.nowMs), String(r.graceMs), encodeUsage(u),
            String(integer(settledAmount("requests", u), "requests")), String(integer(settledAmount("tokens", u), "tokens")), String(integer(settledAmount("cost", u), "cost")),
        ];
        const reply = (await this.run("settle", prefix, args));
        const status = text(reply[0]);
        if (status === "cold")
            return { status: "cold" };
        const generation = text(reply[2]);
        if (status === "missing")
            return { status: "missing", generation };
        if (typeof reply[1] === "number")
            await this.publish(r.tenant, reply[1]);
        if (status === "already")
            return { status: "already", lease: leaseAt(r.tenant, reply, 3), generation };
        return { status: "settled", lease: leaseOf(r.tenant, r.leaseId, "settled", text(reply[3]), text(reply[4]), reply[5], u), generation };
    }
    async renew(tenant, leaseId, expiresAtMs) {
        const prefix = this.tenantPrefix(tenant);
        const reply = await this.call(() => this.client.admRenewBuffer(`${prefix}due`, `${prefix}due-hint`, [prefix, leaseId, String(instant(expiresAtMs))]));
        if (text(reply[0]) === "missing")
            return undefined;
        if (typeof reply[1] === "number")
            await this.publish(tenant, reply[1]);
        return leaseOf(tenant, leaseId, "open", text(reply[2]), expiresAtMs, reply[3], undefined);
    }
    async markRecorded(tenant, leaseId) {
        const prefix = this.tenantPrefix(tenant);
        return text((await this.run("recorded", prefix, [prefix, leaseId]))) || undefined;
    }
    async claimDue(nowMs, graceMs, limit) {
        await this.republish();
        await this.rescanIfDue();
        const listed = await this.call(() => this.client.admDueTenants(this.indexKey, this.genKey, String(nowMs), String(dueTenantsPerClaim)));
        const claimed = [];
        const after = [];
        for (let i = 0; i + 1 < listed.length && claimed.length < limit; i += 2) {
            const tenant = listed[i];
            const prefix = this.tenantPrefix(tenant);
            const reply = await this.call(() => this.client.admClaimBuffer(`${prefix}due`, `${prefix}due-hint`, [prefix, String(graceMs), String(limit - claimed.length)]));
            const generation = text(reply[1]) || undefined;
            for (let j = 2; j + 5 < reply.length; j += 6)
                claimed.push(leaseAt(tenant, reply, j, generation));
            after.push(tenant, listed[i + 1], text(reply[0]));
        }
        if (after.length > 0)
            await this.call(() => this.client.admAfterClaim(this.indexKey, this.genKey, ...after));
        return claimed;
    }
    charge(tenant, charges, generation) {
        return this.chargeIn("charge", tenant, generation, charges);
    }
    rebuild(tenant, generation, charges) {
        return this.chargeIn("rebuild", tenant, generation, charges);
    }
    async generation(tenant) {
        return (await this.call(() => this.client.get(`${this.tenantPrefix(tenant)}gen`))) ?? undefined;
    }
    async chargeIn(mode, tenant, generation, charges) {
        if (generation === "")
            throw new TypeError("generation must not be empty");
        const prefix = this.tenantPrefix(tenant);
        const args = [prefix, mode, generation, String(charges.length)];
        for (const c of charges)
            args.push(c.key, String(integer(c.amount, "amount")), String(instant(c.expiresAtMs)));
        return (await this.call(() => this.client.admCharge(`${prefix}due`, args))) === 1;
    }
    async read(tenant, keys) {
        if (keys.length === 0)
            return [];
        const prefix = this.tenantPrefix(tenant);
        const values = await this.call(() => this.client.mget(keys.map((k) => `${prefix}m:${k}`)));
        return values.map((v) => (v === null ? 0 : Number(v)));
    }
    async reset(tenant, key) {
        const previous = await this.call(() => this.client.getdel(`${this.tenantPrefix(tenant)}m:${key}`));
        return previous === null ? 0 : Number(previous);
    }
    async ping() {
        await this.call(() => this.client.ping());
    }
    async close() {
        clearInterval(this.clockTimer);
        await this.client.quit().catch(() => this.client.disconnect());
    }
    tenantPrefix(tenant) {
        // An empty hash tag "{}" would not be a tag: the tenant's keys would spread over slots.
        if (tenant === "")
            throw new TypeError("tenant id must not be empty");
        return `${this.prefix}:{${tenant}}:`;
    }
    get indexKey() {
        return `${this.prefix}:{~index}:due-tenants`;
    }
    get genKey() {
        return `${this.prefix}:{~index}:due-gen`;
    }
    get seqKey() {
        return `${this.prefix}:{~index}:due-seq`;
    }
    /**
     * Publishes a tenant's lowered due minimum (a script's "publish" reply, when it is a
     * number) in the index. The tenant script has already happened, so a failure must not
     * fail the caller: it is kept and retried.
     */
    async publish(tenant, score) {
        try {
            await this.call(() => this.client.admPublish(this.indexKey, this.genKey, this.seqKey, tenant, String(score)));
        }
        catch (err) {
            if (!(err instanceof CounterStoreUnavailableError))
                throw err;
            const known = this.unpublished.get(tenant);
            if (known !== undefined || this.unpublished.size < maxUnpublished)
                this.unpublished.set(tenant, Math.min(known ?? Infinity, score));
        }
    }
    async republish() {
        if (this.unpublished.size === 0)
            return;
        const pending = [...this.unpublished];
        await this.call(() => this.client.admPublish(this.indexKey, this.genKey, this.seqKey, ...pending.flatMap(([tenant, score]) => [tenant, String(score)])));
        // Publications that failed meanwhile stay for the next round.
        for (const [tenant, score] of pending)
            if (this.unpublished.get(tenant) === score)
                this.unpublished.delete(tenant);
    }
    /**
     * The safety net (see the top of this file): once per `dueRescanMs`, one replica
     * (whichever takes the lock) SCANs every master for tenants' :due zsets and publishes
     * each one's minimum. Publication only lowers index scores, so this never hides work.
     */
    async rescanIfDue() {
        const localMs = this.localClock();
        if (this.dueRescanMs <= 0 || localMs - this.lastRescanCheckMs < this.dueRescanMs)
            return;
        const lock = await this.call(() => this.client.set(`${this.prefix}:{~index}:rescan`, "1", "PX", this.dueRescanMs, "NX"));
        this.lastRescanCheckMs = localMs;
        if (lock !== "OK")
            return;
        const head = `${this.prefix}:{`;
        const tail = "}:due";
        const nodes = this.client instanceof Cluster ? this.client.nodes("master") : [this.client];
        let found = 0;
        for (const node of nodes) {
            let cursor = "0";
            do {
                const [next, keys] = await this.call(() => node.scan(cursor, "MATCH", `${escapeGlob(head)}*${escapeGlob(tail)}`, "COUNT", 1000, "TYPE", "zset"));
                cursor = next;
                const firsts = await this.call(() => Promise.all(keys.map((key) => this.client.zrange(key, "0", "0", "WITHSCORES"))));
                const args = [];
                keys.forEach((key, i) => {
                    const score = firsts[i][1];
                    if (score !== undefined)
                        args.push(key.slice(head.length, key.length - tail.length), score);
                });
                if (args.length > 0)
                    await this.call(() => this.client.admPublish(this.indexKey, this.genKey, this.seqKey, ...args));
                found += args.length / 2;
            } while (cursor !== "0");
        }
        this.logger?.debug({ tenants: found }, "due-lease safety-net scan done");
    }
    unreachable(err) {
        if (this.reachable)
            this.logger?.warn({ err: err.message }, "redis unreachable; counter calls fail fast until it is back");
        this.reachable = false;
    }
    /**
     * On a single Redis, the commands this process sends within one tick leave in one write
     * (the socket is corked until the tick ends) instead of one syscall each: under
     * concurrent traffic most of a command's cost here was its own write. (A Cluster client
     * batches per node itself: autopipelining, see failFastClusterOptions.)
     */
    coalesceWrites() {
        if (this.corked || !(this.client instanceof Redis))
            return;
        const stream = this.client.stream;
        if (!stream?.writable)
            return;
        stream.cork();
        this.corked = true;
        process.nextTick(() => {
            this.corked = false;
            stream.uncork();
        });
    }
    /**
     * Runs a tenant script once the I/O of this turn of the event loop is handled, with the
     * others queued meanwhile: the hot operations (reserve, settle, markRecorded) of
     * concurrent requests share one command and one script call instead of one each (see
     * flush). Not at the end of the tick: grpc-js hands a stream's messages over one tick
     * each, so a tick holds one decision (measured: 1.0 operation per flush at concurrency
     * 64, against ~7 per turn), and each one was a command and a socket write of its own.
     */
    run(op, prefix, args) {
        return new Promise((resolve, reject) => {
            if (this.queue.push({ op, prefix, args, resolve, reject }) === 1)
                setImmediate(() => this.flush());
        });
    }
    /**
     * Sends the queued operations: a lone one as its own script, several as one call of the
     * batch script (at most maxBatch each). On a Cluster a script must stay in one slot, so a
     * batch holds one tenant's operations; on a single Redis it holds them all.
     */
    flush() {
        const queue = this.queue;
        this.queue = [];
        let groups = [queue];
        if (this.client instanceof Cluster) {
            const byTenant = new Map();
            for (const q of queue) {
                const group = byTenant.get(q.prefix);
                if (group)
                    group.push(q);
                else
                    byTenant.set(q.prefix, [q]);
            }
            groups = byTenant.values();
        }
        for (const group of groups) {
            for (let i = 0; i < group.length; i += maxBatch)
                this.send(group.slice(i, i + maxBatch));
        }
    }
    send(batch) {
        if (batch.length === 1) {
            const q = batch[0];
            this.call(() => this.alone(q)).then(q.resolve, q.reject);
            return;
        }
        const args = [];
        for (const q of batch)
            args.push(q.op, String(q.args.length), ...q.args);
        this.call(() => this.client.admBatchBuffer(`${batch[0].prefix}due`, args)).then((replies) => batch.forEach((q, i) => {
            const reply = replies[i];
            if (reply instanceof Error)
                q.reject(failure(reply));
            else
                q.resolve(reply);
        }), (err) => batch.forEach((q) => q.reject(err)));
    }
    /** A queued operation as its own script. */
    alone({ op, prefix, args }) {
        const [due, hint] = [`${prefix}due`, `${prefix}due-hint`];
        switch (op) {
            case "reserve":
                return this.client.admReserveBuffer(due, hint, args);
            case "settle":
                return this.client.admSettleBuffer(due, hint, args);
            case "recorded":
                return this.client.admRecordedBuffer(due, hint, args);
        }
    }
    /** Connection trouble becomes CounterStoreUnavailableError; script bugs stay errors. */
    async call(fn) {
        this.coalesceWrites();
        try {
            return await fn();
        }
        catch (err) {
            throw failure(err);
        }
    }
}
/** Connection trouble (and replies that mean the backend cannot serve now) as CounterStoreUnavailableError; anything else as it is. */
function failure(err) {
    if (err instanceof TypeError || err instanceof RangeError)
        return err;
    const message = err instanceof Error ? err.message : String(err);
    const isReply = err?.name === "ReplyError";
    if (isReply && !transientReply.test(message))
        return err;
    return new CounterStoreUnavailableError(`redis: ${message}`, { cause: err });
}
/** A meter record's unit byte (see "Meter records" at the top of this file). */
const unitCodes = { requests: 0x72 /* r */, tokens: 0x74 /* t */, cost: 0x63 /* c */, concurrency: 0x6e /* n */ };
const unitsByCode = Object.fromEntries(Object.entries(unitCodes).map(([unit, code]) => [code, unit]));
const stateNames = { open: "open", settled: "settled", expired: "expired" };
/** Reads a lease from a reply: id, then its fields state, rid, exp, meters, usage (see push_lease), at `at`. */
function leaseAt(tenant, reply, at, generation) {
    const usage = text(reply[at + 5]);
    return leaseOf(tenant, text(reply[at]), stateNames[text(reply[at + 1])] ?? "open", text(reply[at + 2]), text(reply[at + 3]), reply[at + 4], usage ? decodeUsage(usage) : undefined, generation);
}
/** A lease from its stored fields; its meter records are decoded only if `meters` is read. */
function leaseOf(tenant, leaseId, state, reservationId, expiresAtMs, records, usage, generation) {
    let meters;
    return {
        tenant,
        leaseId,
        reservationId,
        get meters() {
            return (meters ??= decodeMeters(records));
        },
        expiresAtMs: Number(expiresAtMs),
        state,
        usage,
        generation,
    };
}
/** A reply's bulk string as text. */
function text(value) {
    return value === undefined ? "" : value.toString();
}
/**
 * The meter records and the limits of a reserve (see "Meter records" at the top of this
 * file). A request's meters are the same objects request after request (bound once per
 * subject and window), so what does not depend on the amounts (unit, expiry, key; the
 * limits) is encoded once per meter list and only the amounts per reserve.
 */
function encodeMeters(meters, amounts) {
    let fixed = encodedMeters.get(meters);
    if (!fixed)
        encodedMeters.set(meters, (fixed = encodeFixed(meters)));
    const amountText = {
        requests: "1", concurrency: "1", tokens: String(integer(amounts.tokens, "amount")), cost: String(integer(amounts.costMicros, "amount")),
    };
    let size = 0;
    for (let i = 0; i < meters.length; i++)
        size += 2 + amountText[meters[i].unit].length + fixed.tails[i].length;
    const records = Buffer.allocUnsafe(size);
    let at = 0;
    for (let i = 0; i < meters.length; i++) {
        const unit = meters[i].unit;
        records[at++] = unitCodes[unit];
        at = writeShort(records, at, amountText[unit]);
        at += fixed.tails[i].copy(records, at);
    }
    return [records, fixed.limits];
}
const encodedMeters = new WeakMap();
/** Per meter its record after the amount (expiry, key length, key), and the limits. */
function encodeFixed(meters) {
    const limits = Buffer.allocUnsafe(8 * meters.length);
    const tails = meters.map((m, i) => {
        if (Number.isNaN(m.limit))
            throw new RangeError(`limit of meter ${m.key} is not a number`);
        limits.writeDoubleBE(m.enforce ? m.limit : Infinity, 8 * i);
        const expiry = String(instant(m.expiresAtMs));
        const key = Buffer.from(m.key, "utf8");
        if (key.length > 0xffff)
            throw new RangeError(`meter key of ${key.length} bytes is longer than 65535`);
        const tail = Buffer.allocUnsafe(1 + expiry.length + 2 + key.length);
        const at = writeShort(tail, 0, expiry);
        tail.writeUInt16BE(key.length, at);
        key.copy(tail, at + 2);
        return tail;
    });
    return { tails, limits };
}
/** Writes a 1-byte length and an ASCII string (a decimal) at `at`; returns where it ends. */
function writeShort(buffer, at, ascii) {
    buffer[at] = ascii.length;
    return at + 1 + buffer.write(ascii, at + 1, "latin1");
}
function decodeMeters(records) {
    const meters = [];
    for (let at = 0; at < records.length;) {
        const unit = unitsByCode[records[at]];
        const amountEnd = at + 2 + records[at + 1];
        const expiryEnd = amountEnd + 1 + records[amountEnd];
        const keyEnd = expiryEnd + 2 + records.readUInt16BE(expiryEnd);
        meters.push({
            key: records.toString("utf8", expiryEnd + 2, keyEnd),
            unit,
            amount: Number(records.toString("latin1", at + 2, amountEnd)),
            expiresAtMs: Number(records.toString("latin1", amountEnd + 1, expiryEnd)),
        });
        at = keyEnd;
    }
    return meters;
}
/**
 * A settled lease's usage as stored: a JSON array in a fixed order, a third of the size of
 * the object (it stays with the lease until its ledger row is recorded). Lua never reads it.
 */
function encodeUsage(u) {
    return JSON.stringify([u.inputTokens, u.outputTokens, u.costMicros, u.outcome, u.estimated, u.provider, u.model, u.latencyMs, u.settledAtMs]);
}
function decodeUsage(stored) {
    const [inputTokens, outputTokens, costMicros, outcome, estimated, provider, model, latencyMs, settledAtMs] = JSON.parse(stored);
    return { inputTokens, outputTokens, costMicros, outcome, estimated, provider, model, latencyMs, settledAtMs };
}
function integer(value, what) {
    if (!Number.isSafeInteger(value))
        throw new RangeError(`${what} ${value} is not a safe integer`);
    return value;
}
/** An instant in ms since the epoch (0: never, for meters): a safe, non-negative integer. */
function instant(ms) {
    if (!Number.isSafeInteger(ms) || ms < 0)
        throw new RangeError(`instant ${ms} is not a safe, non-negative integer`);
    return ms;
}
function parseHostPort(hostPort) {
    const at = hostPort.lastIndexOf(":");
    return at < 0 ? { host: hostPort, port: 6379 } : { host: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)) };
}
function escapeGlob(s) {
    return s.replace(/[*?[\]\\]/g, "\\$&");
}
//# sourceMappingURL=redis-counter-store.js.map
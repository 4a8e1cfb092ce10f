import { createHash } from "node:crypto";
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from "ioredis";
import type { Logger } from "pino";
import type {
  CounterStore, LeaseMeter, LeaseRecord, LeaseState, LeaseUsage, MeterCharge, MeterOp, MeterUnit, ReservedAmounts, ReserveRequest, ReserveResult,
  SettleLeaseRequest, SettleLeaseResult,
} from "./counter-store.js";
import { CounterStoreMisconfiguredError, CounterStoreUnavailableError, settledAmount } from "./counter-store.js";
import { checkRedisConfiguration, refusalOf } from "./redis-configuration.js";
import { backlogMicros, bucketGranularityMs, bucketKeySlackMs, isBucketKey } from "./token-bucket.js";

/*
 * Key layout (prefix "adm", tenant "acme"). Every key of a tenant carries the hash tag
 * {acme}, so each tenant script touches one slot and runs unchanged on Redis Cluster (where
 * a batch of them, see RedisCounterStore.run, holds one tenant's operations):
 *   adm:{acme}:m:<meter key>     meter value (integer string), PEXPIREAT its window's end; a
 *                                token bucket's (key ending "|bucket") is its TAT (ms, a float
 *                                string; see token-bucket.ts), PEXPIREAT once it is full and its
 *                                lease can no longer settle (absent: full)
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
 *   unit      1 byte: r (requests), t (tokens), c (cost) or n (concurrency); R and T for
 *             a token bucket of requests or tokens
 *   amount    1 byte length, then the amount reserved in decimal
 *   expiry    1 byte length, then expiresAtMs of the meter's key in decimal (0: never); for
 *             a bucket its emission interval T (ms per unit, a JavaScript number's text)
 *   key       2 bytes length (big-endian), then the meter key (UTF-8, any bytes)
 * e.g. "t", 3, "900", 13, "1767225720000", 0, 41, "TOKENS|MINUTE|*|TENANT|acme|1767225600000".
 * Reserve gets them as one argument, with the limits as another (a big-endian float64 per
 * meter, +Infinity for a meter that does not enforce; a bucket's tolerance tau), and stores
 * the records as they came: the meters cross the wire once, one struct.unpack reads a
 * record in Lua (settle, expiry), and neither side encodes or decodes JSON for them. Numbers stay decimal
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
 * Token buckets take their time from TIME (µs) inside the script, so replicas agree on
 * every refill; their TATs are floats, handed to SET and INCRBYFLOAT as Lua numbers (%.17g:
 * exact doubles, 0.1 µs resolution at today's instants). A test may fix that time instead
 * (RedisCounterStoreOptions.bucketClock): the scripts then take the instant it passes.
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
 * Declared keys. Every key a script reads or writes is passed in KEYS (as Redis requires;
 * Cluster, proxies and ACL key patterns rely on it): a script never makes a key name from
 * its arguments or from what it read. The fixed keys of a tenant (gen, due, due-hint) and
 * the lease's own key are known to any caller; what only the lease knows is declared by
 * the caller from memory and checked by the script before it writes anything:
 *   - a settle declares the lease's meter keys, which this process remembers from the
 *     reserve (LeaseKeys); the script compares them with the lease's records and, when
 *     they differ (the lease was reserved by another replica), answers with the records,
 *     and the settle is sent again with their keys: one call more, only then;
 *   - a markRecorded declares the key of the lease's request id, the same way;
 *   - a reserve whose request id already names another lease answers with that lease's
 *     id and is sent again with its key declared (a retried Admit: rare);
 *   - the sweeper reads a tenant's due lease ids, then their states and meters, then
 *     claims them with every lease key and concurrency meter declared (a lease that
 *     changed meanwhile is left for the next sweep).
 * In a batch (see batchLua) each operation's keys are its slice of KEYS. The meter
 * records stay as they are: they carry the amounts and expiries (and the keys, which a
 * settle compares against KEYS; one concatenation per meter, as building the names cost).
 *
 * Requires `maxmemory-policy noeviction`: an evicted meter undercounts, an evicted
 * generation key makes a rebuild add the ledger to intact counters. The store checks it
 * (see checkRedisConfiguration) at start (refusing to start), on every reconnect and
 * every 10 s (readiness fails while it is wrong).
 */

/** The layout of a meter record for Lua's struct.unpack (see "Meter records" above). */
const recordLayout = ">c1Bc0Bc0Hc0";

/**
 * Lua helpers of the tenant scripts. They are made (as closures) once per script call, so
 * a script takes only those it uses, and they take the keys they touch as arguments (never
 * a name they make), so that a batch (see batchLua) makes them once for all its operations.
 */
const helpers = {
  serverNow: `
local function server_now()
  local t = call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`,
  bucketNow: `
-- The token buckets' now in ms (a float, µs resolution): TIME, or the instant a test fixed ('' in production).
local function bucket_now(fixed)
  if fixed and fixed ~= '' then return tonumber(fixed) end
  local t = call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
`,
  moveBucket: `
-- Moves the TAT of the bucket at key \`mk\` by \`ms\` (a settle's refund or debt). An absent bucket
-- is full and stays so (see bucketKeyExpiresAtMs); debt keeps the key until it is full again.
local function move_bucket(mk, ms)
  if ms == 0 or call('EXISTS', mk) == 0 then return end
  local tat = tonumber(call('INCRBYFLOAT', mk, ms))
  if ms < 0 then return end
  local exp = math.ceil(tat) + ${bucketKeySlackMs}
  if exp > server_now() + call('PTTL', mk) then call('PEXPIREAT', mk, exp) end
end
`,
  add: `
-- Adds \`amount\` (a number) to the meter at key \`mk\`. Its expiry (\`exp\`, decimal; '0':
-- never) is set when the key is created (the value is then the amount), as in memory:
-- later additions to the same window carry the same expiry.
local function add(mk, amount, exp)
  if amount == 0 then return end
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
  declared: `
-- True when KEYS[from .. from + count - 1] are the keys (\`mp\`, the tenant's meter-key prefix,
-- then the record's key) of a lease's meter records, of those of unit \`only\` if given.
local function declared(KEYS, from, count, records, mp, only)
  local i, ok = from, true
  each_meter(records, function(unit, amount, exp, key)
    if only and unit ~= only then return end
    if KEYS[i] ~= mp .. key then ok = false end
    i = i + 1
  end)
  return ok and i == from + count
end
`,
  pushLease: `
-- Appends a lease (key \`lk\`) as replies carry it (see leaseAt): id, state, rid, exp, meters, usage, req.
local function push_lease(lk, out, id)
  local h = call('HMGET', lk, 'state', 'rid', 'exp', 'meters', 'usage', 'req')
  out[#out + 1] = id
  for i = 1, 6 do out[#out + 1] = h[i] or '' end
  return out
end
`,
  track: `
-- Puts a lease on the tenant's due zset (\`due\`) at \`score\`; \`hint\` is the value of :due-hint
-- (key \`hk\`) as read at the start of the script. Returns the score to publish in the index
-- (a number), or ''.
local function track(due, hk, id, score, hint)
  call('ZADD', due, score, id)
  if hint and tonumber(hint) <= tonumber(score) then return '' end
  call('SET', hk, score)
  return tonumber(score)
end
`,
};

/**
 * A tenant script: its body and the helpers it uses. A body touches only keys of KEYS
 * (see "Declared keys" at the top of this file); its layout is the one of `keysOf` below.
 */
interface TenantScript {
  readonly uses: ReadonlyArray<keyof typeof helpers>;
  readonly body: string;
}

/** The Lua of a tenant script run on its own. */
function tenantLua(script: TenantScript): string {
  return `local call = redis.call\n${script.uses.map((h) => helpers[h]).join("")}${script.body}`;
}

/**
 * KEYS: due, lease, seen lease, gen, hint, req, then the meters in record order. ARGV:
 * leaseId, requestId, requestIdExpiresAtMs, leaseExpiresAtMs, reservationId, meter records,
 * limits, the lease id the request id was seen with (whose key is the third, '' if none),
 * the buckets' fixed now ('' in production: TIME). A bucket meter (unit R or T) is one GCRA
 * step (see token-bucket.ts) in the same check-then-write as the counts; its value in the
 * reply is its backlog (µs until full).
 * One MGET reads the generation, the hint, the request id's lease and every meter. A lease
 * id that already exists is a duplicate too, so a retried call cannot reserve twice.
 * Reply: status, publish, then used values (reserved), index + used (blocked) or a lease
 * (duplicate); just 'cold' while the tenant has no generation; 'seen' and a lease id when
 * the request id names a lease other than the one declared third (call again with it).
 * Values are integer replies (a Lua number becomes a 64-bit integer: exact, as it is below 2^53).
 */
const reserve: TenantScript = {
  uses: ["pushLease", "track", "bucketNow"],
  body: `
local id, req, records, limits = ARGV[1], ARGV[2], ARGV[6], ARGV[7]
local got = call('MGET', unpack(KEYS, 4))
if not got[1] then return {'cold'} end
local seen = req ~= '' and got[3]
if seen and seen ~= id then
  if seen ~= ARGV[8] then return {'seen', seen} end
  if call('EXISTS', KEYS[3]) == 1 then return push_lease(KEYS[3], {'duplicate', ''}, seen) end
end
if call('EXISTS', KEYS[2]) == 1 then return push_lease(KEYS[2], {'duplicate', ''}, id) end
local units, amounts, exps = {}, {}, {}
local count, pos = 0, 1
while pos <= #records do
  count = count + 1
  local key
  units[count], amounts[count], exps[count], key, pos = struct.unpack('${recordLayout}', records, pos)
end
if count ~= #KEYS - 6 then return redis.error_reply('reserve: meter keys and records differ in number') end
local used, tats, now = {}, {}, nil
for i = 1, count do used[i] = tonumber(got[3 + i] or '0') end
for i = 1, count do
  local unit, blocked = units[i], false
  if unit == 'R' or unit == 'T' then
    -- A token bucket: used[i] is its TAT, exps[i] its emission interval.
    now = now or bucket_now(ARGV[9])
    tats[i] = math.max(used[i], now) + tonumber(amounts[i]) * tonumber(exps[i])
    blocked = tats[i] - now > struct.unpack('>d', limits, 8 * i - 7) + ${bucketGranularityMs}
  else
    blocked = used[i] + tonumber(amounts[i]) > struct.unpack('>d', limits, 8 * i - 7)
  end
  if blocked then
    for j = 1, count do
      if units[j] == 'R' or units[j] == 'T' then
        now = now or bucket_now(ARGV[9])
        used[j] = used[j] > now and math.ceil((used[j] - now) * 1000) or 0
      end
    end
    return {'blocked', '', i - 1, unpack(used)}
  end
end
local out = {'reserved', ''}
for i = 1, count do
  if tats[i] then
    call('SET', KEYS[6 + i], tats[i], 'PXAT', math.ceil(math.max(tats[i], tonumber(ARGV[4]))) + ${bucketKeySlackMs})
    out[2 + i] = math.ceil((tats[i] - now) * 1000)
  elseif not got[3 + i] and exps[i] ~= '0' then
    -- A new window: created with its expiry in one write.
    call('SET', KEYS[6 + i], amounts[i], 'PXAT', exps[i])
    out[2 + i] = tonumber(amounts[i])
  else
    out[2 + i] = call('INCRBY', KEYS[6 + i], amounts[i])
  end
end
call('HSET', KEYS[2], 'state', 'open', 'exp', ARGV[4], 'rid', ARGV[5], 'req', req, 'meters', records)
out[2] = track(KEYS[1], KEYS[5], id, ARGV[4], got[2])
if req ~= '' then call('SET', KEYS[6], id, 'PXAT', ARGV[3]) end
return out
`,
};

/**
 * KEYS: due, lease, gen, hint, then the lease's meters in record order. ARGV: leaseId,
 * caller's nowMs, graceMs, encoded usage, the settled amount of a requests, tokens and cost
 * meter, the tenant's meter-key prefix. A bucket meter's TAT moves by (settled - reserved) x
 * its emission interval. Reply: status, publish, generation, then the lease's
 * rid, exp and meters (settled) or the lease (already); 'meters', '', generation, the
 * lease's meter records and request id when its meter keys were not the ones declared
 * (call again with them); 'cold' or 'missing'.
 */
const settle: TenantScript = {
  uses: ["serverNow", "moveBucket", "add", "eachMeter", "pushLease", "track"],
  body: `
local got = call('MGET', KEYS[3], KEYS[4])
local gen = got[1]
if not gen then return {'cold'} end
local id = ARGV[1]
local h = call('HMGET', KEYS[2], 'state', 'rid', 'exp', 'meters', 'req')
if not h[1] then return {'missing', '', gen} end
if h[1] ~= 'open' then return push_lease(KEYS[2], {'already', '', gen}, id) end
local settled = {r = tonumber(ARGV[5]), t = tonumber(ARGV[6]), c = tonumber(ARGV[7]), n = 0}
settled.R, settled.T = settled.r, settled.t
-- One pass over the records checks the declared keys and computes the deltas; none is
-- applied unless every key was declared.
local mp, i, ok, deltas, exps, buckets = ARGV[8], 4, true, {}, {}, {}
each_meter(h[4], function(unit, amount, exp, key)
  i = i + 1
  if KEYS[i] ~= mp .. key then ok = false end
  deltas[i], exps[i], buckets[i] = settled[unit] - tonumber(amount), exp, unit == 'R' or unit == 'T'
end)
if not ok or i ~= #KEYS then return {'meters', '', gen, h[4], h[5]} end
for j = 5, i do
  if buckets[j] then
    if deltas[j] ~= 0 then move_bucket(KEYS[j], deltas[j] * tonumber(exps[j])) end
  else
    add(KEYS[j], deltas[j], exps[j])
  end
end
call('HSET', KEYS[2], 'state', 'settled', 'usage', ARGV[4])
-- Due for the sweeper graceMs after the settle: by the earlier of both clocks, so a
-- replica running ahead cannot push it out; one running behind only makes it earlier.
local publish = track(KEYS[1], KEYS[4], id, math.min(server_now(), tonumber(ARGV[2])) + tonumber(ARGV[3]), got[2])
return {'settled', publish, gen, h[2], h[3], h[4]}
`,
};

/**
 * KEYS: due, lease, gen, req (the key of the lease's request id; of '' if it has none).
 * ARGV: leaseId, that request id. The ledger row of a settled or expired lease is durable:
 * the lease and its request id go (a repeated settle is answered from the ledger, a
 * repeated Admit is a new request). Reply: the tenant's generation ('' while cold); or, as
 * an array, the lease's request id when it is not the one declared (call again with it).
 */
const recorded: TenantScript = {
  uses: [],
  body: `
local id = ARGV[1]
local h = call('HMGET', KEYS[2], 'state', 'req')
if h[1] and h[1] ~= 'open' then
  local req = h[2] or ''
  if req ~= ARGV[2] then return {req} end
  call('ZREM', KEYS[1], id)
  call('DEL', KEYS[2])
  if req ~= '' and call('GET', KEYS[4]) == id then call('DEL', KEYS[4]) end
end
return call('GET', KEYS[3]) or ''
`,
};

/** KEYS: due, lease, hint. ARGV: leaseId, expiresAtMs. Reply: 'renewed', publish, rid, meters; or 'missing'. */
const renew: TenantScript = {
  uses: ["track"],
  body: `
local h = call('HMGET', KEYS[2], 'state', 'rid', 'meters')
if h[1] ~= 'open' then return {'missing'} end
call('HSET', KEYS[2], 'exp', ARGV[2])
return {'renewed', track(KEYS[1], KEYS[3], ARGV[1], ARGV[2], call('GET', KEYS[3])), h[2], h[3]}
`,
};

/** KEYS: due. ARGV: limit. Reply: the ids of leases due by the server's clock, earliest first. */
const dueLeases: TenantScript = {
  uses: ["serverNow"],
  body: `
return call('ZRANGEBYSCORE', KEYS[1], '-inf', server_now(), 'LIMIT', 0, tonumber(ARGV[1]))
`,
};

/** KEYS: leases. Reply: how many of them are open. */
const openCount: TenantScript = {
  uses: [],
  body: `
local n = 0
for _, lk in ipairs(KEYS) do
  if call('HGET', lk, 'state') == 'open' then n = n + 1 end
end
return n
`,
};

/** KEYS: leases. Reply: per lease its state and meter records ('' when it is gone). */
const leaseFields: TenantScript = {
  uses: [],
  body: `
local out = {}
for _, lk in ipairs(KEYS) do
  local h = call('HMGET', lk, 'state', 'meters')
  out[#out + 1] = h[1] or ''
  out[#out + 1] = h[2] or ''
end
return out
`,
};

/**
 * KEYS: due, hint, gen, then per lease its key and the keys of its concurrency meters.
 * ARGV: graceMs, the tenant's meter-key prefix, then per lease its id and how many
 * concurrency keys it declared. Claims those of the leases that are still due by the
 * server's clock and re-scores them now + graceMs; a lease whose concurrency keys are not
 * the ones declared is left for the next sweep. Reply: the tenant's next due score ('' when
 * nothing is left), its generation, then 7 fields per claimed lease.
 */
const claim: TenantScript = {
  uses: ["serverNow", "add", "eachMeter", "declared", "pushLease"],
  body: `
local now = server_now()
local out = {'', call('GET', KEYS[3]) or ''}
local k = 4
for a = 3, #ARGV, 2 do
  local id, n, lk = ARGV[a], tonumber(ARGV[a + 1]), KEYS[k]
  local score = call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= now then
    local h = call('HMGET', lk, 'state', 'meters')
    if not h[1] then
      call('ZREM', KEYS[1], id)
    elseif h[1] ~= 'open' or declared(KEYS, k + 1, n, h[2], ARGV[2], 'n') then
      if h[1] == 'open' then
        -- Expired: the estimate stands as the charge; only concurrency is released.
        local i = k
        each_meter(h[2], function(unit, amount, exp, key)
          if unit == 'n' then
            i = i + 1
            add(KEYS[i], -tonumber(amount), '0')
          end
        end)
        call('HSET', lk, 'state', 'expired')
      end
      call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
      push_lease(lk, out, id)
    end
  end
  k = k + 1 + n
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
 * KEYS: gen, then one meter per charge. ARGV: mode, generation, then per charge its amount
 * and expiresAtMs. Mode 'charge' adds only while the tenant is in that generation;
 * 'rebuild' adds only while it is cold, and makes it that generation. Reply: 1 if applied.
 */
const charge: TenantScript = {
  uses: ["add"],
  body: `
local gen = call('GET', KEYS[1])
if ARGV[1] == 'rebuild' then
  if gen then return 0 end
  call('SET', KEYS[1], ARGV[2])
elseif gen ~= ARGV[2] then
  return 0
end
for i = 2, #KEYS do add(KEYS[i], tonumber(ARGV[2 * i - 1]), ARGV[2 * i]) end
return 1
`,
};

/**
 * KEYS: meters. ARGV: the buckets' fixed now ('' in production), then one character per
 * meter: 'b' for a token bucket, whose value is read as its backlog (µs until full).
 * Reply: the values (0 when absent).
 */
const readMeters: TenantScript = {
  uses: ["bucketNow"],
  body: `
local got, now = call('MGET', unpack(KEYS)), nil
for i = 1, #KEYS do
  local v = tonumber(got[i] or '0')
  if string.sub(ARGV[2], i, i) == 'b' then
    now = now or bucket_now(ARGV[1])
    v = v > now and math.ceil((v - now) * 1000) or 0
  end
  got[i] = v
end
return got
`,
};

/** KEYS: one key under the store's prefix. Checks that this user may run scripts on the store's keys (see checkRedisConfiguration). */
const probe: TenantScript = {
  uses: [],
  body: `
return call('EXISTS', KEYS[1])
`,
};

/** The tenant scripts a batch can carry (see RedisCounterStore.run), by name. */
const batchable = { reserve, settle, recorded };
type BatchableOp = keyof typeof batchable;

/**
 * KEYS: the keys of every operation, one slice after the other. ARGV: per operation: its
 * name (a key of batchable), its key count, its argument count, its arguments. Runs each
 * as its own script would, on its slice of KEYS, in order; reply: one reply per operation,
 * an error reply for one that failed (its writes so far stay, as they would in a script of
 * its own).
 */
const batchLua = `local call = redis.call
${Object.values(helpers).join("")}
local ops = {
${Object.entries(batchable).map(([name, s]) => `${name} = function(KEYS, ARGV)\n${s.body}\nend,`).join("\n")}
}
local out, a, k = {}, 1, 1
while a <= #ARGV do
  local op, nk, na = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local ok, reply = pcall(ops[op], {unpack(KEYS, k, k + nk - 1)}, {unpack(ARGV, a + 3, a + 2 + na)})
  -- A failed redis.call raises an error reply (a table); a Lua error raises its message.
  if ok or type(reply) == 'table' then out[#out + 1] = reply else out[#out + 1] = {err = reply} end
  a = a + 3 + na
  k = k + nk
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

type Client = Redis | Cluster;

/**
 * A tenant script, run as EVALSHA with as many keys as the call touches (EVAL when Redis
 * does not know it yet: after a restart or SCRIPT FLUSH). Not a defineCommand: a command
 * whose key count varies takes it as its first argument, and ioredis's Cluster
 * autopipelining would route such a command by that number instead of by its first key.
 * Replies come with bulk strings as Buffers: lease replies can carry meter records, which
 * are binary.
 */
class TenantLua {
  readonly lua: string;
  readonly sha: string;

  constructor(script: TenantScript | string) {
    this.lua = typeof script === "string" ? script : tenantLua(script);
    this.sha = createHash("sha1").update(this.lua).digest("hex");
  }
}

const tenantScripts = {
  reserve: new TenantLua(reserve),
  settle: new TenantLua(settle),
  recorded: new TenantLua(recorded),
  batch: new TenantLua(batchLua),
  renew: new TenantLua(renew),
  dueLeases: new TenantLua(dueLeases),
  leaseFields: new TenantLua(leaseFields),
  openCount: new TenantLua(openCount),
  claim: new TenantLua(claim),
  charge: new TenantLua(charge),
  readMeters: new TenantLua(readMeters),
  probe: new TenantLua(probe),
};

/** The index scripts (fixed keys), made by defineCommand. */
interface Scripts {
  admPublish(index: string, gen: string, seq: string, ...args: string[]): Promise<number>;
  admDueTenants(index: string, gen: string, ...args: string[]): Promise<string[]>;
  admAfterClaim(index: string, gen: string, ...args: string[]): Promise<number>;
}

/** EVALSHA and EVAL with Buffer replies, their keys and arguments as arrays (ioredis flattens them into the command). */
interface Evaluating {
  evalshaBuffer(sha: string, keyCount: number, keys: readonly string[], args: ReadonlyArray<string | Buffer>): Promise<unknown>;
  evalBuffer(lua: string, keyCount: number, keys: readonly string[], args: ReadonlyArray<string | Buffer>): Promise<unknown>;
}

/** A reply of a tenant script: bulk strings as Buffers, integers as numbers. */
type Reply = Array<Buffer | number>;

const scripts: ReadonlyArray<[name: string, numberOfKeys: number, lua: string]> = [
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
  /** How long a request id outlives its lease's expiry if the lease is never recorded (default 10 min). */
  readonly requestIdTtlMs?: number;
  /** Period of the safety-net SCAN for due leases, run by one replica at a time (default 60 s). */
  readonly dueRescanMs?: number;
  /** This process's clock (injected in tests to simulate a skewed replica). */
  readonly localClock?: () => number;
  /**
   * Tests only: the instant (ms) the token-bucket step takes instead of Redis's TIME, so a
   * test moves a bucket's time without sleeping. Unset in production. Keep it near the real
   * time: bucket keys still expire by Redis's clock.
   */
  readonly bucketClock?: () => number;
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
  readonly bucketClock?: () => number;
}

/**
 * Options that make commands fail fast while Redis is unreachable (no offline queue, a
 * command timeout, no resending of commands cut off by a broken connection — a resent
 * reserve would reserve twice) and reconnect by themselves with a capped backoff.
 */
export const failFastRedisOptions: RedisOptions = {
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
 * Refusals (NOAUTH, WRONGPASS, NOPERM) are no passing fault: see refusalOf.
 */
const transientReply = /^(CLUSTERDOWN|LOADING|TRYAGAIN|MASTERDOWN|READONLY|BUSY|OOM|NOREPLICAS|MOVED|ASK)\b/;

/** Publications that failed (connection trouble) are retried by the next claimDue; beyond this many, the SCAN finds them. */
const maxUnpublished = 100_000;

/** Operations in one call of the batch script, at most (bounds how long one call holds Redis). */
const maxBatch = 100;

/** Tenants one claimDue call looks at, at most. */
const dueTenantsPerClaim = 1_000;

/** Leases whose keys this process remembers (see LeaseKeys), at most; the oldest are forgotten first. */
const maxKnownLeases = 100_000;

/** How often the clock offset and the Redis configuration are read again. */
const checkIntervalMs = 10_000;

/**
 * What the settle and markRecorded of a lease must declare besides the tenant's fixed
 * keys: its meters' keys and its request id (whose key markRecorded deletes). Remembered
 * from the reserve (or from a reply that named them), so that a lease reserved here is
 * settled and recorded in one call each; one reserved by another replica costs one more
 * call each (the script names what to declare). The scripts check what was declared, so
 * a wrong memory costs a call, never a count.
 */
interface LeaseKeys {
  readonly meters: readonly string[];
  readonly requestId: string;
}

/**
 * Counters and leases in Redis or Redis Cluster, shared by every control-plane
 * replica. Each operation is one Lua script over one tenant's slot (plus, rarely,
 * a publication in the due index; see the notes at the top of this file); the hot
 * ones of a tick share a command (see run).
 */
export class RedisCounterStore implements CounterStore {
  private readonly client: Client & Scripts;
  private readonly prefix: string;
  private readonly logger: Logger | undefined;
  private readonly requestIdTtlMs: number;
  private readonly dueRescanMs: number;
  private readonly localClock: () => number;
  private readonly bucketClock: (() => number) | undefined;
  private readonly checkTimer: NodeJS.Timeout;
  private readonly unpublished = new Map<string, number>();
  /** By lease key. */
  private readonly knownLeases = new Map<string, LeaseKeys>();
  private lastRescanCheckMs = Number.NEGATIVE_INFINITY;
  private offsetMs = 0;
  private reachable = true;
  /** Why Redis refused the connection (credentials), until it is ready again. */
  private refused: string | undefined;
  /** What the last configuration check found wrong (see checkConfiguration), until one finds nothing. */
  private misconfigured: string | undefined;
  private corked = false;
  private queue: Queued[] = [];

  constructor(options: RedisCounterStoreOptions) {
    this.client = options.client as Client & Scripts;
    this.prefix = options.keyPrefix;
    this.logger = options.logger;
    this.requestIdTtlMs = options.requestIdTtlMs ?? 600_000;
    this.dueRescanMs = options.dueRescanMs ?? 60_000;
    this.localClock = options.localClock ?? Date.now;
    this.bucketClock = options.bucketClock;
    for (const [name, numberOfKeys, lua] of scripts) this.client.defineCommand(name, { numberOfKeys, lua });
    this.client.on("error", (err: Error) => this.connectionError(err));
    this.client.on("node error", (err: Error) => this.connectionError(err));
    this.client.on("ready", () => {
      if (this.refused !== undefined) this.logger?.info("redis accepts the counter store's credentials again");
      else if (!this.reachable) this.logger?.info("redis reachable again");
      this.reachable = true;
      this.refused = undefined;
      // A reconnect may be to another server (a failover) or after a restart with another configuration.
      void this.checkConfiguration().catch(() => undefined);
    });
    this.checkTimer = setInterval(() => {
      void this.syncClock().catch(() => undefined);
      void this.checkConfiguration().catch(() => undefined);
    }, checkIntervalMs);
    this.checkTimer.unref();
  }

  /**
   * A store on a single Redis (`url`) or a Redis Cluster (`clusterNodes`). Waits up to
   * `readyTimeoutMs` for the connection; if Redis is not there yet, the store is
   * returned anyway: calls fail fast until it is, and the client keeps reconnecting.
   * Refuses (throws CounterStoreMisconfiguredError, the store closed) when Redis refuses
   * the credentials or the store's scripts, or its eviction policy is not noeviction or
   * cannot be read (see checkRedisConfiguration).
   */
  static async connect(options: RedisConnectOptions): Promise<RedisCounterStore> {
    const client: Client = options.clusterNodes?.length
      ? new Cluster(options.clusterNodes.map(parseHostPort), failFastClusterOptions)
      : new Redis(options.url ?? "redis://127.0.0.1:6379", failFastRedisOptions);
    const store = new RedisCounterStore({
      client, keyPrefix: options.keyPrefix, logger: options.logger, dueRescanMs: options.dueRescanMs, localClock: options.localClock,
      bucketClock: options.bucketClock,
    });
    let problem = await new Promise<string | undefined>((resolve) => {
      if (client.status === "ready") return resolve(undefined);
      const done = (found: string | undefined) => {
        clearTimeout(timer);
        client.off("ready", ready);
        client.off("error", error);
        client.off("node error", error);
        resolve(found);
      };
      const timer = setTimeout(() => {
        options.logger?.warn({ status: client.status }, "redis not ready yet; decisions follow the failure policy until it is");
        done(undefined);
      }, options.readyTimeoutMs ?? 5_000);
      const ready = () => done(undefined);
      const error = (err: Error) => {
        const refusal = refusalOf(err);
        if (refusal !== undefined) done(credentialsRefused(refusal));
      };
      client.once("ready", ready);
      client.on("error", error);
      client.on("node error", error);
    });
    if (problem === undefined && client.status === "ready") {
      // Unreachable again already: the check runs on the next ready.
      problem = await store.checkConfiguration().catch((err) => (err instanceof CounterStoreMisconfiguredError ? err.message : undefined));
    }
    if (problem !== undefined) {
      await store.close();
      throw new CounterStoreMisconfiguredError(`the counter store cannot use its Redis: ${problem}`);
    }
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

  /**
   * Checks what the store needs of Redis (see checkRedisConfiguration) and keeps the
   * finding for ping (readiness), logging when it changes: at start, on every reconnect
   * and every 10 s, so a CONFIG SET that enables eviction later is seen. Returns the
   * problem, if any; throws CounterStoreUnavailableError when Redis cannot be reached.
   */
  async checkConfiguration(): Promise<string | undefined> {
    const nodes: Redis[] = this.client instanceof Cluster ? this.client.nodes("master") : [this.client];
    const problem = await this.call(() => checkRedisConfiguration({ nodes, probe: () => this.eval(tenantScripts.probe, [this.seqKey], []) }));
    if (problem !== undefined && problem !== this.misconfigured) this.logger?.error({ problem }, "the counter store's redis is misconfigured; readiness fails until it is fixed");
    if (problem === undefined && this.misconfigured !== undefined) this.logger?.info("the counter store's redis configuration is fixed");
    this.misconfigured = problem;
    return problem;
  }

  async reserve(r: ReserveRequest): Promise<ReserveResult> {
    const prefix = this.tenantPrefix(r.tenant);
    const [records, limits, meterKeys] = encodeMeters(prefix, r.meters, r.amounts);
    const lease = `${prefix}lease:${r.leaseId}`;
    const fixed = [`${prefix}gen`, `${prefix}due-hint`, `${prefix}req:${r.requestId}`, ...meterKeys];
    const args = [
      r.leaseId, r.requestId, String(instant(r.leaseExpiresAtMs) + this.requestIdTtlMs), String(r.leaseExpiresAtMs), r.reservationId, records, limits, "",
      this.bucketNow(),
    ];
    for (let attempt = 0; ; attempt++) {
      const seen = args[7] as string;
      const reply = (await this.run("reserve", prefix, [`${prefix}due`, lease, seen ? `${prefix}lease:${seen}` : lease, ...fixed], args)) as Reply;
      switch (text(reply[0])) {
        case "reserved":
          this.remember(lease, { meters: meterKeys, requestId: r.requestId });
          if (typeof reply[1] === "number") await this.publish(r.tenant, reply[1]);
          return { status: "reserved", used: reply.slice(2) as number[] };
        case "blocked":
          return { status: "blocked", index: reply[2] as number, used: reply.slice(3) as number[] };
        case "duplicate":
          return { status: "duplicate", lease: leaseAt(r.tenant, reply, 2) };
        case "seen":
          // The request id names another lease: declare its key and ask again (a retried Admit, rare).
          if (attempt >= 2) throw new Error(`reserve: request id ${r.requestId} keeps naming other leases`);
          args[7] = text(reply[1]);
          continue;
        default:
          return { status: "cold" };
      }
    }
  }

  async settle(r: SettleLeaseRequest): Promise<SettleLeaseResult> {
    const prefix = this.tenantPrefix(r.tenant);
    const lease = `${prefix}lease:${r.leaseId}`;
    const u = r.usage;
    const args = [
      r.leaseId, String(r.nowMs), String(r.graceMs), encodeUsage(u),
      String(integer(settledAmount("requests", u), "requests")), String(integer(settledAmount("tokens", u), "tokens")), String(integer(settledAmount("cost", u), "cost")),
      `${prefix}m:`,
    ];
    let known = this.knownLeases.get(lease);
    for (let attempt = 0; ; attempt++) {
      const reply = (await this.run("settle", prefix, [`${prefix}due`, lease, `${prefix}gen`, `${prefix}due-hint`, ...(known?.meters ?? [])], args)) as Reply;
      const status = text(reply[0]);
      if (status === "cold") return { status: "cold" };
      const generation = text(reply[2]);
      if (status === "meters") {
        // Reserved elsewhere (or forgotten here): declare its meters and ask again.
        if (attempt >= 1) throw new Error(`settle: the meters of lease ${r.leaseId} are not the ones it named`);
        known = this.remember(lease, { meters: decodeMeters(reply[3] as Buffer).map((m) => `${prefix}m:${m.key}`), requestId: text(reply[4]) });
        continue;
      }
      if (status === "missing") return { status: "missing", generation };
      if (typeof reply[1] === "number") await this.publish(r.tenant, reply[1]);
      if (status === "already") return { status: "already", lease: leaseAt(r.tenant, reply, 3), generation };
      return { status: "settled", lease: leaseOf(r.tenant, r.leaseId, "settled", text(reply[3]), text(reply[4]), reply[5] as Buffer, u), generation };
    }
  }

  async renew(tenant: string, leaseId: string, expiresAtMs: number): Promise<LeaseRecord | undefined> {
    const prefix = this.tenantPrefix(tenant);
    const keys = [`${prefix}due`, `${prefix}lease:${leaseId}`, `${prefix}due-hint`];
    const reply = await this.call(() => this.eval<Reply>(tenantScripts.renew, keys, [leaseId, String(instant(expiresAtMs))]));
    if (text(reply[0]) === "missing") return undefined;
    if (typeof reply[1] === "number") await this.publish(tenant, reply[1]);
    return leaseOf(tenant, leaseId, "open", text(reply[2]), expiresAtMs, reply[3] as Buffer, undefined);
  }

  async markRecorded(tenant: string, leaseId: string): Promise<string | undefined> {
    const prefix = this.tenantPrefix(tenant);
    const lease = `${prefix}lease:${leaseId}`;
    let requestId = this.knownLeases.get(lease)?.requestId ?? "";
    for (let attempt = 0; ; attempt++) {
      const reply = (await this.run("recorded", prefix, [`${prefix}due`, lease, `${prefix}gen`, `${prefix}req:${requestId}`], [leaseId, requestId])) as Buffer | Reply;
      if (Buffer.isBuffer(reply)) {
        this.knownLeases.delete(lease);
        return text(reply) || undefined;
      }
      // The lease has another request id than the one declared: declare its key and ask again.
      if (attempt >= 1) throw new Error(`markRecorded: the request id of lease ${leaseId} is not the one it named`);
      requestId = text(reply[0]);
    }
  }

  /**
   * Per tenant the index lists as due: the ids of its due leases (by the server's clock),
   * their state and meters (an open one's concurrency meters are released), then the
   * claim with every key declared, which claims those still due.
   */
  async claimDue(nowMs: number, graceMs: number, limit: number): Promise<LeaseRecord[]> {
    await this.republish();
    await this.rescanIfDue();
    const listed = await this.call(() => this.client.admDueTenants(this.indexKey, this.genKey, String(nowMs), String(dueTenantsPerClaim)));
    const claimed: LeaseRecord[] = [];
    const after: string[] = [];
    for (let i = 0; i + 1 < listed.length && claimed.length < limit; i += 2) {
      const tenant = listed[i]!;
      const prefix = this.tenantPrefix(tenant);
      const due = `${prefix}due`;
      const ids = (await this.call(() => this.eval<Buffer[]>(tenantScripts.dueLeases, [due], [String(limit - claimed.length)]))).map(text);
      const leaseKeys = ids.map((id) => `${prefix}lease:${id}`);
      const fields = ids.length > 0 ? await this.call(() => this.eval<Buffer[]>(tenantScripts.leaseFields, leaseKeys, [])) : [];
      const keys = [due, `${prefix}due-hint`, `${prefix}gen`];
      const args = [String(graceMs), `${prefix}m:`];
      ids.forEach((id, j) => {
        const open = text(fields[2 * j]) === "open";
        const concurrency = open ? decodeMeters(fields[2 * j + 1]!).filter((m) => m.unit === "concurrency").map((m) => `${prefix}m:${m.key}`) : [];
        keys.push(leaseKeys[j]!, ...concurrency);
        args.push(id, String(concurrency.length));
      });
      const reply = await this.call(() => this.eval<Reply>(tenantScripts.claim, keys, args));
      const generation = text(reply[1]) || undefined;
      for (let j = 2; j + 6 < reply.length; j += 7) {
        const lease = leaseAt(tenant, reply, j, generation);
        // Its markRecorded follows; its meters are no longer needed (it is not open).
        this.remember(`${prefix}lease:${lease.leaseId}`, { meters: [], requestId: text(reply[j + 6]) });
        claimed.push(lease);
      }
      after.push(tenant, listed[i + 1]!, text(reply[0]));
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
    const prefix = this.tenantPrefix(tenant);
    const keys = [`${prefix}gen`];
    const args = [mode, generation];
    for (const c of charges) {
      keys.push(`${prefix}m:${c.key}`);
      args.push(String(integer(c.amount, "amount")), String(instant(c.expiresAtMs)));
    }
    return (await this.call(() => this.eval<number>(tenantScripts.charge, keys, args))) === 1;
  }

  async read(tenant: string, keys: readonly string[]): Promise<number[]> {
    if (keys.length === 0) return [];
    const prefix = this.tenantPrefix(tenant);
    const meterKeys = keys.map((k) => `${prefix}m:${k}`);
    if (keys.some(isBucketKey)) {
      const kinds = keys.map((k) => (isBucketKey(k) ? "b" : "-")).join("");
      return this.call(() => this.eval<number[]>(tenantScripts.readMeters, meterKeys, [this.bucketNow(), kinds]));
    }
    const values = await this.call(() => this.client.mget(meterKeys));
    return values.map((v) => (v === null ? 0 : Number(v)));
  }

  /**
   * Every lease the store holds is on :due until recorded: its ids, then their states
   * (their keys declared, a thousand per script call). Not one snapshot: a lease reserved
   * or settled between the calls may or may not be counted.
   */
  async openLeases(tenant: string): Promise<number> {
    const prefix = this.tenantPrefix(tenant);
    const ids = await this.call(() => this.client.zrange(`${prefix}due`, "0", "-1"));
    let open = 0;
    for (let i = 0; i < ids.length; i += 1_000) {
      const keys = ids.slice(i, i + 1_000).map((id) => `${prefix}lease:${id}`);
      open += await this.call(() => this.eval<number>(tenantScripts.openCount, keys, []));
    }
    return open;
  }

  async reset(tenant: string, key: string): Promise<number> {
    const previous = await this.call(() => this.client.getdel(`${this.tenantPrefix(tenant)}m:${key}`));
    if (previous === null) return 0;
    // A bucket held its TAT: what it lacked to be full, by this process's view of Redis's clock.
    return isBucketKey(key) ? backlogMicros(Number(previous), this.bucketClock?.() ?? this.now()) : Number(previous);
  }

  /** Readiness: Redis answers, and the configuration check finds nothing wrong (credentials, permissions, eviction). */
  async ping(): Promise<void> {
    await this.call(() => this.client.ping());
    const problem = await this.checkConfiguration();
    if (problem !== undefined) throw new CounterStoreMisconfiguredError(problem);
  }

  async close(): Promise<void> {
    clearInterval(this.checkTimer);
    await this.client.quit().catch(() => this.client.disconnect());
  }

  /** The buckets' fixed now for the scripts: '' (TIME) unless a test fixed it. */
  private bucketNow(): string {
    return this.bucketClock ? String(this.bucketClock()) : "";
  }

  /** Remembers a lease's keys (see LeaseKeys) for its settle and markRecorded. */
  private remember(lease: string, keys: LeaseKeys): LeaseKeys {
    if (this.knownLeases.size >= maxKnownLeases) this.knownLeases.delete(this.knownLeases.keys().next().value!);
    this.knownLeases.set(lease, keys);
    return keys;
  }

  private tenantPrefix(tenant: string): string {
    // An empty hash tag "{}" would not be a tag: the tenant's keys would spread over slots.
    if (tenant === "") throw new TypeError("tenant id must not be empty");
    return `${this.prefix}:{${tenant}}:`;
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
   * Publishes a tenant's lowered due minimum (a script's "publish" reply, when it is a
   * number) in the index. The tenant script has already happened, so a failure must not
   * fail the caller: it is kept and retried.
   */
  private async publish(tenant: string, score: number): Promise<void> {
    try {
      await this.call(() => this.client.admPublish(this.indexKey, this.genKey, this.seqKey, tenant, String(score)));
    } catch (err) {
      if (!(err instanceof CounterStoreUnavailableError)) throw err;
      const known = this.unpublished.get(tenant);
      if (known !== undefined || this.unpublished.size < maxUnpublished) this.unpublished.set(tenant, Math.min(known ?? Infinity, score));
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

  /** A connection's error: Redis refusing the credentials (kept until the next ready: calls fail as misconfigured), or trouble. */
  private connectionError(err: Error): void {
    const refusal = refusalOf(err);
    if (refusal === undefined) {
      if (this.reachable) this.logger?.warn({ err: err.message }, "redis unreachable; counter calls fail fast until it is back");
    } else {
      if (this.refused === undefined) this.logger?.error({ err: refusal }, "redis refused the counter store's credentials; every Admit is denied until they are fixed");
      this.refused = credentialsRefused(refusal);
    }
    this.reachable = false;
  }

  /**
   * On a single Redis, the commands this process sends within one tick leave in one write
   * (the socket is corked until the tick ends) instead of one syscall each: under
   * concurrent traffic most of a command's cost here was its own write. (A Cluster client
   * batches per node itself: autopipelining, see failFastClusterOptions.)
   */
  private coalesceWrites(): void {
    if (this.corked || !(this.client instanceof Redis)) return;
    const stream = this.client.stream;
    if (!stream?.writable) return;
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
  private run(op: BatchableOp, prefix: string, keys: readonly string[], args: ReadonlyArray<string | Buffer>): Promise<Reply | Buffer> {
    return new Promise((resolve, reject) => {
      if (this.queue.push({ op, prefix, keys, args, resolve, reject }) === 1) setImmediate(() => this.flush());
    });
  }

  /**
   * Sends the queued operations: a lone one as its own script, several as one call of the
   * batch script (at most maxBatch each). On a Cluster a script must stay in one slot, so a
   * batch holds one tenant's operations; on a single Redis it holds them all.
   */
  private flush(): void {
    const queue = this.queue;
    this.queue = [];
    let groups: Iterable<Queued[]> = [queue];
    if (this.client instanceof Cluster) {
      const byTenant = new Map<string, Queued[]>();
      for (const q of queue) {
        const group = byTenant.get(q.prefix);
        if (group) group.push(q);
        else byTenant.set(q.prefix, [q]);
      }
      groups = byTenant.values();
    }
    for (const group of groups) {
      for (let i = 0; i < group.length; i += maxBatch) this.send(group.slice(i, i + maxBatch));
    }
  }

  private send(batch: readonly Queued[]): void {
    if (batch.length === 1) {
      const q = batch[0]!;
      this.call(() => this.alone(q)).then(q.resolve, q.reject);
      return;
    }
    const keys: string[] = [];
    const args: Array<string | Buffer> = [];
    for (const q of batch) {
      keys.push(...q.keys);
      args.push(q.op, String(q.keys.length), String(q.args.length), ...q.args);
    }
    this.call(() => this.eval<Array<Reply | Buffer | Error>>(tenantScripts.batch, keys, args)).then(
      (replies) => batch.forEach((q, i) => {
        const reply = replies[i]!;
        if (reply instanceof Error) q.reject(this.failure(reply));
        else q.resolve(reply);
      }),
      (err) => batch.forEach((q) => q.reject(err)),
    );
  }

  /** A queued operation as its own script. */
  private alone({ op, keys, args }: Queued): Promise<Reply | Buffer> {
    return this.eval(tenantScripts[op], keys, args);
  }

  /** Runs a tenant script on `keys` (all it touches) with `args`. */
  private async eval<R>(script: TenantLua, keys: readonly string[], args: ReadonlyArray<string | Buffer>): Promise<R> {
    const client = this.client as unknown as Evaluating;
    try {
      return (await client.evalshaBuffer(script.sha, keys.length, keys, args)) as R;
    } catch (err) {
      if (!(err instanceof Error && err.message.startsWith("NOSCRIPT"))) throw err;
      return (await client.evalBuffer(script.lua, keys.length, keys, args)) as R;
    }
  }

  /** Connection trouble becomes CounterStoreUnavailableError, a refusal CounterStoreMisconfiguredError; script bugs stay errors. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    this.coalesceWrites();
    try {
      return await fn();
    } catch (err) {
      throw this.failure(err);
    }
  }

  /**
   * Redis refusing us (a reply, or the connection down because it refused the credentials)
   * as CounterStoreMisconfiguredError; connection trouble and replies that mean the backend
   * cannot serve now as CounterStoreUnavailableError; anything else as it is.
   */
  private failure(err: unknown): unknown {
    if (err instanceof TypeError || err instanceof RangeError || err instanceof CounterStoreUnavailableError) return err;
    const refusal = refusalOf(err);
    if (refusal !== undefined) return new CounterStoreMisconfiguredError(`redis refused the counter store: ${refusal}`, { cause: err });
    const message = err instanceof Error ? err.message : String(err);
    const isReply = (err as { name?: string } | null)?.name === "ReplyError";
    if (isReply && !transientReply.test(message)) return err;
    if (this.refused !== undefined) return new CounterStoreMisconfiguredError(this.refused, { cause: err });
    return new CounterStoreUnavailableError(`redis: ${message}`, { cause: err });
  }
}

function credentialsRefused(refusal: string): string {
  return `redis refused the counter store's credentials (check the user and password in its URL): ${refusal}`;
}

/** A tenant script waiting for the end of its tick (see RedisCounterStore.run). */
interface Queued {
  readonly op: BatchableOp;
  readonly prefix: string;
  readonly keys: readonly string[];
  readonly args: ReadonlyArray<string | Buffer>;
  readonly resolve: (reply: Reply | Buffer) => void;
  readonly reject: (err: unknown) => void;
}

/** A meter record's unit byte (see "Meter records" at the top of this file). */
const unitCodes: Readonly<Record<MeterUnit, number>> = { requests: 0x72 /* r */, tokens: 0x74 /* t */, cost: 0x63 /* c */, concurrency: 0x6e /* n */ };
const unitsByCode: Readonly<Record<number, MeterUnit>> = Object.fromEntries(Object.entries(unitCodes).map(([unit, code]) => [code, unit as MeterUnit]));
/** A token bucket's unit byte: R (requests) or T (tokens). */
const bucketCodes: Readonly<Partial<Record<MeterUnit, number>>> = { requests: 0x52 /* R */, tokens: 0x54 /* T */ };
const bucketUnitsByCode: Readonly<Record<number, MeterUnit>> = { 0x52: "requests", 0x54: "tokens" };
const stateNames: Readonly<Record<string, LeaseState>> = { open: "open", settled: "settled", expired: "expired" };

/** Reads a lease from a reply: id, then its fields state, rid, exp, meters, usage, req (see push_lease), at `at`. */
function leaseAt(tenant: string, reply: Reply, at: number, generation?: string): LeaseRecord {
  const usage = text(reply[at + 5]);
  return leaseOf(
    tenant, text(reply[at]), stateNames[text(reply[at + 1])] ?? "open", text(reply[at + 2]), text(reply[at + 3]), reply[at + 4] as Buffer,
    usage ? decodeUsage(usage) : undefined, generation,
  );
}

/** A lease from its stored fields; its meter records are decoded only if `meters` is read. */
function leaseOf(
  tenant: string, leaseId: string, state: LeaseState, reservationId: string, expiresAtMs: string | number, records: Buffer, usage: LeaseUsage | undefined,
  generation?: string,
): LeaseRecord {
  let meters: LeaseMeter[] | undefined;
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
function text(value: Buffer | number | undefined): string {
  return value === undefined ? "" : value.toString();
}

/**
 * The meter records and the limits of a reserve (see "Meter records" at the top of this
 * file). A request's meters are the same objects request after request (bound once per
 * subject and window), so what does not depend on the amounts (unit, expiry, key; the
 * limits) is encoded once per meter list and only the amounts per reserve.
 */
function encodeMeters(prefix: string, meters: readonly MeterOp[], amounts: ReservedAmounts): [records: Buffer, limits: Buffer, keys: readonly string[]] {
  let fixed = encodedMeters.get(meters);
  if (!fixed) encodedMeters.set(meters, (fixed = encodeFixed(meters)));
  if (fixed.prefix !== prefix) {
    fixed.prefix = prefix;
    fixed.keys = meters.map((m) => `${prefix}m:${m.key}`);
  }
  const amountText: Record<MeterUnit, string> = {
    requests: "1", concurrency: "1", tokens: String(integer(amounts.tokens, "amount")), cost: String(integer(amounts.costMicros, "amount")),
  };
  let size = 0;
  for (let i = 0; i < meters.length; i++) size += 2 + amountText[meters[i]!.unit].length + fixed.tails[i]!.length;
  const records = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < meters.length; i++) {
    const unit = meters[i]!.unit;
    records[at++] = fixed.codes[i]!;
    at = writeShort(records, at, amountText[unit]);
    at += fixed.tails[i]!.copy(records, at);
  }
  return [records, fixed.limits, fixed.keys];
}

/** What encodeMeters keeps per meter list: see encodeFixed; and the meters' Redis keys under the last prefix they were used with. */
interface FixedMeters {
  /** Per meter its unit byte. */
  readonly codes: readonly number[];
  readonly tails: readonly Buffer[];
  readonly limits: Buffer;
  prefix: string;
  keys: readonly string[];
}

const encodedMeters = new WeakMap<readonly MeterOp[], FixedMeters>();

/** Per meter its record after the amount (expiry, key length, key), and the limits. */
function encodeFixed(meters: readonly MeterOp[]): FixedMeters {
  const limits = Buffer.allocUnsafe(8 * meters.length);
  const tails = meters.map((m, i) => {
    if (Number.isNaN(m.limit)) throw new RangeError(`limit of meter ${m.key} is not a number`);
    if (m.bucket && bucketCodes[m.unit] === undefined) throw new RangeError(`meter ${m.key}: a token bucket counts requests or tokens, not ${m.unit}`);
    if (m.bucket && !(m.bucket.emissionMs > 0 && Number.isFinite(m.bucket.emissionMs) && m.bucket.toleranceMs >= 0)) {
      throw new RangeError(`meter ${m.key}: bucket emission ${m.bucket.emissionMs} ms or tolerance ${m.bucket.toleranceMs} ms out of range`);
    }
    limits.writeDoubleBE(!m.enforce ? Infinity : m.bucket ? m.bucket.toleranceMs : m.limit, 8 * i);
    const expiry = m.bucket ? String(m.bucket.emissionMs) : String(instant(m.expiresAtMs));
    const key = Buffer.from(m.key, "utf8");
    if (key.length > 0xffff) throw new RangeError(`meter key of ${key.length} bytes is longer than 65535`);
    const tail = Buffer.allocUnsafe(1 + expiry.length + 2 + key.length);
    const at = writeShort(tail, 0, expiry);
    tail.writeUInt16BE(key.length, at);
    key.copy(tail, at + 2);
    return tail;
  });
  const codes = meters.map((m) => (m.bucket ? bucketCodes[m.unit]! : unitCodes[m.unit]));
  return { codes, tails, limits, prefix: "", keys: [] };
}

/** Writes a 1-byte length and an ASCII string (a decimal) at `at`; returns where it ends. */
function writeShort(buffer: Buffer, at: number, ascii: string): number {
  buffer[at] = ascii.length;
  return at + 1 + buffer.write(ascii, at + 1, "latin1");
}

function decodeMeters(records: Buffer): LeaseMeter[] {
  const meters: LeaseMeter[] = [];
  for (let at = 0; at < records.length; ) {
    const bucketUnit = bucketUnitsByCode[records[at]!];
    const unit = bucketUnit ?? unitsByCode[records[at]!]!;
    const amountEnd = at + 2 + records[at + 1]!;
    const expiryEnd = amountEnd + 1 + records[amountEnd]!;
    const keyEnd = expiryEnd + 2 + records.readUInt16BE(expiryEnd);
    const expiry = Number(records.toString("latin1", amountEnd + 1, expiryEnd));
    const common = { key: records.toString("utf8", expiryEnd + 2, keyEnd), unit, amount: Number(records.toString("latin1", at + 2, amountEnd)) };
    // A bucket's record carries its emission interval where the others carry their key's expiry.
    meters.push(bucketUnit ? { ...common, expiresAtMs: 0, emissionMs: expiry } : { ...common, expiresAtMs: expiry });
    at = keyEnd;
  }
  return meters;
}

/**
 * A settled lease's usage as stored: a JSON array in a fixed order, a third of the size of
 * the object (it stays with the lease until its ledger row is recorded). Lua never reads it.
 */
function encodeUsage(u: LeaseUsage): string {
  return JSON.stringify([
    u.inputTokens, u.outputTokens, u.costMicros, u.outcome, u.estimated, u.provider, u.model, u.latencyMs, u.settledAtMs,
    u.cacheReadTokens, u.cacheWriteTokens, u.reasoningTokens,
  ]);
}

/** A lease settled before the cache and reasoning parts were stored has none (its usage predates them). */
function decodeUsage(stored: string): LeaseUsage {
  const [inputTokens, outputTokens, costMicros, outcome, estimated, provider, model, latencyMs, settledAtMs, cacheReadTokens = 0, cacheWriteTokens = 0, reasoningTokens = 0] =
    JSON.parse(stored) as [number, number, number, number, boolean, string, string, number, number, number?, number?, number?];
  return { inputTokens, outputTokens, cacheReadTokens, cacheWriteTokens, reasoningTokens, costMicros, outcome, estimated, provider, model, latencyMs, settledAtMs };
}

function integer(value: number, what: string): number {
  if (!Number.isSafeInteger(value)) throw new RangeError(`${what} ${value} is not a safe integer`);
  return value;
}

/** An instant in ms since the epoch (0: never, for meters): a safe, non-negative integer. */
function instant(ms: number): number {
  if (!Number.isSafeInteger(ms) || ms < 0) throw new RangeError(`instant ${ms} is not a safe, non-negative integer`);
  return ms;
}

function parseHostPort(hostPort: string): { host: string; port: number } {
  const at = hostPort.lastIndexOf(":");
  return at < 0 ? { host: hostPort, port: 6379 } : { host: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)) };
}

function escapeGlob(s: string): string {
  return s.replace(/[*?[\]\\]/g, "\\$&");
}

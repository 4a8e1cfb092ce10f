import type { Redis } from "ioredis";

/*
 * What the Redis behind the counter store must be, and how a reply that says it is not
 * is told from a passing fault.
 *
 * - It accepts this process's credentials and lets it run its scripts on its keys. A
 *   refusal (NOAUTH, WRONGPASS, NOPERM, an ACL denial inside a script) is no outage that
 *   goes away by itself: the store reports it as CounterStoreMisconfiguredError, which no
 *   failure policy turns into an unmetered admission.
 * - It never evicts keys (`maxmemory-policy noeviction`): an evicted meter undercounts, an
 *   evicted generation key makes a rebuild add the ledger to intact counters. Under memory
 *   pressure a noeviction Redis refuses writes (OOM), which the store reports as unavailable.
 */

/** A reply error that is Redis refusing this client (credentials, ACL), not a passing fault. */
const refusalReply = /^(NOAUTH|WRONGPASS|NOPERM)\b|\bNOPERM\b|user executing the script can't access|has no permissions to/;

/** The text of a Redis refusal, if `err` is one (its message never holds a password: Redis does not echo it). */
export function refusalOf(err: unknown): string | undefined {
  if ((err as { name?: string } | null)?.name !== "ReplyError") return undefined;
  const message = (err as Error).message;
  return refusalReply.test(message) ? message : undefined;
}

export interface RedisConfigurationCheck {
  /** The masters (a single Redis: itself), whose eviction policy is read one by one. */
  readonly nodes: readonly Redis[];
  /** Runs one of the store's scripts on a key under its prefix (refused when the user may not run scripts or touch those keys). */
  readonly probe: () => Promise<unknown>;
}

/**
 * What is wrong with the Redis behind the counter store, or undefined: credentials or
 * permissions it refuses (seen by the probe), or an eviction policy other than
 * noeviction on any master. The policy is read with CONFIG GET or, where that command is
 * denied or renamed (managed Redis), from INFO memory; one that can be read by neither is
 * a problem too, since the store cannot tell that its meters are safe. Connection trouble
 * is thrown, as it says nothing about the configuration. The message names what to change.
 */
export async function checkRedisConfiguration({ nodes, probe }: RedisConfigurationCheck): Promise<string | undefined> {
  try {
    await probe();
  } catch (err) {
    const refusal = refusalOf(err);
    if (refusal === undefined) throw err;
    return `redis refused the counter store's scripts or keys (grant its user +evalsha, +eval and its key prefix): ${refusal}`;
  }
  for (const node of nodes) {
    const where = `${node.options.host ?? "?"}:${node.options.port ?? "?"}`;
    const policy = await evictionPolicy(node);
    if (policy === undefined) {
      return `cannot read maxmemory-policy of redis at ${where} (CONFIG GET and INFO both refused): grant the counter store's user +config|get or +info, and make sure the policy is noeviction`;
    }
    if (policy !== "noeviction") return `redis at ${where} has maxmemory-policy ${policy}: an evicted meter undercounts; set maxmemory-policy noeviction`;
  }
  return undefined;
}

/** The node's maxmemory-policy, or undefined when neither CONFIG GET nor INFO may be run. */
async function evictionPolicy(node: Redis): Promise<string | undefined> {
  try {
    const [, value] = (await node.call("CONFIG", "GET", "maxmemory-policy")) as string[];
    if (value) return value;
  } catch (err) {
    if (!deniedOrUnknown(err)) throw err;
  }
  try {
    const info = (await node.call("INFO", "memory")) as string;
    return /^maxmemory_policy:(\S+)/m.exec(info)?.[1];
  } catch (err) {
    if (!deniedOrUnknown(err)) throw err;
    return undefined;
  }
}

/** A command this user may not run, or one that does not exist here (renamed or disabled). */
function deniedOrUnknown(err: unknown): boolean {
  return refusalOf(err) !== undefined || ((err as { name?: string } | null)?.name === "ReplyError" && /unknown command/i.test((err as Error).message));
}

import { createHash, randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Webhook } from "../gen/admission/v1/policy_pb.js";
import type { PolicySnapshot } from "./policy/policy-snapshot.js";
import type { Database, Queryable } from "./store/database.js";
import { insertOutboxEvents, type OutboxEvent } from "./store/webhook-outbox.js";
import { refusedByServer } from "./store/ledger.js";
import type { JsonLinesSpool } from "./store/spool-file.js";

/** The events endpoints may subscribe to. */
export const webhookEventTypes = ["alert.threshold", "lease.expired", "key.expiring", "credits.granted", "admin.change"] as const;
export type WebhookEventType = (typeof webhookEventTypes)[number];

/** key.expiring is raised this long before an API key expires. */
export const keyExpiringNoticeMs = 7 * 86_400_000;
/** How often API keys are checked for key.expiring (and on every new policy snapshot). */
const keyScanIntervalMs = 600_000;

/** Events about the whole config: for operator endpoints (no tenant) only. */
export const operatorOnlyEvents: ReadonlySet<string> = new Set(["admin.change"]);

/** The enabled endpoints among `webhooks` subscribed to an event of `type` about `tenant` ("": none): the tenant's own and the operators'. */
export function subscribed(webhooks: Iterable<Webhook>, type: string, tenant: string): Webhook[] {
  const found: Webhook[] = [];
  for (const w of webhooks) if (!w.disabled && (w.tenant === "" || w.tenant === tenant) && w.events.includes(type)) found.push(w);
  return found;
}

export interface WebhookEventsDeps {
  readonly db: Database;
  readonly policy: () => PolicySnapshot;
  readonly logger: Logger;
  readonly clock?: () => number;
  /** Hears that events were committed (the local worker sends them at once). */
  readonly onCommitted?: () => void;
  /** Where events written without a caller's transaction wait while the database is unreachable. */
  readonly spool?: JsonLinesSpool<OutboxEvent>;
}

/**
 * Raising events: each goes to the outbox, with one delivery per endpoint subscribed
 * to it when it is raised, in the transaction of what raised it. An event no endpoint
 * wants is not written at all.
 */
export class WebhookEvents {
  private readonly clock: () => number;
  private keysScannedAtMs = -Infinity;
  private keysScannedVersion = -1;

  constructor(private readonly deps: WebhookEventsDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  /**
   * The event to write, or undefined when no endpoint is subscribed to it; `endpoints`: where
   * to look for subscribers (default: the policy in use; a config change passes its own result).
   */
  event(type: WebhookEventType, tenant: string, data: Record<string, unknown>, endpoints?: readonly Webhook[]): OutboxEvent | undefined {
    const webhooks = (endpoints ? subscribed(endpoints, type, tenant) : this.deps.policy().webhooksFor(type, tenant)).map((w) => w.id);
    if (webhooks.length === 0) return undefined;
    return { id: `evt_${randomBytes(16).toString("base64url")}`, type, tenant, data, atMs: this.clock(), webhooks };
  }

  /**
   * Raises one event in `tx` (the caller's transaction: it commits with it), or without
   * one in its own; resolves once written.
   */
  async raise(tx: Queryable | undefined, type: WebhookEventType, tenant: string, data: Record<string, unknown>): Promise<void> {
    const event = this.event(type, tenant, data);
    if (event) await this.write(tx, [event]);
  }

  /**
   * Writes built events (see event()) in `tx`, or in a transaction of their own; then, should
   * the database be unreachable, to the spool (resolving once they are fsync'd there).
   */
  async write(tx: Queryable | undefined, events: readonly OutboxEvent[]): Promise<void> {
    if (events.length === 0) return;
    if (tx) {
      await insertOutboxEvents(tx, events);
      return;
    }
    try {
      await this.deps.db.transaction((own) => insertOutboxEvents(own, events));
    } catch (err) {
      if (!this.deps.spool || refusedByServer(err)) throw err;
      await this.deps.spool.append(events);
      this.deps.logger.warn({ err: String(err), events: events.length }, "webhook events spooled: the database is unreachable");
      return;
    }
    this.committed();
  }

  /** Writes spooled events to the outbox (idempotently); returns how many. */
  async replaySpool(): Promise<number> {
    if (!this.deps.spool?.pending()) return 0;
    const n = await this.deps.spool.replay((events) => this.deps.db.transaction((tx) => insertOutboxEvents(tx, events)));
    if (n > 0) {
      this.deps.logger.info({ events: n }, "webhook event spool replayed");
      this.committed();
    }
    return n;
  }

  /**
   * Raises key.expiring for every API key within keyExpiringNoticeMs of its expiry, once:
   * the event's id derives from the key and its expiry, so every replica and every later
   * scan writes the same event (and nothing new). Runs at most every 10 minutes, and on
   * each new policy snapshot. Returns how many keys were found expiring.
   */
  async raiseExpiringKeys(): Promise<number> {
    const snapshot = this.deps.policy();
    const nowMs = this.clock();
    if (snapshot.version === this.keysScannedVersion && nowMs - this.keysScannedAtMs < keyScanIntervalMs) return 0;
    const events: OutboxEvent[] = [];
    for (const key of snapshot.bundle.apiKeys) {
      const compiled = snapshot.apiKeys.get(key.id)!;
      const expiresAtMs = compiled.expiresAtMs;
      if (key.revoked || !Number.isFinite(expiresAtMs) || expiresAtMs <= nowMs || expiresAtMs - nowMs > keyExpiringNoticeMs) continue;
      const webhooks = snapshot.webhooksFor("key.expiring", key.tenant).map((w) => w.id);
      if (webhooks.length === 0) continue;
      const id = `evt_key_${createHash("sha256").update(`${key.id}\u0000${expiresAtMs}`).digest("base64url").slice(0, 22)}`;
      events.push({
        id, type: "key.expiring", tenant: key.tenant, atMs: nowMs, webhooks,
        data: { tenant: key.tenant, keyId: key.id, ...(key.user ? { user: key.user } : {}), expiresAt: new Date(expiresAtMs).toISOString(), ...(key.description ? { description: key.description } : {}) },
      });
    }
    await this.write(undefined, events);
    this.keysScannedAtMs = nowMs;
    this.keysScannedVersion = snapshot.version;
    return events.length;
  }

  /** Tells the local worker that events were committed (by a caller's transaction too). */
  committed(): void {
    try {
      this.deps.onCommitted?.();
    } catch (err) {
      this.deps.logger.warn({ err }, "webhook worker wake-up failed");
    }
  }
}

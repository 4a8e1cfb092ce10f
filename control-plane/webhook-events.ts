import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { PolicySnapshot } from "./policy/policy-snapshot.js";
import type { Database, Queryable } from "./store/database.js";
import { insertOutboxEvents, type OutboxEvent } from "./store/webhook-outbox.js";

/** The events endpoints may subscribe to. */
export const webhookEventTypes = ["alert.threshold", "lease.expired", "key.expiring", "credits.granted", "admin.change"] as const;
export type WebhookEventType = (typeof webhookEventTypes)[number];

/** Events about the whole config: for operator endpoints (no tenant) only. */
export const operatorOnlyEvents: ReadonlySet<string> = new Set(["admin.change"]);

export interface WebhookEventsDeps {
  readonly db: Database;
  readonly policy: () => PolicySnapshot;
  readonly logger: Logger;
  readonly clock?: () => number;
  /** Hears that events were committed (the local worker sends them at once). */
  readonly onCommitted?: () => void;
}

/**
 * Raising events: each goes to the outbox, with one delivery per endpoint subscribed
 * to it when it is raised, in the transaction of what raised it. An event no endpoint
 * wants is not written at all.
 */
export class WebhookEvents {
  private readonly clock: () => number;

  constructor(private readonly deps: WebhookEventsDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  /** The event to write, or undefined when no endpoint is subscribed to it. */
  event(type: WebhookEventType, tenant: string, data: Record<string, unknown>): OutboxEvent | undefined {
    const webhooks = this.deps.policy().webhooksFor(type, tenant).map((w) => w.id);
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

  /** Writes built events (see event()) in `tx`, or in a transaction of their own. */
  async write(tx: Queryable | undefined, events: readonly OutboxEvent[]): Promise<void> {
    if (events.length === 0) return;
    if (tx) {
      await insertOutboxEvents(tx, events);
      return;
    }
    await this.deps.db.transaction((own) => insertOutboxEvents(own, events));
    this.committed();
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

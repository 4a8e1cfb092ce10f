import type { AuditLog } from "./audit-log.js";
import type { Ledger } from "./ledger.js";
import type { WebhookOutbox } from "./webhook-outbox.js";

/** Webhook events whose deliveries all finished are kept this long (past the longest retry age allowed). */
export const webhookRetentionMs = 31 * 86_400_000;

export interface RetentionSettings {
  /** Ledger partitions (months) older than this many whole months are dropped. */
  readonly ledgerRetentionMonths: number;
  /** Audit events older than this many days are deleted. */
  readonly auditRetentionDays: number;
}

/**
 * Hourly store maintenance: the ledger's partitions for the months ahead are
 * created, those past retention dropped; audit events past their retention
 * deleted in bounded batches; webhook events delivered (or given up) a month ago too.
 */
export async function applyRetention(
  stores: {
    readonly ledger: Pick<Ledger, "ensurePartitions" | "dropPartitionsBefore">;
    readonly audit: Pick<AuditLog, "deleteBefore">;
    readonly outbox?: Pick<WebhookOutbox, "deleteFinishedBefore">;
  },
  nowMs: number,
  settings: RetentionSettings,
): Promise<{ partitionsDropped: number; auditDeleted: number; webhookEventsDeleted: number }> {
  await stores.ledger.ensurePartitions(nowMs);
  const d = new Date(nowMs);
  const partitionsDropped = await stores.ledger.dropPartitionsBefore(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - settings.ledgerRetentionMonths, 1));
  const { deleted: auditDeleted } = await stores.audit.deleteBefore(nowMs - settings.auditRetentionDays * 86_400_000);
  const webhookEventsDeleted = (await stores.outbox?.deleteFinishedBefore(nowMs - webhookRetentionMs)) ?? 0;
  return { partitionsDropped, auditDeleted, webhookEventsDeleted };
}

import type { AuditLog } from "./audit-log.js";
import type { Ledger } from "./ledger.js";

export interface RetentionSettings {
  /** Ledger partitions (months) older than this many whole months are dropped. */
  readonly ledgerRetentionMonths: number;
  /** Audit events older than this many days are deleted. */
  readonly auditRetentionDays: number;
}

/**
 * Hourly store maintenance: the ledger's partitions for the months ahead are
 * created, those past retention dropped; audit events past their retention
 * deleted in bounded batches.
 */
export async function applyRetention(
  stores: { readonly ledger: Pick<Ledger, "ensurePartitions" | "dropPartitionsBefore">; readonly audit: Pick<AuditLog, "deleteBefore"> },
  nowMs: number,
  settings: RetentionSettings,
): Promise<{ partitionsDropped: number; auditDeleted: number }> {
  await stores.ledger.ensurePartitions(nowMs);
  const d = new Date(nowMs);
  const partitionsDropped = await stores.ledger.dropPartitionsBefore(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - settings.ledgerRetentionMonths, 1));
  const { deleted: auditDeleted } = await stores.audit.deleteBefore(nowMs - settings.auditRetentionDays * 86_400_000);
  return { partitionsDropped, auditDeleted };
}

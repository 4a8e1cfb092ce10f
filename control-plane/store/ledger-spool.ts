import { invalidLedgerField, type LedgerRow } from "./ledger.js";
import { isOutboxEvent, type OutboxEvent } from "./webhook-outbox.js";
import { JsonLinesSpool, type QuarantinedLines } from "./spool-file.js";

/** A spooled row, with the counter generation its usage went into (if any: see Settlement) and the webhook events it raised. */
export type SpooledRow = LedgerRow & { readonly generation?: string; readonly events?: readonly OutboxEvent[] };

export interface LedgerSpoolOptions {
  readonly dir: string;
  /** Hears of lines a replay could not read: moved to the quarantine file, never deleted (count them, log them). */
  readonly onQuarantine?: (quarantined: QuarantinedLines) => void;
}

/**
 * Ledger rows that could not reach the database, kept on local disk: appended
 * as JSON lines and fsync'd before the Settle is acknowledged, replayed later.
 * Replay renames the file first, so rows spooled meanwhile go to a fresh one.
 * A torn last line (a crash mid-append: never acknowledged) is dropped; any
 * other line that is not a ledger row goes to `ledger-spool.quarantine.jsonl`.
 */
export class LedgerSpool extends JsonLinesSpool<SpooledRow> {
  constructor(options: LedgerSpoolOptions) {
    super({ dir: options.dir, name: "ledger-spool", parse: parseRow, onQuarantine: options.onQuarantine });
  }
}

/** A spooled ledger row, or undefined for a line that is not one (corrupted on disk, edited by hand). */
function parseRow(line: string): SpooledRow | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const read = value as Partial<SpooledRow>;
  // A row spooled by a version that did not record the usage's cache and reasoning parts has none.
  const row = { ...read, cacheReadTokens: read.cacheReadTokens ?? 0, cacheWriteTokens: read.cacheWriteTokens ?? 0, reasoningTokens: read.reasoningTokens ?? 0 } as SpooledRow;
  if (invalidLedgerField(row) !== undefined) return undefined;
  if (row.generation !== undefined && typeof row.generation !== "string") return undefined;
  if (row.events !== undefined && !(Array.isArray(row.events) && row.events.every(isOutboxEvent))) return undefined;
  return row;
}

import { existsSync, mkdirSync } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { invalidLedgerField, type LedgerRow } from "./ledger.js";
import type { OutboxEvent } from "./webhook-outbox.js";
import { appendLinesDurably, dropTornTail, quarantineLines, readSpoolLines, type QuarantinedLines } from "./spool-file.js";

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
export class LedgerSpool {
  private readonly active: string;
  private readonly replaying: string;
  readonly quarantineFile: string;
  private appending: Promise<void> = Promise.resolve();

  constructor(private readonly options: LedgerSpoolOptions) {
    mkdirSync(options.dir, { recursive: true });
    this.active = join(options.dir, "ledger-spool.jsonl");
    this.replaying = join(options.dir, "ledger-spool.replaying.jsonl");
    this.quarantineFile = join(options.dir, "ledger-spool.quarantine.jsonl");
    // Before the first append: a row must not be glued to the torn remains of one a crash interrupted.
    dropTornTail(this.active);
  }

  /** Resolves once the rows are on disk (fsync). */
  append(rows: readonly SpooledRow[]): Promise<void> {
    const run = this.appending.then(() => appendLinesDurably(this.active, rows.map((r) => `${JSON.stringify(r)}\n`).join("")));
    this.appending = run.catch(() => undefined);
    return run;
  }

  pending(): boolean {
    return existsSync(this.active) || existsSync(this.replaying);
  }

  /**
   * Hands every spooled row to `write` (which must be idempotent) and deletes
   * them once it resolved. A failed write keeps them for the next attempt.
   * Returns how many rows were written.
   */
  async replay(write: (rows: SpooledRow[]) => Promise<void>): Promise<number> {
    await this.appending;
    if (!existsSync(this.replaying)) {
      if (!existsSync(this.active)) return 0;
      await rename(this.active, this.replaying);
    }
    // A torn last line was never acknowledged (its fsync did not complete): it is left out.
    const { lines } = await readSpoolLines(this.replaying);
    const rows: SpooledRow[] = [];
    const unreadable: Array<{ text: string; number: number }> = [];
    for (const line of lines) {
      const row = parseRow(line.text);
      if (row) rows.push(row);
      else unreadable.push(line);
    }
    for (let i = 0; i < rows.length; i += 500) await write(rows.slice(i, i + 500));
    if (unreadable.length > 0) {
      await quarantineLines(this.quarantineFile, unreadable.map((l) => l.text));
      this.options.onQuarantine?.({ from: this.replaying, quarantineFile: this.quarantineFile, lineNumbers: unreadable.map((l) => l.number) });
    }
    await rm(this.replaying);
    return rows.length;
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

function isOutboxEvent(e: unknown): e is OutboxEvent {
  const v = e as Partial<OutboxEvent> | null;
  return typeof v === "object" && v !== null && typeof v.id === "string" && typeof v.type === "string" && typeof v.tenant === "string"
    && typeof v.data === "object" && v.data !== null && Number.isFinite(v.atMs) && Array.isArray(v.webhooks) && v.webhooks.every((w) => typeof w === "string");
}

import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, fstatSync } from "node:fs";
import { open, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";

/**
 * The JSON-lines files both planes spool to (the control plane's ledger rows,
 * the data plane's settles). A line is durable once its append's fsync
 * returned; a crash during an append can leave only the last line torn (no
 * newline after it), and that line was never acknowledged. Any other line
 * that cannot be read is kept: moved to a quarantine file next to the spool,
 * never deleted.
 */

/** Lines a replay could not read, moved to `quarantineFile`; `lineNumbers` are 1-based, in `from`. */
export interface QuarantinedLines {
  readonly from: string;
  readonly quarantineFile: string;
  readonly lineNumbers: readonly number[];
}

/** The complete lines of a spool file (blank ones skipped), with their 1-based numbers; `torn`: a last line without its newline. */
export async function readSpoolLines(path: string): Promise<{ lines: Array<{ text: string; number: number }>; torn: boolean }> {
  return splitLines(await readFile(path, "utf8"));
}

export function splitLines(text: string): { lines: Array<{ text: string; number: number }>; torn: boolean } {
  const parts = text.split("\n");
  // After the last newline: "" when the file ends with one, otherwise the torn remains of an append.
  const tail = parts.pop()!;
  const lines = parts.flatMap((line, i) => (line.trim() === "" ? [] : [{ text: line, number: i + 1 }]));
  return { lines, torn: tail !== "" };
}

/** How many complete lines the file holds (0 when it does not exist). */
export function countSpoolLines(path: string): number {
  if (!existsSync(path)) return 0;
  return splitLines(readFileSync(path, "utf8")).lines.length;
}

/**
 * Appends `text` (whole lines) and fsyncs; resolves once it is durable. If the
 * write or the fsync fails, the file is cut back to where it was, so a partial
 * line never runs into the next append's first line.
 */
export async function appendLinesDurably(path: string, text: string, mode = 0o600): Promise<void> {
  const file = await open(path, "a", mode);
  try {
    const { size } = await file.stat();
    try {
      await file.appendFile(text);
      await file.sync();
    } catch (err) {
      await file.truncate(size).catch(() => undefined);
      throw err;
    }
  } finally {
    await file.close();
  }
}

/**
 * Cuts a torn last line (an append a crash interrupted, never acknowledged) off
 * the file before anything is appended to it: otherwise the next line would be
 * glued to it and both lost. True when there was one.
 */
export function dropTornTail(path: string): boolean {
  if (!existsSync(path)) return false;
  const fd = openSync(path, "r+");
  try {
    const { size } = fstatSync(fd);
    if (size === 0) return false;
    const last = Buffer.alloc(1);
    readSync(fd, last, 0, 1, size - 1);
    if (last[0] === 0x0a) return false;
    const content = readFileSync(fd);
    ftruncateSync(fd, content.lastIndexOf(0x0a) + 1);
    return true;
  } finally {
    closeSync(fd);
  }
}

/** Appends the lines to the quarantine file, durably (they stay there until an operator deals with them). */
export async function quarantineLines(quarantineFile: string, lines: readonly string[]): Promise<void> {
  if (lines.length > 0) await appendLinesDurably(quarantineFile, lines.map((l) => `${l}\n`).join(""));
}

export interface JsonLinesSpoolOptions<T> {
  readonly dir: string;
  /** File names: `<name>.jsonl`, `<name>.replaying.jsonl`, `<name>.quarantine.jsonl`. */
  readonly name: string;
  /** A line's item, or undefined for a line that is not one (it is quarantined). */
  readonly parse: (line: string) => T | undefined;
  /** Hears of lines a replay could not read: moved to the quarantine file, never deleted (count them, log them). */
  readonly onQuarantine?: (quarantined: QuarantinedLines) => void;
}

/**
 * Items that could not reach the database, kept on local disk: appended as JSON
 * lines and fsync'd before the caller is answered, replayed later. Replay renames
 * the file first, so items spooled meanwhile go to a fresh one. A torn last line
 * (a crash mid-append: never acknowledged) is dropped; any other line `parse`
 * refuses goes to the quarantine file.
 */
export class JsonLinesSpool<T> {
  private readonly active: string;
  private readonly replaying: string;
  readonly quarantineFile: string;
  private appending: Promise<void> = Promise.resolve();

  constructor(private readonly options: JsonLinesSpoolOptions<T>) {
    mkdirSync(options.dir, { recursive: true });
    this.active = join(options.dir, `${options.name}.jsonl`);
    this.replaying = join(options.dir, `${options.name}.replaying.jsonl`);
    this.quarantineFile = join(options.dir, `${options.name}.quarantine.jsonl`);
    // Before the first append: an item must not be glued to the torn remains of one a crash interrupted.
    dropTornTail(this.active);
  }

  /** Resolves once the items are on disk (fsync). */
  append(items: readonly T[]): Promise<void> {
    const run = this.appending.then(() => appendLinesDurably(this.active, items.map((r) => `${JSON.stringify(r)}\n`).join("")));
    this.appending = run.catch(() => undefined);
    return run;
  }

  pending(): boolean {
    return existsSync(this.active) || existsSync(this.replaying);
  }

  /**
   * Hands every spooled item to `write` (which must be idempotent), 500 at a time, and
   * deletes them once it resolved. A failed write keeps them for the next attempt.
   * Returns how many items were written.
   */
  async replay(write: (items: T[]) => Promise<void>): Promise<number> {
    await this.appending;
    if (!existsSync(this.replaying)) {
      if (!existsSync(this.active)) return 0;
      await rename(this.active, this.replaying);
    }
    // A torn last line was never acknowledged (its fsync did not complete): it is left out.
    const { lines } = await readSpoolLines(this.replaying);
    const items: T[] = [];
    const unreadable: Array<{ text: string; number: number }> = [];
    for (const line of lines) {
      const item = this.options.parse(line.text);
      if (item !== undefined) items.push(item);
      else unreadable.push(line);
    }
    for (let i = 0; i < items.length; i += 500) await write(items.slice(i, i + 500));
    if (unreadable.length > 0) {
      await quarantineLines(this.quarantineFile, unreadable.map((l) => l.text));
      this.options.onQuarantine?.({ from: this.replaying, quarantineFile: this.quarantineFile, lineNumbers: unreadable.map((l) => l.number) });
    }
    await rm(this.replaying);
    return items.length;
  }
}
